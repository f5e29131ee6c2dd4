"""The browser page at ``/`` in headless Debian Chromium (driven by Playwright; no browser is downloaded).

The page opens ``/v1/stream``, feeds the fMP4 into Media Source Extensions and shows per-step progress;
the first test asserts the codec is supported, both segments were appended, the progress bar filled, and
the ``<video>`` element's ``currentTime`` actually advances (frames decoded and presented); a Wan stream is
silent, so the page shows no sound toggle. The LTX-2 test plays the built-in tiny LTX-2's stream, whose fMP4
carries an AAC track: MSE takes the ``avc1..., mp4a.40.2`` mime, the element decodes sound while muted
(``webkitAudioDecodedByteCount``), has one audio track, and the page's "Sound" toggle unmutes it. The third
drives the session controls like a user (prompt, curated prompts, preset label, loop, pause, resume,
enhance on a server without an enhancer) and keeps a screenshot: ``browser-session.png`` under the
test's tmp_path, copied to ``test-artifacts/`` at the repository root when ``CI`` is set (the path is
printed either way).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from serving_utils import inproc_server

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).is_file()), None)
if CHROMIUM is None:
    pytest.skip("Debian chromium is not installed (apt-get install chromium); the browser test needs it",
                allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def test_page_plays_the_stream(live_server):
    query = "autostart=1&prompt=a%20windmill&size=64x64&frames=5&fps=8&steps=2&segments=2&seed=4"
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text))
            page.goto(f"{live_server.base_url}/?{query}", wait_until="load", timeout=60_000)
            page.wait_for_function("() => window.fvPlayer.streamComplete || window.fvPlayer.error !== null",
                                   timeout=120_000)
            player = page.evaluate("() => window.fvPlayer")
            assert player["error"] is None, (player, console)
            assert player["supported"] is True and player["mime"].startswith('video/mp4; codecs="avc1.')
            assert (player["hasAudio"], player["audioCodec"]) == (False, None), player  # Wan is silent
            assert player["videoCodec"].startswith("avc1.")
            assert page.get_by_role("button", name="Sound").count() == 0  # no sound toggle for a silent stream
            assert player["segmentsComplete"] == 2 and player["binaryMessages"] >= 3  # init + >= 1 per segment
            assert player["appended"] >= 1 and player["bytes"] > 0
            assert player["frames"].count("step_complete") == 4
            progress = page.evaluate("() => [document.getElementById('progress').value,"
                                     " document.getElementById('progress').max]")
            assert progress == [4, 4]
            assert page.inner_text("#status") == "complete"

            # the <video> element plays: currentTime moves forward through the appended media
            page.wait_for_function("() => document.getElementById('video').currentTime > 0", timeout=60_000)
            first = page.evaluate("() => document.getElementById('video').currentTime")
            page.wait_for_function(f"() => document.getElementById('video').currentTime > {first}"
                                   " || document.getElementById('video').ended", timeout=60_000)
            video = page.evaluate("""() => { const v = document.getElementById('video');
                return {t: v.currentTime, ended: v.ended, w: v.videoWidth, h: v.videoHeight,
                        end: v.buffered.length ? v.buffered.end(v.buffered.length - 1) : 0,
                        decoded: v.getVideoPlaybackQuality().totalVideoFrames, err: v.error && v.error.message,
                        audioBytes: v.webkitAudioDecodedByteCount}; }""")
            assert video["err"] is None, video
            assert (video["w"], video["h"]) == (64, 64)
            assert video["end"] == pytest.approx(10 / 8, abs=0.13), video  # both 5-frame segments at 8 fps
            assert video["t"] > first or video["ended"], video
            assert video["decoded"] >= 2, video
            assert video["audioBytes"] == 0, video  # no sound decoded from a silent stream
        finally:
            browser.close()


LTX2_MEDIA = """() => { const v = document.getElementById('video');
    return {t: v.currentTime, ended: v.ended, muted: v.muted, err: v.error && v.error.message,
            w: v.videoWidth, h: v.videoHeight, audioBytes: v.webkitAudioDecodedByteCount,
            audioTracks: v.audioTracks ? [...v.audioTracks].map((t) => t.enabled) : null,
            videoTracks: v.videoTracks ? v.videoTracks.length : null,
            end: v.buffered.length ? v.buffered.end(v.buffered.length - 1) : 0}; }"""
AAC_FRAME = 1024


def test_ltx2_stream_plays_with_sound(ltx2_generator, tmp_path):
    """LTX-2's stream (two continued 9-frame segments at 24 fps) plays in the page with its AAC track decoded;
    the sound toggle appears for it and a click unmutes the element (``video.muted`` false, aria-pressed true)."""
    rate = ltx2_generator.pipeline.sample_rate
    query = "autostart=1&prompt=waves%20on%20a%20beach&size=32x32&frames=9&fps=24&steps=2&segments=2&seed=4"
    with inproc_server(ltx2_generator, tmp_path) as srv, playwright_sync.sync_playwright() as p:
        # AudioVideoTracks exposes video.audioTracks (off by default in Chromium)
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=ARGS + ["--enable-blink-features=AudioVideoTracks"])
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text))
            page.goto(f"{srv.base_url}/?{query}", wait_until="load", timeout=60_000)
            page.wait_for_function("() => window.fvPlayer.streamComplete || window.fvPlayer.error !== null",
                                   timeout=120_000)
            player = page.evaluate("() => window.fvPlayer")
            assert player["error"] is None, (player, console)
            assert player["segmentsComplete"] == 2 and player["appended"] >= 3, player  # init + both segments
            # MSE took the two-track mime (the page only creates the SourceBuffer when it is supported)
            assert player["supported"] is True
            assert re.fullmatch(r'video/mp4; codecs="avc1\.[0-9a-f]{6}, mp4a\.40\.2"', player["mime"]), player
            assert (player["hasAudio"], player["audioCodec"]) == (True, "mp4a.40.2")
            assert player["videoCodec"] == player["mime"].split('"')[1].split(",")[0]
            # While the MediaSource is open the SourceBuffer's buffered range is where audio AND video are
            # buffered: the sound reaches the 18 frames' end, less the AAC frames the encoder holds back.
            ends = player["bufferedEnds"]
            assert ends and ends == sorted(ends), ends
            assert 18 / 24 - 3 * AAC_FRAME / rate <= ends[-1] <= 18 / 24 + 1e-3, (ends, rate)

            # the muted element plays: currentTime moves and the AAC track is decoded
            page.wait_for_function("() => document.getElementById('video').currentTime > 0", timeout=60_000)
            first = page.evaluate("() => document.getElementById('video').currentTime")
            page.wait_for_function(f"() => document.getElementById('video').currentTime > {first}"
                                   " || document.getElementById('video').ended", timeout=60_000)
            page.wait_for_function("() => document.getElementById('video').webkitAudioDecodedByteCount > 0",
                                   timeout=30_000)
            media = page.evaluate(LTX2_MEDIA)
            assert media["err"] is None and media["muted"] is True, media
            assert (media["w"], media["h"]) == (32, 32)
            assert media["t"] > first or media["ended"], media
            assert media["audioTracks"] == [True] and media["videoTracks"] == 1, media
            assert media["end"] == pytest.approx(18 / 24, abs=0.05), media

            # the sound toggle: shown for this stream, off, and a click (a user gesture) unmutes
            toggle = page.get_by_role("button", name="Sound", exact=True)
            assert toggle.count() == 1 and toggle.is_visible()
            assert toggle.get_attribute("aria-pressed") == "false"
            toggle.click()
            assert page.evaluate("() => document.getElementById('video').muted") is False
            assert toggle.get_attribute("aria-pressed") == "true"
            # played again with sound on: it runs to the end and decodes the audio again
            before = page.evaluate(LTX2_MEDIA)["audioBytes"]
            refused = page.evaluate("() => { const v = document.getElementById('video'); v.currentTime = 0;"
                                    " return v.play().then(() => null, (e) => String(e)); }")
            assert refused is None
            page.wait_for_function(f"() => document.getElementById('video').webkitAudioDecodedByteCount > {before}"
                                   " && document.getElementById('video').ended", timeout=60_000)
            media = page.evaluate(LTX2_MEDIA)
            assert media["err"] is None and media["muted"] is False, media
            # the toggle follows the element's own mute control, and a second click mutes again
            page.evaluate("() => { document.getElementById('video').muted = true; }")
            page.wait_for_function("() => document.getElementById('sound').getAttribute('aria-pressed') === 'false'",
                                   timeout=10_000)
            toggle.click()
            assert toggle.get_attribute("aria-pressed") == "true"
            toggle.click()
            assert page.evaluate("() => document.getElementById('video').muted") is True
            assert toggle.get_attribute("aria-pressed") == "false"
        finally:
            browser.close()


VIDEO_END = ("(() => { const b = document.getElementById('video').buffered;"
             " return b.length ? b.end(b.length - 1) : 0; })()")
REPO = Path(__file__).resolve().parents[2]


def keep_screenshot(page, tmp_path: Path) -> Path:
    shot = tmp_path / "browser-session.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("CI"):
        (REPO / "test-artifacts").mkdir(exist_ok=True)
        shutil.copy(shot, REPO / "test-artifacts" / shot.name)
    print(f"browser screenshot: {shot}")
    return shot


def test_session_controls_loop_pause_resume_and_errors(tiny_generator, tmp_path):
    """A user session through the page's controls against a server whose loop cap is 5 and no enhancer."""
    with inproc_server(tiny_generator, tmp_path, streaming={"generation_segment_cap": 5}) as srv, \
            playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text))
            requests: list[str] = []
            page.on("request", lambda req: requests.append(req.url))
            page.goto(f"{srv.base_url}/", wait_until="load", timeout=30_000)
            # every control has an accessible name
            for name in ("prompt", "curated prompts (one per line)", "preset label", "enhance prompts",
                         "auto-extend", "loop", "single clip", "segments"):
                assert page.get_by_label(name, exact=True).count() == 1, name
            unlabelled = page.evaluate("() => [...document.querySelectorAll('input, textarea, select')]"
                                       ".filter((el) => !el.labels || !el.labels.length).map((el) => el.id)")
            assert unlabelled == []
            for name in ("Start", "Pause", "Resume", "Stop", "Enhance prompt"):
                assert page.get_by_role("button", name=name, exact=True).count() == 1, name
            assert page.get_by_role("button", name="Pause").is_disabled()  # no session yet

            page.get_by_label("prompt", exact=True).fill("a windmill at dawn")
            page.get_by_label("curated prompts (one per line)").fill("a red kite\na blue kite")
            page.get_by_label("preset label").fill("Tiny preset")
            for field, value in (("size", "64x64"), ("frames", "5"), ("fps", "8"), ("steps", "2")):
                page.fill(f"#{field}", value)
            # enhance asked for at start on a server without an enhancer: refused in the page, no session
            page.get_by_label("enhance prompts").check()
            page.get_by_role("button", name="Start").click()
            page.wait_for_function("() => window.fvPlayer.errors.length > 0", timeout=30_000)
            assert page.evaluate("() => window.fvPlayer.errors")[0].startswith("enhancer_not_configured")
            assert "enhancer_not_configured" in page.get_by_role("alert").inner_text()
            assert page.get_by_role("button", name="Pause").is_disabled()

            page.get_by_label("enhance prompts").uncheck()
            page.get_by_label("loop", exact=True).check()
            page.get_by_role("button", name="Start").click()
            page.wait_for_function("() => window.fvPlayer.sessionId !== null", timeout=30_000)
            assert page.locator("#errors").text_content() == ""  # a new start clears the old errors

            # segments arrive and the buffered media grows; the page appends a fragment asynchronously
            # (SourceBuffer updateend), so wait for it to land rather than read `buffered` the moment the
            # segment's summary frame arrives
            page.wait_for_function("() => (window.fvPlayer.segmentsComplete >= 1"
                                   " && document.getElementById('video').buffered.length > 0)"
                                   " || window.fvPlayer.error", timeout=60_000)
            first_end = page.evaluate(VIDEO_END)
            player = page.evaluate("() => window.fvPlayer")
            assert player["error"] is None, (player, console)
            assert player["settings"]["loop_generation_enabled"] is True
            assert player["settings"]["preset_label"] == "Tiny preset"
            assert player["settings"]["curated_prompts"] == ["a red kite", "a blue kite"]
            assert player["starts"][0] == {"prompt": "a windmill at dawn", "source": "user"}
            assert first_end == pytest.approx(5 / 8, abs=0.13)

            # pause: the segment already under way (running, or handed to the queue just before the pause
            # arrived) finishes; after it nothing new starts
            page.get_by_role("button", name="Pause").click()
            page.wait_for_function("() => window.fvPlayer.settings.generation_paused === true", timeout=30_000)
            ack = page.evaluate("() => window.fvPlayer.frames.lastIndexOf('session_updated')")
            assert page.get_by_role("button", name="Resume").is_enabled()
            time.sleep(1.0)
            page.wait_for_function("() => window.fvPlayer.segmentsComplete === window.fvPlayer.segmentsStarted",
                                   timeout=60_000)
            time.sleep(2.0)
            player = page.evaluate("() => window.fvPlayer")
            held = player["segmentsStarted"]
            assert held < 5, "the loop reached its cap before the pause"
            after = [f for f in player["frames"][ack:] if f in ("ltx2_segment_start", "ltx2_segment_complete")]
            assert after in ([], ["ltx2_segment_complete"], ["ltx2_segment_start", "ltx2_segment_complete"]), after
            assert player["segmentsComplete"] == held
            assert page.inner_text("#status") == "paused"
            paused_end = page.evaluate(VIDEO_END)

            # enhance without an enhancer: the server's error is shown and the checkbox goes back off
            page.get_by_label("enhance prompts").click()  # .check() would race the revert
            page.wait_for_function("() => document.getElementById('errors').textContent"
                                   ".includes('enhancer_not_configured')", timeout=30_000)
            assert page.get_by_role("alert").inner_text().startswith("error enhancer_not_configured")
            assert not page.get_by_label("enhance prompts").is_checked()

            # resume: the loop goes on to its cap, the video keeps growing
            page.get_by_role("button", name="Resume").click()
            page.wait_for_function(f"() => window.fvPlayer.segmentsStarted > {held}", timeout=60_000)
            page.wait_for_function("() => window.fvPlayer.streamComplete", timeout=60_000)
            page.wait_for_function(f"() => {VIDEO_END} > {paused_end}", timeout=30_000)
            player = page.evaluate("() => window.fvPlayer")
            assert player["completeReason"] == "segment_cap" and player["segmentsComplete"] == 5, player
            assert player["starts"][1:] == [{"prompt": p, "source": "curated"}
                                            for p in ("a blue kite", "a red kite") * 2], player["starts"]
            assert player["errors"] == [e for e in player["errors"] if e.startswith("enhancer_not_configured")]
            assert page.evaluate(VIDEO_END) == pytest.approx(5 * 5 / 8, abs=0.13)
            assert page.inner_text("#status") == "complete (segment_cap)"
            assert page.locator("#segment_list li").count() == 5
            assert all(u.startswith(srv.base_url) or u.startswith("blob:") for u in requests), requests
            shot = keep_screenshot(page, tmp_path)
            assert shot.stat().st_size > 1000
        finally:
            browser.close()

"""The browser page at ``/`` in headless Debian Chromium (driven by Playwright; no browser is downloaded).

The page opens ``/v1/stream``, feeds the fMP4 into Media Source Extensions and shows per-step progress;
the test asserts the codec is supported, both segments were appended, the progress bar filled, and the
``<video>`` element's ``currentTime`` actually advances (frames decoded and presented).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
                        decoded: v.getVideoPlaybackQuality().totalVideoFrames, err: v.error && v.error.message}; }""")
            assert video["err"] is None, video
            assert (video["w"], video["h"]) == (64, 64)
            assert video["end"] == pytest.approx(10 / 8, abs=0.13), video  # both 5-frame segments at 8 fps
            assert video["t"] > first or video["ended"], video
            assert video["decoded"] >= 2, video
        finally:
            browser.close()

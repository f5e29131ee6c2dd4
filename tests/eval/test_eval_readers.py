"""fastvideo.eval readers: MP4, frame folders, .npy, path expansion, and their errors."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from fastvideo.eval import EvalError, evaluate, expand_sources, load_video
from fastvideo.runtime.media import encode_mp4


def write_png_frames(folder: Path, frames: np.ndarray) -> Path:
    """One lossless PNG per frame, written with PyAV (frame_000.png, frame_001.png, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    for i, frame in enumerate(frames):
        with av.open(str(folder / f"frame_{i:03d}.png"), "w", format="image2") as container:
            stream = container.add_stream("png")
            stream.width, stream.height, stream.pix_fmt = width, height, "rgb24"
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return folder


def smooth_video(frames: int = 5, height: int = 32, width: int = 48) -> np.ndarray:
    """A smooth moving gradient (H.264 keeps it close)."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    rgb = np.stack([x * 4 + t * 3, y * 6, 128 + 0 * x], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def test_mp4_decodes_with_fps_and_scores_close_to_its_source(tmp_path):
    frames = smooth_video()
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_mp4(frames, fps=12))
    video = load_video(path)
    assert video.frames.shape == frames.shape and video.frames.dtype == np.uint8 and video.fps == 12
    report = evaluate([str(path)], "psnr,ssim", reference=frames)
    assert report.videos[0].score("common.psnr") > 35  # lossy H.264 at CRF 18 on a smooth gradient
    assert report.videos[0].score("common.ssim") > 0.95


def test_frame_folder_is_one_video_in_name_order(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (4, 16, 20, 3), dtype=np.uint8)
    folder = write_png_frames(tmp_path / "frames", frames)
    video = load_video(folder)
    assert np.array_equal(video.frames, frames) and video.source == str(folder)
    assert expand_sources([str(folder)]) == [str(folder)]  # a folder of images is one source


def test_frame_folder_with_mixed_sizes_is_refused(tmp_path):
    folder = write_png_frames(tmp_path / "frames", np.zeros((2, 16, 16, 3), dtype=np.uint8))
    write_png_frames(tmp_path / "other", np.zeros((1, 8, 16, 3), dtype=np.uint8))
    (tmp_path / "other" / "frame_000.png").rename(folder / "frame_002.png")
    with pytest.raises(EvalError, match="frame_002.png: is 16x8 but frame_000.png is 16x16"):
        load_video(folder)


def test_npy_uint8_float_and_grayscale(tmp_path):
    np.save(tmp_path / "u8.npy", np.zeros((2, 12, 12, 3), dtype=np.uint8))
    np.save(tmp_path / "f.npy", np.full((2, 12, 12), 0.5, dtype=np.float64))
    assert load_video(tmp_path / "u8.npy").frames.dtype == np.uint8
    gray = load_video(tmp_path / "f.npy")
    assert gray.frames.shape == (2, 12, 12, 1) and gray.frames.dtype == np.float32


@pytest.mark.parametrize("array, message", [
    (np.full((2, 8, 8, 3), 1.5, dtype=np.float32), r"float frames must lie in \[0, 1\], got 1.5..1.5"),
    (np.zeros((2, 3, 8, 8), dtype=np.uint8), "looks channel-first"),
    (np.zeros((2, 8, 8, 3), dtype=np.int32), "dtype int32"),
    (np.zeros((0, 8, 8, 3), dtype=np.uint8), "empty"),
    (np.array([[[[np.nan]]]], dtype=np.float32), "NaN"),
])
def test_bad_arrays_are_refused_with_the_reason(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(EvalError, match=message):
        load_video(tmp_path / "bad.npy")


def test_missing_and_unreadable_files_name_the_path(tmp_path):
    with pytest.raises(EvalError, match="nope.mp4: no such file"):
        load_video(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 50)
    with pytest.raises(EvalError, match="junk.mp4: cannot decode it as a video"):
        load_video(junk)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalError, match="holds no frames"):
        load_video(tmp_path / "empty")
    with pytest.raises(EvalError, match="pattern matches no file"):
        expand_sources([str(tmp_path / "*.mkv")])


def test_expand_sources_globs_and_folders_of_videos(tmp_path):
    for name in ("b.npy", "a.npy"):
        np.save(tmp_path / name, np.zeros((2, 8, 8, 3), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    expected = [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]
    assert expand_sources([str(tmp_path)]) == expected
    assert expand_sources([str(tmp_path / "*.npy"), str(tmp_path / "a.npy")]) == expected  # no repeats


def test_references_pair_by_file_name_before_position(tmp_path):
    (tmp_path / "gen").mkdir()
    (tmp_path / "ref").mkdir()
    for i, name in enumerate(("x", "y")):
        np.save(tmp_path / "gen" / f"{name}.npy", np.full((2, 12, 12, 3), 10 * i, dtype=np.uint8))
        np.save(tmp_path / "ref" / f"{name}.npy", np.full((2, 12, 12, 3), 10 * i, dtype=np.uint8))
    gen = expand_sources([str(tmp_path / "gen")])
    refs = list(reversed(expand_sources([str(tmp_path / "ref")])))  # y first: pairing must go by stem
    report = evaluate(gen, "common.mse", reference=refs)
    assert [Path(v.reference).stem for v in report.videos] == ["x", "y"]
    assert all(v.score("common.mse") == 0.0 for v in report.videos)


def test_a_folder_of_frame_folders_expands_to_one_video_each(tmp_path):
    frames = np.random.default_rng(2).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    for name in ("clip_b", "clip_a"):
        write_png_frames(tmp_path / "refs" / name, frames)
    (tmp_path / "refs" / "empty").mkdir()
    sources = expand_sources([str(tmp_path / "refs")])
    assert sources == [str(tmp_path / "refs" / "clip_a"), str(tmp_path / "refs" / "clip_b")]
    report = evaluate(sources, "common.psnr", reference=frames)
    assert [v.score("common.psnr") for v in report.videos] == [float("inf")] * 2


def test_a_missing_path_is_refused_before_anything_decodes(tmp_path, monkeypatch):
    from fastvideo.eval import runner

    np.save(tmp_path / "ok.npy", np.zeros((2, 12, 12, 3), dtype=np.uint8))
    decoded: list[str] = []
    monkeypatch.setattr(runner, "load_video", lambda source, name=None: decoded.append(str(source)))
    with pytest.raises(EvalError, match="missing.npy: no such file"):
        evaluate([str(tmp_path / "ok.npy"), str(tmp_path / "missing.npy")], "temporal.flicker")
    assert decoded == []

"""Video container encoding with PyAV (FFmpeg): frames (and optional sound) in, playable MP4 bytes out.

Contract: :func:`encode_mp4(frames, fps, audio=None, audio_sample_rate=None)` takes ``uint8`` RGB
frames shaped ``(T, H, W, 3)`` (even ``H`` and ``W``) and returns an H.264 / yuv420p MP4 with the
``moov`` atom first (``+faststart``) that browsers and players open. Without ``audio`` the bytes are
exactly what they were before audio existed. With ``audio`` (a float waveform ``(channels, samples)``
or ``(samples,)`` for mono, numpy or torch, nominally in [-1, 1], 1 or 2 channels) and
``audio_sample_rate`` (integer Hz in [8000, 192000]) a second track is muxed, interleaved by time
with the video: AAC-LC through FFmpeg's native ``aac`` encoder, mono or stereo, at the input rate
when AAC supports it and otherwise resampled (``av.AudioResampler``) to the nearest supported rate
above it (at most 96000 Hz). The waveform is first cut or zero-padded to the video's duration
``T / fps`` (:func:`fit_audio_to_duration`): the video is what the model generated frame-exactly, the
vocoder's output length is only approximately the same, and a longer audio track would make players
hold the last frame (a shorter one would make them end the sound early), so the video's length wins.
Samples are clipped to [-1, 1] (vocoders overshoot slightly); bad audio - not 1-D/2-D, more than 2
channels, not floating point, NaN/Inf, no samples, a rate that is not an integer in range, audio
without a rate - raises :class:`AudioError` (a :class:`~fastvideo.api.errors.RequestError`, so a
``FastVideoError``) naming ``audio`` or ``audio_sample_rate``, before anything is encoded.
:func:`write_mp4_atomic` writes such bytes to a path through a temporary sibling and a rename, so a
failure never leaves a half-written file at the path. :func:`decode_mp4` / :func:`decode_mp4_audio`
are the inverses used by tests and tools.
"""

from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction
from pathlib import Path

from typing import Any

import av
import numpy as np

from fastvideo.api.errors import RequestError
from fastvideo.fileio import write_atomic

DEFAULT_CRF = 18
MIN_AUDIO_RATE, MAX_AUDIO_RATE = 8000, 192000
#: Sample rates FFmpeg's native AAC encoder accepts (ascending).
AAC_RATES = tuple(sorted(av.codec.Codec("aac", "w").audio_rates or (48000,)))
_LAYOUTS = {1: "mono", 2: "stereo"}


class AudioError(RequestError):
    """Audio handed to the MP4 encoder that cannot be encoded; ``field`` is ``audio`` or ``audio_sample_rate``."""


def prepare_audio(audio: Any, audio_sample_rate: Any) -> tuple[np.ndarray, int]:
    """Validate a waveform and its rate: float32 C-contiguous ``(channels, samples)`` clipped to [-1, 1], rate."""
    if audio_sample_rate is None:
        raise AudioError("audio_sample_rate", "audio was given without its sample rate; pass the rate in Hz "
                                              "(e.g. 24000 or 48000)")
    if isinstance(audio_sample_rate, bool) or not float(audio_sample_rate).is_integer():
        raise AudioError("audio_sample_rate", f"must be an integer number of Hz, got {audio_sample_rate!r}")
    rate = int(audio_sample_rate)
    if not MIN_AUDIO_RATE <= rate <= MAX_AUDIO_RATE:
        raise AudioError("audio_sample_rate", f"{rate} Hz is out of range; use {MIN_AUDIO_RATE}..{MAX_AUDIO_RATE} Hz")
    if hasattr(audio, "detach"):  # a torch tensor; converted without importing torch here
        audio = audio.detach().cpu().float().numpy()
    array = np.asarray(audio)
    if not np.issubdtype(array.dtype, np.floating):
        raise AudioError("audio", f"must be a floating-point waveform in [-1, 1], got dtype {array.dtype}; "
                                  "convert integer PCM with samples / 32768.0")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] not in _LAYOUTS:
        raise AudioError("audio", f"must be shaped (channels, samples) with 1 or 2 channels, got shape "
                                  f"{tuple(np.shape(audio))}; transpose a (samples, channels) array")
    if array.shape[1] == 0:
        raise AudioError("audio", "holds no samples")
    if not np.isfinite(array).all():
        raise AudioError("audio", "contains NaN or infinite samples; the model output is broken")
    return np.ascontiguousarray(np.clip(array, -1.0, 1.0), dtype=np.float32), rate


def fit_audio_to_duration(audio: np.ndarray, rate: int, frame_count: int, fps: int) -> np.ndarray:
    """Cut or zero-pad ``(channels, samples)`` to the video's duration ``frame_count / fps`` (see module docs)."""
    target = int(round(frame_count * rate / fps))
    if audio.shape[1] >= target:
        return audio[:, :target]
    return np.pad(audio, ((0, 0), (0, target - audio.shape[1])))


def aac_rate_for(rate: int) -> int:
    """The rate the AAC track uses for input at ``rate`` Hz: itself if AAC has it, else the next higher."""
    if rate in AAC_RATES:
        return rate
    return next((r for r in AAC_RATES if r > rate), AAC_RATES[-1])


def encode_aac_packets(audio: np.ndarray, rate: int, stream: Any) -> list:
    """Encode a prepared ``(channels, samples)`` waveform at ``rate`` with the opened AAC ``stream`` (flushed)."""
    layout = _LAYOUTS[audio.shape[0]]
    target = stream.codec_context.sample_rate
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=target) if target != rate else None
    frame_size = stream.codec_context.frame_size or 1024
    packets: list = []
    pts = 0
    step = frame_size if resampler is None else max(1, frame_size * rate // target)
    for start in range(0, audio.shape[1], step):
        frame = av.AudioFrame.from_ndarray(audio[:, start:start + step], format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for out in (resampler.resample(frame) if resampler else [frame]):
            out.pts, out.time_base = pts, Fraction(1, target)
            pts += out.samples
            packets.extend(stream.encode(out))
    if resampler is not None:
        for out in resampler.resample(None):
            out.pts, out.time_base = pts, Fraction(1, target)
            pts += out.samples
            packets.extend(stream.encode(out))
    packets.extend(stream.encode(None))
    return packets


def _packet_time(packet: Any) -> float:
    stamp = packet.dts if packet.dts is not None else (packet.pts or 0)
    return float(stamp * packet.time_base)


def encode_mp4(frames: np.ndarray, fps: int, audio: Any = None, audio_sample_rate: int | None = None, *,
               crf: int = DEFAULT_CRF, extra_options: dict[str, str] | None = None,
               container_options: dict[str, str] | None = None) -> bytes:
    """Encode ``(T, H, W, 3)`` uint8 RGB frames (plus an optional waveform as an AAC track) as MP4 bytes."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    count, height, width, _ = frames.shape
    if count < 1:
        raise ValueError("cannot encode a video with no frames")
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even sizes, got {width}x{height}")
    sound: tuple[np.ndarray, int] | None = None
    if audio is not None:
        waveform, rate = prepare_audio(audio, audio_sample_rate)
        sound = fit_audio_to_duration(waveform, rate, count, int(fps)), rate
    options = {"movflags": "+faststart"}
    options.update(container_options or {})
    # faststart rewrites the file to move ``moov`` first, which needs a real file to reopen.
    with tempfile.TemporaryDirectory(prefix="fastvideo-mp4-") as tmp:
        path = os.path.join(tmp, "video.mp4")
        with av.open(path, mode="w", format="mp4", options=options) as container:
            stream = container.add_stream("libx264", rate=Fraction(int(fps), 1))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast", **(extra_options or {})}
            if sound is None:
                for frame in frames:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame),
                                                                           format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            else:
                waveform, rate = sound
                audio_stream = container.add_stream("aac", rate=aac_rate_for(rate))
                audio_stream.layout = _LAYOUTS[waveform.shape[0]]
                audio_stream.format = "fltp"
                packets = []
                for frame in frames:
                    packets.extend(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame),
                                                                            format="rgb24")))
                packets.extend(stream.encode())
                packets.extend(encode_aac_packets(waveform, rate, audio_stream))
                # Mux in time order so the file's chunks interleave (stable sort: video first on ties).
                for packet in sorted(packets, key=_packet_time):
                    container.mux(packet)
        with open(path, "rb") as handle:
            return handle.read()


def decode_mp4(data: bytes) -> tuple[np.ndarray, float]:
    """Decode MP4 bytes to ``(T, H, W, 3)`` uint8 RGB frames and the stream's frame rate."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.base_rate or 0)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise ValueError("the MP4 holds no decodable video frames")
    return np.stack(frames), fps


def decode_mp4_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Decode an MP4's first audio track to float32 ``(channels, samples)`` and its sample rate."""
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise ValueError("the MP4 holds no audio track")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate)
        chunks = [frame.to_ndarray() for frame in container.decode(stream)]
    if not chunks:
        raise ValueError("the MP4's audio track holds no decodable samples")
    return np.concatenate(chunks, axis=1).astype(np.float32), rate


def write_mp4_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(target, data)

"""MP4 with an AAC audio track (issue 15 item 5): encode_mp4(frames, fps, audio, audio_sample_rate).

Synthetic sound (a sine) stands in for LTX-2's vocoder output; everything is decoded back with PyAV.
"""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from fastvideo.api.errors import FastVideoError, RequestError
from fastvideo.runtime.media import AudioError, decode_mp4, decode_mp4_audio, encode_mp4

FPS = 16
FRAMES = (np.random.RandomState(0).rand(16, 32, 48, 3) * 255).astype(np.uint8)  # 1.0 s of video
# One x264 thread: two encodes of the same frames are then bit-identical (with threads they once differed
# under CPU contention), so comparisons below test the audio path, not encoder scheduling.
ONE_THREAD = {"threads": "1"}


def sine(rate: int, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * freq * t * (c + 1)) for c in range(channels)]).astype(np.float32)


def peak_hz(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.argmax(spectrum)) * rate / len(signal)


def streams_of(data: bytes) -> list[tuple[str, str, int | None, int | None, float]]:
    with av.open(io.BytesIO(data)) as container:
        return [(s.type, s.codec_context.name, getattr(s.codec_context, "sample_rate", None),
                 getattr(s.codec_context, "channels", None), float(s.duration * s.time_base))
                for s in container.streams]


@pytest.mark.parametrize("rate,channels", [(24000, 1), (48000, 2)])
def test_aac_track_rate_channels_duration_and_pitch(rate: int, channels: int) -> None:
    data = encode_mp4(FRAMES, FPS, sine(rate, 1.0, channels=channels), rate)
    (vtype, vcodec, _, _, vdur), (atype, acodec, arate, achannels, adur) = streams_of(data)
    assert (vtype, vcodec, atype, acodec) == ("video", "h264", "audio", "aac")
    assert (arate, achannels) == (rate, channels)
    assert abs(adur - vdur) <= 1024 / rate
    audio, decoded_rate = decode_mp4_audio(data)
    assert decoded_rate == rate and audio.shape[0] == channels
    for c in range(channels):
        assert abs(peak_hz(audio[c], rate) - 440.0 * (c + 1)) < 3.0


def test_video_frames_are_the_same_with_and_without_audio() -> None:
    plain, plain_fps = decode_mp4(encode_mp4(FRAMES, FPS, extra_options=ONE_THREAD))
    sound, sound_fps = decode_mp4(encode_mp4(FRAMES, FPS, sine(24000, 1.0), 24000, extra_options=ONE_THREAD))
    assert plain_fps == sound_fps == FPS
    np.testing.assert_array_equal(plain, sound)


def test_without_audio_the_bytes_are_unchanged() -> None:
    data = encode_mp4(FRAMES, FPS, extra_options=ONE_THREAD)
    assert data == encode_mp4(FRAMES, FPS, None, None, extra_options=ONE_THREAD)
    assert [s[0] for s in streams_of(data)] == ["video"]


@pytest.mark.parametrize("seconds", [0.5, 1.7])
def test_audio_is_cut_or_padded_to_the_video_duration(seconds: float) -> None:
    rate = 24000
    (_, _, _, _, vdur), (_, _, _, _, adur) = streams_of(encode_mp4(FRAMES, FPS, sine(rate, seconds), rate))
    assert abs(adur - vdur) <= 1024 / rate
    audio, _ = decode_mp4_audio(encode_mp4(FRAMES, FPS, sine(rate, seconds), rate))
    if seconds < 1.0:  # the padded tail is silence
        assert np.abs(audio[0, int(0.7 * rate):int(0.95 * rate)]).max() < 0.02


def test_a_rate_aac_lacks_is_resampled_and_keeps_its_pitch() -> None:
    data = encode_mp4(FRAMES, FPS, sine(22000, 1.0), 22000)
    audio, rate = decode_mp4_audio(data)
    assert rate == 22050
    assert abs(peak_hz(audio[0], rate) - 440.0) < 3.0


def test_torch_waveform_and_one_dimensional_mono_are_accepted() -> None:
    torch = pytest.importorskip("torch")
    wave = sine(24000, 1.0)
    from_torch = encode_mp4(FRAMES, FPS, torch.from_numpy(wave).to(torch.bfloat16), 24000)
    assert streams_of(from_torch)[1][3] == 1
    assert streams_of(encode_mp4(FRAMES, FPS, wave[0], 24000))[1][3] == 1


@pytest.mark.parametrize("audio,rate,field", [
    (np.zeros((3, 1000), np.float32), 24000, "audio"),           # three channels
    (np.zeros((2, 2, 10), np.float32), 24000, "audio"),          # wrong rank
    ((np.ones((1, 1000)) * 1000).astype(np.int16), 24000, "audio"),  # integer PCM
    (np.full((1, 1000), np.nan, np.float32), 24000, "audio"),    # NaN
    (np.zeros((1, 0), np.float32), 24000, "audio"),              # empty
    (np.zeros((1, 1000), np.float32), None, "audio_sample_rate"),
    (np.zeros((1, 1000), np.float32), 4000, "audio_sample_rate"),
    (np.zeros((1, 1000), np.float32), 400000, "audio_sample_rate"),
    (np.zeros((1, 1000), np.float32), 24000.5, "audio_sample_rate"),
])
def test_bad_audio_is_refused_naming_the_field(audio: np.ndarray, rate: object, field: str) -> None:
    with pytest.raises(AudioError) as info:
        encode_mp4(FRAMES, FPS, audio, rate)  # type: ignore[arg-type]
    assert isinstance(info.value, RequestError) and isinstance(info.value, FastVideoError)
    assert info.value.field == field

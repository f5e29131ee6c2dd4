"""The WebSocket fMP4 stream with a sound track (issue 15 item 5): FragmentedMP4Encoder(audio_sample_rate=...).

Synthetic sound (a sine) per segment; the concatenated init + fragments are decoded with PyAV.
"""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from fastvideo.serving.fmp4 import FragmentedMP4Encoder, find_box, parse_boxes, track_codecs

FPS, RATE, SEGMENTS = 16, 24000, 3
FRAMES = (np.random.RandomState(0).rand(16, 32, 48, 3) * 255).astype(np.uint8)  # 1 s per segment


def sine(rate: int, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * freq * t * (c + 1)) for c in range(channels)]).astype(np.float32)


def peak_hz(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.argmax(spectrum)) * rate / len(signal)


def stream(rate: int = RATE, channels: int = 1, seconds_per_segment: float = 1.0) -> tuple[FragmentedMP4Encoder,
                                                                                               bytes, list]:
    enc = FragmentedMP4Encoder(width=48, height=32, fps=FPS, audio_sample_rate=rate, audio_channels=channels)
    wave = sine(rate, SEGMENTS * seconds_per_segment, channels=channels)
    step = int(round(rate * seconds_per_segment))
    medias = [enc.encode_segment(FRAMES, wave[:, i * step:(i + 1) * step]) for i in range(SEGMENTS)]
    data = (medias[0].init or b"") + b"".join(f for m in medias for f in m.fragments)
    return enc, data, medias


def test_init_segment_has_two_tracks_and_the_codec_string_lists_both() -> None:
    enc, _, medias = stream()
    init = medias[0].init
    assert init is not None and all(m.init is None for m in medias[1:])
    moov = find_box(init, ["moov"])
    assert moov is not None
    traks = [b for b in parse_boxes(init, moov.offset + moov.header, moov.offset + moov.size) if b.type == "trak"]
    assert len(traks) == 2
    codecs = track_codecs(init)
    assert codecs[0].startswith("avc1.") and codecs[1] == "mp4a.40.2"
    assert enc.codec_string == f"{codecs[0]}, mp4a.40.2"
    assert enc.mime == f'video/mp4; codecs="{codecs[0]}, mp4a.40.2"'


def test_every_segment_fragment_carries_both_tracks() -> None:
    _, _, medias = stream()
    for media in medias:
        assert media.fragments
        for fragment in media.fragments:
            moof = find_box(fragment, ["moof"])
            assert moof is not None
            trafs = [b for b in parse_boxes(fragment, moof.offset + moof.header, moof.offset + moof.size)
                     if b.type == "traf"]
            assert len(trafs) == 2


@pytest.mark.parametrize("rate,channels", [(24000, 1), (48000, 2)])
def test_fragments_decode_in_sequence_with_continuous_sound(rate: int, channels: int) -> None:
    _, data, _ = stream(rate, channels)
    with av.open(io.BytesIO(data)) as container:
        audio_stream = container.streams.audio[0]
        assert audio_stream.codec_context.sample_rate == rate and audio_stream.codec_context.channels == channels
        video = sum(1 for _ in container.decode(video=0))
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    assert video == SEGMENTS * len(FRAMES)
    pts = [f.pts for f in frames]
    assert pts == list(range(0, 1024 * len(frames), 1024))  # no gap or overlap across segments
    audio = np.concatenate([f.to_ndarray() for f in frames], axis=1)
    # All but at most two AAC frames (held back by framing and the encoder) of 3 s arrive by the last segment.
    assert SEGMENTS * rate - 3 * 1024 <= audio.shape[1] <= SEGMENTS * rate + 1024
    for c in range(channels):
        assert abs(peak_hz(audio[c, 2048:], rate) - 440.0 * (c + 1)) < 3.0


def test_audio_follows_the_video_length_when_segments_bring_more_or_less_sound() -> None:
    _, short, _ = stream(seconds_per_segment=0.5)  # padded with silence
    _, long, _ = stream(seconds_per_segment=1.5)  # cut
    for data in (short, long):
        with av.open(io.BytesIO(data)) as container:
            samples = sum(f.samples for f in container.decode(audio=0))
        assert SEGMENTS * RATE - 3 * 1024 <= samples <= SEGMENTS * RATE + 1024


def test_missing_segment_audio_is_silence_and_video_only_streams_are_unchanged() -> None:
    enc = FragmentedMP4Encoder(width=48, height=32, fps=FPS, audio_sample_rate=RATE)
    first = enc.encode_segment(FRAMES)
    assert first.init is not None and len(track_codecs(first.init)) == 2
    plain = FragmentedMP4Encoder(width=48, height=32, fps=FPS)
    media = plain.encode_segment(FRAMES)
    assert media.init is not None and len(track_codecs(media.init)) == 1
    assert plain.codec_string is not None and "mp4a" not in plain.codec_string and "," not in plain.codec_string
    with pytest.raises(ValueError):
        plain.encode_segment(FRAMES, sine(RATE, 1.0))


def test_a_rate_aac_lacks_is_resampled_in_the_stream() -> None:
    enc = FragmentedMP4Encoder(width=48, height=32, fps=FPS, audio_sample_rate=22000)
    wave = sine(22000, 2.0)
    medias = [enc.encode_segment(FRAMES, wave[:, i * 22000:(i + 1) * 22000]) for i in range(2)]
    data = (medias[0].init or b"") + b"".join(f for m in medias for f in m.fragments)
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.audio[0].codec_context.sample_rate == 22050
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert abs(peak_hz(audio[0, 2048:], 22050) - 440.0) < 3.0


def test_bad_segment_audio_is_refused_naming_the_field() -> None:
    from fastvideo.runtime.media import AudioError
    enc = FragmentedMP4Encoder(width=48, height=32, fps=FPS, audio_sample_rate=RATE)
    with pytest.raises(AudioError) as info:
        enc.encode_segment(FRAMES, np.full((1, RATE), np.nan, np.float32))
    assert info.value.field == "audio"
    with pytest.raises(AudioError) as info:
        enc.encode_segment(FRAMES, sine(RATE, 1.0, channels=2))  # the stream is mono
    assert info.value.field == "audio"
    # The refusals came before any frame was coded: the stream goes on, starting at time 0.
    media = enc.encode_segment(FRAMES, sine(RATE, 1.0))
    assert media.init is not None and media.start_time_s == 0.0 and enc.duration_s == 1.0
    with pytest.raises(AudioError) as info:
        FragmentedMP4Encoder(width=48, height=32, fps=FPS, audio_sample_rate=1000)
    assert info.value.field == "audio_sample_rate"

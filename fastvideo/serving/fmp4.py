"""Fragmented MP4 for streaming: one continuous, browser-playable stream per session, in-process (PyAV).

Contract:
- :class:`FragmentedMP4Encoder` is created once per streaming session with a fixed width, height,
  fps and codec (``h264`` -> ``avc1``, libx264 zerolatency; ``av1`` -> ``av01``, libsvtav1). One
  video encoder lives for the whole session, so successive segments form a single stream: each
  :meth:`encode_segment` forces a keyframe on the segment's first frame, muxes the segment with
  ``movflags=frag_keyframe+empty_moov+default_base_moof`` (plus ``frag_discont`` and running
  ``fragment_index`` so ``tfdt`` decode times and ``mfhd`` sequence numbers continue across
  segments), and returns the init segment (``ftyp`` + ``moov``) on the first call only and then
  only ``moof`` + ``mdat`` fragments - every frame of the segment is inside the returned bytes
  when it returns (no frame waits for the next segment).
- :attr:`FragmentedMP4Encoder.codec_string` / :attr:`mime` are read from the real init segment
  (``avcC`` -> ``avc1.PPCCLL``, ``av1C`` -> ``av01.P.LLT.DD``), never assumed.
- :func:`parse_boxes` / :func:`find_box` walk ISO-BMFF boxes (used here and by tests/clients).
- Frames are ``uint8`` RGB numpy arrays ``(T, H, W, 3)`` from the runtime; encoding is CPU work,
  so servers call :meth:`encode_segment` in a worker thread. Not thread-safe: one caller at a time.
- Sound (optional): created with ``audio_sample_rate`` (and ``audio_channels``, 1 or 2), the stream
  has a second track, AAC-LC from one ``aac`` encoder that lives for the whole session (so the
  audio is one continuous stream, no per-segment priming gaps). The init segment then holds two
  ``trak`` boxes and :attr:`codec_string` lists both (``avc1.PPCCLL, mp4a.40.2``), read from the
  ``avcC`` and ``esds`` boxes. ``encode_segment(frames, audio)`` takes the segment's waveform
  (validated like :func:`fastvideo.runtime.media.prepare_audio`; ``None`` is silence) and cuts or
  zero-pads it so the audio track's running length follows the video's (``frames / fps``, with no
  rounding drift across segments); its packets are muxed in time order with the video into the
  segment's fragment(s) (one ``moof`` per segment, a ``traf`` per track). AAC codes 1024-sample
  frames and its encoder holds one frame back, so up to about two AAC frames of a segment's sound
  (~85 ms at 24 kHz) are delivered with the next segment; audio timestamps start at 0 at the
  encoder's first (priming) packet, so sound plays one AAC frame (~43 ms at 24 kHz, ~21 ms at 48
  kHz) after its video - within lip-sync tolerance (ITU-R BT.1359: up to 125 ms of audio lag).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np

from fastvideo.runtime.media import AudioError, aac_rate_for, fit_audio_to_duration, prepare_audio

CODECS: dict[str, dict[str, Any]] = {
    "h264": {"encoder": "libx264", "mux": "h264",
             "options": lambda crf, gop: {"preset": "veryfast", "tune": "zerolatency", "forced-idr": "1",
                                          "crf": str(crf), "g": str(gop), "profile": "high",
                                          "x264-params": "scenecut=0"}},
    "av1": {"encoder": "libsvtav1", "mux": "av1",
            "options": lambda crf, gop: {"preset": "12", "crf": str(min(max(crf + 12, 1), 63)), "g": str(gop),
                                         "svtav1-params": "lookahead=0:pred-struct=1"}},
}

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex", b"edts", b"dinf"}
_SAMPLE_ENTRIES = {b"avc1", b"avc3", b"av01", b"vp09", b"hvc1", b"hev1"}
_AUDIO_ENTRIES = {b"mp4a"}
_LAYOUTS = {1: "mono", 2: "stereo"}


@dataclass(frozen=True)
class Box:
    """One ISO-BMFF box: its type, where it starts in the buffer, its total size and payload slice."""

    type: str
    offset: int
    size: int
    header: int

    def payload(self, data: bytes) -> bytes:
        return data[self.offset + self.header:self.offset + self.size]


def parse_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[Box]:
    """The boxes laid end to end in ``data[start:end]`` (ValueError on a truncated or bad box)."""
    end = len(data) if end is None else end
    boxes, pos = [], start
    while pos < end:
        if end - pos < 8:
            raise ValueError(f"truncated box header at offset {pos}")
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"box {kind!r} at offset {pos} has bad size {size}")
        boxes.append(Box(kind.decode("latin-1"), pos, size, header))
        pos += size
    return boxes


def _children(data: bytes, box: Box) -> list[Box]:
    kind = box.type.encode("latin-1")
    skip = 0
    if kind == b"stsd":
        skip = 8  # version/flags + entry count
    elif kind in _SAMPLE_ENTRIES:
        skip = 78  # VisualSampleEntry fields
    elif kind in _AUDIO_ENTRIES:
        skip = 28  # AudioSampleEntry fields
    elif kind not in _CONTAINERS:
        return []
    return parse_boxes(data, box.offset + box.header + skip, box.offset + box.size)


def find_box(data: bytes, path: list[str], boxes: list[Box] | None = None) -> Box | None:
    """The first box at ``path`` (e.g. ``["moov", "trak", "mdia", "minf", "stbl", "stsd", "*", "avcC"]``;
    ``*`` matches any type)."""
    level = parse_boxes(data) if boxes is None else boxes
    for i, name in enumerate(path):
        match = next((b for b in level if name in ("*", b.type)), None)
        if match is None:
            return None
        if i == len(path) - 1:
            return match
        level = _children(data, match)
    return None


def _descriptor(data: bytes, pos: int) -> tuple[int, int, int]:
    """An MPEG-4 descriptor at ``pos`` (tag, payload start, payload size) - size is a 7-bit varint."""
    tag, size, pos = data[pos], 0, pos + 1
    for _ in range(4):
        byte = data[pos]
        pos += 1
        size = (size << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    return tag, pos, size


def _mp4a_codec(esds: bytes) -> str:
    """``mp4a.OO.A`` from an ``esds`` payload: the object type, and for MPEG-4 audio the audio object type."""
    tag, pos, _ = _descriptor(esds, 4)  # after the full-box version/flags
    if tag != 0x03:
        raise ValueError("esds lacks an ES_Descriptor")
    flags = esds[pos + 2]
    pos += 3 + (2 if flags & 0x80 else 0)
    if flags & 0x40:
        pos += 1 + esds[pos]
    if flags & 0x20:
        pos += 2
    tag, pos, _ = _descriptor(esds, pos)
    if tag != 0x04:
        raise ValueError("esds lacks a DecoderConfigDescriptor")
    object_type = esds[pos]
    if object_type != 0x40:
        return f"mp4a.{object_type:02x}"
    tag, pos, _ = _descriptor(esds, pos + 13)
    if tag != 0x05:
        raise ValueError("esds lacks the AudioSpecificConfig")
    return f"mp4a.40.{esds[pos] >> 3}"


def _entry_codec(init: bytes, entry: Box) -> str:
    children = {b.type: b for b in _children(init, entry)}
    if entry.type in ("avc1", "avc3"):
        avcc = children.get("avcC")
        if avcc is None:
            raise ValueError("avc1 sample entry lacks avcC")
        p = avcc.payload(init)
        return f"{entry.type}.{p[1]:02x}{p[2]:02x}{p[3]:02x}"
    if entry.type == "av01":
        av1c = children.get("av1C")
        if av1c is None:
            raise ValueError("av01 sample entry lacks av1C")
        p = av1c.payload(init)
        profile, level = p[1] >> 5, p[1] & 0x1F
        tier = "H" if p[2] & 0x80 else "M"
        depth = 12 if (p[2] & 0x40 and p[2] & 0x20) else (10 if p[2] & 0x40 else 8)
        return f"av01.{profile}.{level:02d}{tier}.{depth:02d}"
    if entry.type == "mp4a":
        esds = children.get("esds")
        if esds is None:
            raise ValueError("mp4a sample entry lacks esds")
        return _mp4a_codec(esds.payload(init))
    raise ValueError(f"unsupported sample entry {entry.type!r}")


def track_codecs(init: bytes) -> list[str]:
    """The RFC 6381 codec string of every track of an init segment, in ``trak`` order."""
    moov = find_box(init, ["moov"])
    if moov is None:
        raise ValueError("init segment has no moov")
    codecs = []
    for trak in (b for b in _children(init, moov) if b.type == "trak"):
        entry = find_box(init, ["mdia", "minf", "stbl", "stsd", "*"], _children(init, trak))
        if entry is None:
            raise ValueError("init segment track has no sample entry")
        codecs.append(_entry_codec(init, entry))
    return codecs


def codec_string_from_init(init: bytes) -> str:
    """The RFC 6381 codecs parameter of an init segment: every track's codec, video first (``avc1.., mp4a..``)."""
    codecs = track_codecs(init)
    if not codecs:
        raise ValueError("init segment has no sample entry")
    return ", ".join(sorted(codecs, key=lambda c: c.startswith("mp4a")))


@dataclass
class SegmentMedia:
    """What one segment produced."""

    init: bytes | None
    fragments: list[bytes] = field(default_factory=list)
    frame_count: int = 0
    start_time_s: float = 0.0
    duration_s: float = 0.0

    @property
    def nbytes(self) -> int:
        return sum(len(f) for f in self.fragments) + (len(self.init) if self.init else 0)


class FragmentedMP4Encoder:
    """One continuous fMP4 stream per session (see module contract)."""

    def __init__(self, *, width: int, height: int, fps: int, codec: str = "h264", crf: int = 23,
                 gop_s: float = 2.0, audio_sample_rate: int | None = None, audio_channels: int = 1) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown stream codec {codec!r}; known: {sorted(CODECS)}")
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise ValueError(f"stream size must be positive and even, got {width}x{height}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.width, self.height, self.fps, self.codec = width, height, fps, codec
        spec = CODECS[codec]
        self._mux_codec = spec["mux"]
        enc = av.CodecContext.create(spec["encoder"], "w")
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        enc.time_base = Fraction(1, fps)
        enc.framerate = Fraction(fps, 1)
        enc.options = spec["options"](crf, max(1, int(round(fps * gop_s))))
        enc.open()
        self._enc = enc
        self._audio: _AudioTrack | None = None
        if audio_sample_rate is not None:
            self._audio = _AudioTrack(audio_sample_rate, audio_channels)
        self._next_pts = 0
        self._next_fragment = 1
        self.init_segment: bytes | None = None
        self.codec_string: str | None = None
        self.segments_encoded = 0
        self._closed = False

    @property
    def mime(self) -> str | None:
        return None if self.codec_string is None else f'video/mp4; codecs="{self.codec_string}"'

    @property
    def duration_s(self) -> float:
        return self._next_pts / self.fps

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    def encode_segment(self, frames: Any, audio: Any = None) -> SegmentMedia:
        """Encode one segment's frames (and sound, when the stream has an audio track); the init
        segment comes back on the first call only."""
        if self._closed:
            raise RuntimeError("the encoder is closed")
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        if frames.shape[1:3] != (self.height, self.width):
            raise ValueError(f"frames are {frames.shape[2]}x{frames.shape[1]}, "
                             f"the stream is {self.width}x{self.height}")
        if audio is not None:  # checked before any frame is coded, so a refusal leaves the stream intact
            if self._audio is None:
                raise ValueError("this stream was created without an audio track (pass audio_sample_rate)")
            audio = self._audio.check(audio)
        start_pts = self._next_pts
        packets = []
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = self._next_pts
            frame.time_base = self._enc.time_base
            if i == 0:
                frame.pict_type = av.video.frame.PictureType.I
            self._next_pts += 1
            packets.extend(self._enc.encode(frame))
        if len(packets) != len(frames):
            raise RuntimeError(f"the {self.codec} encoder held back frames ({len(packets)} packets for "
                               f"{len(frames)} frames); it must run without lookahead")
        audio_packets = []
        if self._audio is not None:
            audio_packets = self._audio.encode(audio, end_frame=self._next_pts, fps=self.fps)
        data = self._mux(packets, audio_packets)
        boxes = parse_boxes(data)
        init = None
        if self.init_segment is None:
            head = [b for b in boxes if b.type in ("ftyp", "moov")]
            if [b.type for b in head] != ["ftyp", "moov"]:
                raise RuntimeError(f"muxer produced no ftyp+moov init segment: {[b.type for b in boxes]}")
            init = b"".join(data[b.offset:b.offset + b.size] for b in head)
            self.init_segment = init
            self.codec_string = codec_string_from_init(init)
        fragments: list[bytes] = []
        pending_moof: Box | None = None
        for box in boxes:
            if box.type == "moof":
                pending_moof = box
            elif box.type == "mdat" and pending_moof is not None:
                fragments.append(data[pending_moof.offset:box.offset + box.size])
                pending_moof = None
        self._next_fragment += len(fragments)
        self.segments_encoded += 1
        return SegmentMedia(init=init, fragments=fragments, frame_count=len(frames),
                            start_time_s=start_pts / self.fps, duration_s=len(frames) / self.fps)

    def _mux(self, packets: list, audio_packets: list) -> bytes:
        buffer = io.BytesIO()
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof+frag_discont+skip_trailer",
                   "fragment_index": str(self._next_fragment), "avoid_negative_ts": "make_non_negative",
                   "use_editlist": "0"}
        container = av.open(buffer, mode="w", format="mp4", options=options)
        try:
            stream = container.add_mux_stream(self._mux_codec, rate=self.fps, width=self.width, height=self.height)
            stream.time_base = self._enc.time_base
            timed = [(float(p.dts * self._enc.time_base), 0, p, stream) for p in packets]
            if self._audio is not None:
                audio_stream = self._audio.mux_stream(container)
                timed += [(float(p.dts * self._audio.time_base), 1, p, audio_stream) for p in audio_packets]
            # Time order (video first on ties), so each fragment carries both tracks' samples for its span.
            for _, _, packet, target in sorted(timed, key=lambda item: (item[0], item[1])):
                packet.stream = target
                container.mux(packet)
        finally:
            container.close()
        return buffer.getvalue()

    def close(self) -> None:
        """Release the encoder (frames still buffered in it are dropped; none are, by construction)."""
        if self._closed:
            return
        self._closed = True
        try:
            for _ in self._enc.encode(None):
                pass
        except Exception:  # noqa: BLE001 - closing must not raise
            pass


class _AudioTrack:
    """The session's one AAC encoder and the samples it has not coded yet (see module contract)."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        if channels not in _LAYOUTS:
            raise ValueError(f"audio_channels must be 1 or 2, got {channels}")
        _, self.input_rate = prepare_audio(np.zeros((channels, 1), np.float32), sample_rate)
        self.channels, self.layout = channels, _LAYOUTS[channels]
        self.rate = aac_rate_for(self.input_rate)
        self.time_base = Fraction(1, self.rate)
        enc = av.CodecContext.create("aac", "w")
        enc.sample_rate, enc.layout, enc.format = self.rate, self.layout, "fltp"
        enc.time_base = self.time_base
        enc.flags |= av.codec.context.Flags.global_header  # AudioSpecificConfig in extradata, for esds
        enc.open()
        self._enc = enc
        self.frame_size = enc.frame_size or 1024
        self._resampler = (av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
                           if self.rate != self.input_rate else None)
        self._pending = np.zeros((channels, 0), np.float32)  # at the AAC rate, fewer than frame_size
        self._input_samples = 0  # input-rate samples accepted so far (the running length)
        self._next_pts = 0
        self._shift: int | None = None

    def mux_stream(self, container: Any) -> Any:
        stream = container.add_stream("aac", rate=self.rate)
        stream.layout, stream.format = self.layout, "fltp"
        stream.time_base = self.time_base
        stream.codec_context.extradata = self._enc.extradata
        return stream

    def check(self, audio: Any) -> np.ndarray:
        """The segment's waveform, validated (AudioError) and as float32 ``(channels, samples)``."""
        wave, _ = prepare_audio(audio, self.input_rate)
        if wave.shape[0] != self.channels:
            raise AudioError("audio", f"has {wave.shape[0]} channel(s); the stream was opened with {self.channels}")
        return wave

    def encode(self, audio: Any, *, end_frame: int, fps: int) -> list:
        target = int(round(end_frame * self.input_rate / fps)) - self._input_samples
        wave = np.zeros((self.channels, max(target, 1)), np.float32) if audio is None else self.check(audio)
        wave = fit_audio_to_duration(wave, self.input_rate, target, self.input_rate) if target > 0 else wave[:, :0]
        self._input_samples += wave.shape[1]
        if self._resampler is not None and wave.shape[1]:
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout=self.layout)
            frame.sample_rate = self.input_rate
            chunks = [out.to_ndarray() for out in self._resampler.resample(frame)]
            wave = np.concatenate(chunks, axis=1) if chunks else wave[:, :0]
        buffer = np.concatenate([self._pending, wave.astype(np.float32)], axis=1)
        whole = buffer.shape[1] // self.frame_size * self.frame_size
        self._pending = buffer[:, whole:]
        packets = []
        for start in range(0, whole, self.frame_size):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(buffer[:, start:start + self.frame_size]),
                                               format="fltp", layout=self.layout)
            frame.sample_rate, frame.pts, frame.time_base = self.rate, self._next_pts, self.time_base
            self._next_pts += self.frame_size
            packets.extend(self._enc.encode(frame))
        for packet in packets:  # the first (priming) packet is stamped 0: no negative timestamps
            stamp = packet.pts or 0
            if self._shift is None:
                self._shift = -stamp
            packet.pts = packet.dts = stamp + self._shift
        return packets

"""FLV muxing for HTTP-FLV live output, sans-IO: frames in, FLV tags out.

Layout follows Adobe's "Video File Format Specification" v10.1 Annex E: a
9-byte header and PreviousTagSize0 (§E.2, §E.3), then tags of 11-byte header,
body and a 4-byte PreviousTagSize (§E.4.1). H.264 rides in legacy
AVCVIDEOPACKETs (§E.4.3.1) with an AVCDecoderConfigurationRecord
(ISO/IEC 14496-15 §5.2.4.1) as the sequence header; H.265 uses "Enhanced RTMP"
v1 (veovera, 2023) ExVideoTagHeader with FourCC ``hvc1`` and an
HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1). G.711 A/µ-law go
out as SoundFormat 7/8 (§E.4.2.1); AAC as SoundFormat 10 (§E.4.2.2): an
AACPacketType 0 tag with the AudioSpecificConfig built from the ADTS header
(again whenever the header changes), then one AACPacketType 1 tag per ADTS
frame with its header stripped.

Theory of operation: nothing is emitted until the first video keyframe that
carries (or follows) its parameter sets, so a player always starts on a
decodable picture; the muxer is fed the dispatcher's GOP cache for a late
joiner, which starts on a keyframe by construction. Timestamps are the 90 kHz
DTS unwrapped across the 33-bit PES wrap, made relative to the first emitted
frame and carried in milliseconds with the 8-bit TimestampExtended (§E.4.1).
Each tag is built with one ``b"".join``; payload bytes are never looped over in
Python.

Audio flag: the FLV header says whether audio tags follow (§E.2
TypeFlagsAudio), and players such as flv.js believe it. ``FlvSink`` by
default holds its first frames until the stream's ``StreamTracks`` are
ready, then writes the header with the flag set exactly when the stream has
audio.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass

from media.aac import SAMPLES_PER_FRAME, AdtsError, split_adts
from media.frame import Codec, Frame
from media.nal import (
    H264_NAL_AUD,
    H264_NAL_PPS,
    H264_NAL_SPS,
    H265_NAL_AUD,
    H265_NAL_PPS,
    H265_NAL_SPS,
    H265_NAL_VPS,
    BitReader,
    SpsError,
    nal_type,
    split_nals,
    unescape_rbsp,
)
from media.pipeline import StreamTracks

log = logging.getLogger(__name__)

__all__ = ["FlvError", "FlvMuxer", "FlvSink", "FlvStats", "hevc_decoder_configuration_record"]

# §E.4.1 TagType.
TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18

# §E.4.3.1 FrameType / CodecID, AVCPacketType.
FRAME_KEY = 1
FRAME_INTER = 2
CODEC_AVC = 7
AVC_SEQUENCE_HEADER = 0
AVC_NALU = 1

# Enhanced RTMP v1 ExVideoTagHeader: IsExHeader bit and VideoPacketType.
EX_HEADER = 0x80
EX_SEQUENCE_START = 0
EX_CODED_FRAMES = 1
FOURCC_HEVC = b"hvc1"

# §E.4.2.1 SoundFormat 7/8; G.711 is 8 kHz, which SoundRate cannot say, so the
# rate bits are 0 and the size bit says 16-bit, as ffmpeg's flvenc writes and
# its flvdec expects (it forces 8 kHz for these formats).
SOUND_G711A = 7
SOUND_G711U = 8
_G711_FLAGS = 0b0010  # SoundRate 0, SoundSize 1 (16-bit), SoundType 0 (mono)
# §E.4.2.1: for AAC, SoundRate 3 and SoundType 1 always; the decoder takes the
# real rate and channels from the AudioSpecificConfig. §E.4.2.2 AACPacketType.
SOUND_AAC = 10
_AAC_HEAD = SOUND_AAC << 4 | 0x0F
AAC_SEQUENCE_HEADER = bytes((_AAC_HEAD, 0))
AAC_RAW = bytes((_AAC_HEAD, 1))

_MAX_DATA_SIZE = 0xFFFFFF  # DataSize is UI24
_PTS_WRAP = 1 << 33  # ISO/IEC 13818-1 §2.4.3.7: PTS/DTS are 33 bits
_TAG_HEADER = struct.Struct(">IIBH")  # TagType+DataSize, Timestamp+Extended, StreamID (0)
_U32 = struct.Struct(">I")

_H264_DROP = frozenset({H264_NAL_AUD, H264_NAL_SPS, H264_NAL_PPS})
_H265_DROP = frozenset({H265_NAL_VPS, H265_NAL_SPS, H265_NAL_PPS, H265_NAL_AUD})


class FlvError(ValueError):
    """Parameter sets too damaged to describe the stream in an FLV sequence header."""


@dataclass
class FlvStats:
    tags: int = 0
    bytes: int = 0
    video_frames: int = 0
    audio_frames: int = 0
    sequence_headers: int = 0
    waiting_for_keyframe: int = 0  # frames dropped before the first usable keyframe
    unsupported_audio: int = 0  # audio codecs FLV cannot carry (none of Codec's today)
    dropped: int = 0  # wrong codec mid-stream, oversize, bad parameter sets


def _tag(tag_type: int, timestamp: int, parts: list[bytes | memoryview]) -> bytes:
    """One tag plus its PreviousTagSize (§E.4.1, §E.3); ``parts`` is the body."""
    size = sum(len(p) for p in parts)
    ts = timestamp & 0xFFFFFFFF
    header = _TAG_HEADER.pack((tag_type << 24) | size, ((ts & 0xFFFFFF) << 8) | (ts >> 24), 0, 0)
    return b"".join((header, *parts, _U32.pack(11 + size)))


def _si24(value: int) -> bytes:
    """A signed 24-bit big-endian integer (§E.4.3.1 CompositionTime), clamped."""
    value = max(-0x800000, min(0x7FFFFF, value))
    return (value & 0xFFFFFF).to_bytes(3, "big")


def _length_prefixed(nals: list[memoryview]) -> list[bytes | memoryview]:
    """NALs as 4-byte length + NAL (ISO/IEC 14496-15 §5.3.4.2, lengthSizeMinusOne 3)."""
    parts: list[bytes | memoryview] = []
    for nal in nals:
        parts.append(_U32.pack(len(nal)))
        parts.append(nal)
    return parts


def avc_decoder_configuration_record(sps: list[bytes], pps: list[bytes]) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.2.4.1.1).

    profile_indication, profile_compatibility and AVCLevelIndication are SPS
    bytes 1..3 (H.264 §7.3.2.1.1); lengthSizeMinusOne is 3.
    """
    if not sps or not pps or len(sps[0]) < 4:
        raise FlvError("AVC sequence header needs an SPS of 4+ bytes and a PPS")
    parts: list[bytes] = [bytes((1, sps[0][1], sps[0][2], sps[0][3], 0xFC | 3, 0xE0 | len(sps)))]
    for nal in sps:
        parts += (len(nal).to_bytes(2, "big"), nal)
    parts.append(bytes((len(pps),)))
    for nal in pps:
        parts += (len(nal).to_bytes(2, "big"), nal)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class _HevcSpsFields:
    sub_layers: int
    temporal_id_nested: int
    profile_tier_level: bytes  # the 12 general_* bytes, as coded
    chroma_format_idc: int
    bit_depth_luma_minus8: int
    bit_depth_chroma_minus8: int


def _hevc_sps_fields(sps: bytes) -> _HevcSpsFields:
    """The SPS fields the HEVC record repeats (H.265 §7.3.2.2, §7.3.3)."""
    if len(sps) < 15 or (sps[0] >> 1) & 0x3F != H265_NAL_SPS:
        raise FlvError("not an H.265 SPS NAL of 15+ bytes")
    rbsp = unescape_rbsp(sps[2:])
    if len(rbsp) < 13:
        raise FlvError("H.265 SPS truncated in profile_tier_level")
    max_sub_layers_minus1 = (rbsp[0] >> 1) & 0x07
    r = BitReader(rbsp)
    try:
        r.skip(8 + 96)  # vps id, sub-layers, nesting flag; general profile_tier_level
        present = [(r.u(1), r.u(1)) for _ in range(max_sub_layers_minus1)]
        if max_sub_layers_minus1 > 0:
            r.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
        for profile_present, level_present in present:
            r.skip(88 * profile_present + 8 * level_present)
        r.ue()  # sps_seq_parameter_set_id
        chroma = r.ue()
        if chroma == 3:
            r.skip(1)  # separate_colour_plane_flag
        r.ue()  # pic_width_in_luma_samples
        r.ue()  # pic_height_in_luma_samples
        if r.u(1):  # conformance_window_flag
            for _ in range(4):
                r.ue()
        luma = r.ue()
        chroma_depth = r.ue()
    except SpsError as exc:
        raise FlvError(f"H.265 SPS: {exc}") from exc
    if chroma > 3 or luma > 7 or chroma_depth > 7:
        raise FlvError("H.265 SPS chroma format or bit depth out of range")
    return _HevcSpsFields(
        sub_layers=max_sub_layers_minus1 + 1,
        temporal_id_nested=rbsp[0] & 1,
        profile_tier_level=rbsp[1:13],
        chroma_format_idc=chroma,
        bit_depth_luma_minus8=luma,
        bit_depth_chroma_minus8=chroma_depth,
    )


def hevc_decoder_configuration_record(
    vps: list[bytes], sps: list[bytes], pps: list[bytes]
) -> bytes:
    """HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1.2), lengthSizeMinusOne 3.

    min_spatial_segmentation, parallelismType, avgFrameRate and
    constantFrameRate are written as 0 ("unknown"), which the clause allows.
    """
    if not vps or not sps or not pps:
        raise FlvError("HEVC sequence header needs a VPS, an SPS and a PPS")
    f = _hevc_sps_fields(sps[0])
    parts: list[bytes] = [
        b"\x01",  # configurationVersion
        f.profile_tier_level,  # profile_space..general_level_idc, 12 bytes as in the SPS
        b"\xf0\x00",  # reserved 1111, min_spatial_segmentation_idc 0
        b"\xfc",  # reserved 111111, parallelismType 0
        bytes(
            (
                0xFC | f.chroma_format_idc,
                0xF8 | f.bit_depth_luma_minus8,
                0xF8 | f.bit_depth_chroma_minus8,
            )
        ),
        b"\x00\x00",  # avgFrameRate
        # constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne 3; numOfArrays
        bytes(((f.sub_layers & 7) << 3 | f.temporal_id_nested << 2 | 3, 3)),
    ]
    for kind, nals in ((H265_NAL_VPS, vps), (H265_NAL_SPS, sps), (H265_NAL_PPS, pps)):
        parts.append(bytes((0x80 | kind,)))  # array_completeness 1: all of them are in here
        parts.append(len(nals).to_bytes(2, "big"))
        for nal in nals:
            parts += (len(nal).to_bytes(2, "big"), nal)
    return b"".join(parts)


class FlvMuxer:
    """Frames to FLV tags for one stream; one instance per viewer connection."""

    def __init__(self, *, audio: bool = False) -> None:
        self.audio = audio
        self.stats = FlvStats()
        self.video_codec: Codec | None = None  # fixed by the first emitted keyframe
        self._params: tuple[tuple[bytes, ...], ...] | None = None  # parameter sets last sent
        self._last_raw: int | None = None
        self._unwrapped = 0
        self._base: int | None = None  # unwrapped DTS of the first emitted frame
        self._aac: tuple[int, int, int] | None = None  # (object type, rate index, channels) last sent

    def header(self) -> bytes:
        """FLV header (§E.2) and PreviousTagSize0 (§E.3)."""
        flags = 0x05 if self.audio else 0x01  # TypeFlagsAudio (bit 2), TypeFlagsVideo (bit 0)
        return b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"

    @property
    def started(self) -> bool:
        return self._base is not None

    def frame(self, frame: Frame) -> list[bytes]:
        """The complete tags (each with its PreviousTagSize) this frame produces."""
        if frame.codec.is_video:
            tags = self._video(frame)
        elif frame.codec in (Codec.G711A, Codec.G711U, Codec.AAC):
            tags = self._audio(frame) if self.audio else []
        else:
            self.stats.unsupported_audio += 1
            if self.stats.unsupported_audio == 1:
                log.info("FLV output ignores %s audio frames", frame.codec.value)
            tags = []
        for tag in tags:
            self.stats.tags += 1
            self.stats.bytes += len(tag)
        return tags

    def _timestamp(self, dts: int) -> int:
        """Milliseconds since the first emitted frame, across the 33-bit DTS wrap."""
        if self._last_raw is None:
            self._unwrapped = dts
        else:
            step = (dts - self._last_raw) % _PTS_WRAP
            if step >= _PTS_WRAP // 2:
                step -= _PTS_WRAP  # audio and video interleave slightly out of DTS order
            self._unwrapped += step
        self._last_raw = dts
        if self._base is None:
            self._base = self._unwrapped
        return max(0, self._unwrapped - self._base) // 90

    def _video(self, frame: Frame) -> list[bytes]:
        codec = frame.codec
        if self.video_codec is not None and codec is not self.video_codec:
            self._drop(f"{codec.value} frame in a {self.video_codec.value} FLV stream")
            return []
        if not self.started and not frame.keyframe:
            self.stats.waiting_for_keyframe += 1
            return []
        nals = split_nals(frame.data)
        types = [nal_type(codec, n) for n in nals]
        tags: list[bytes] = []
        params = self._parameter_sets(codec, nals, types)
        if params is not None and params != self._params and frame.keyframe:
            try:
                body = self._sequence_start(codec, params)
            except FlvError as exc:
                if self._params is None:
                    self.stats.waiting_for_keyframe += 1
                    log.warning(
                        "FLV sequence header not built, waiting for the next keyframe: %s", exc
                    )
                    return []
                log.warning("FLV keeps the previous sequence header: %s", exc)
            else:
                self._params = params
                self.stats.sequence_headers += 1
                tags.append(_tag(TAG_VIDEO, self._timestamp(frame.dts), body))
        elif self._params is None:
            self.stats.waiting_for_keyframe += 1
            return []
        drop = _H265_DROP if codec is Codec.H265 else _H264_DROP
        payload = _length_prefixed([n for n, t in zip(nals, types, strict=True) if t not in drop])
        if not payload:
            return tags  # parameter sets only: nothing to show
        ts = self._timestamp(frame.dts)
        cts = _si24(self._signed_delta(frame.pts, frame.dts) // 90)
        frame_type = FRAME_KEY if frame.keyframe else FRAME_INTER
        if codec is Codec.H265:
            head = bytes((EX_HEADER | frame_type << 4 | EX_CODED_FRAMES,)) + FOURCC_HEVC + cts
        else:
            head = bytes((frame_type << 4 | CODEC_AVC, AVC_NALU)) + cts
        body_size = len(head) + sum(len(p) for p in payload)
        if body_size > _MAX_DATA_SIZE:
            self._drop(f"video frame of {body_size} bytes exceeds FLV DataSize")
            return tags
        self.video_codec = codec
        self.stats.video_frames += 1
        tags.append(_tag(TAG_VIDEO, ts, [head, *payload]))
        return tags

    @staticmethod
    def _signed_delta(pts: int, dts: int) -> int:
        delta = (pts - dts) % _PTS_WRAP
        return delta - _PTS_WRAP if delta >= _PTS_WRAP // 2 else delta

    @staticmethod
    def _parameter_sets(
        codec: Codec, nals: list[memoryview], types: list[int]
    ) -> tuple[tuple[bytes, ...], ...] | None:
        """(VPS,) SPS and PPS tuples of the access unit, or None when any is missing."""
        kinds = (
            (H265_NAL_VPS, H265_NAL_SPS, H265_NAL_PPS)
            if codec is Codec.H265
            else (H264_NAL_SPS, H264_NAL_PPS)
        )
        found = tuple(
            tuple(bytes(n) for n, t in zip(nals, types, strict=True) if t == k) for k in kinds
        )
        return found if all(found) else None

    @staticmethod
    def _sequence_start(
        codec: Codec, params: tuple[tuple[bytes, ...], ...]
    ) -> list[bytes | memoryview]:
        if codec is Codec.H265:
            vps, sps, pps = (list(p) for p in params)
            record = hevc_decoder_configuration_record(vps, sps, pps)
            return [bytes((EX_HEADER | FRAME_KEY << 4 | EX_SEQUENCE_START,)) + FOURCC_HEVC, record]
        sps, pps = (list(p) for p in params)
        record = avc_decoder_configuration_record(sps, pps)
        return [bytes((FRAME_KEY << 4 | CODEC_AVC, AVC_SEQUENCE_HEADER, 0, 0, 0)), record]

    def _audio(self, frame: Frame) -> list[bytes]:
        if not self.started:
            self.stats.waiting_for_keyframe += 1
            return []  # the stream opens on a video keyframe; audio before it has no base
        if frame.codec is Codec.AAC:
            return self._aac_tags(frame)
        if len(frame.data) + 1 > _MAX_DATA_SIZE:
            self._drop(f"audio block of {len(frame.data)} bytes exceeds FLV DataSize")
            return []
        sound = SOUND_G711A if frame.codec is Codec.G711A else SOUND_G711U
        self.stats.audio_frames += 1
        return [
            _tag(
                TAG_AUDIO,
                self._timestamp(frame.dts),
                [bytes((sound << 4 | _G711_FLAGS,)), frame.data],
            )
        ]

    def _aac_tags(self, frame: Frame) -> list[bytes]:
        """§E.4.2.2: a sequence header when the config is new, then one raw frame per tag."""
        try:
            units = split_adts(frame.data)
        except AdtsError as e:
            self._drop(f"AAC frame: {e}")
            return []
        tags: list[bytes] = []
        dts = frame.dts
        for header, raw in units:
            ts = self._timestamp(dts)
            key = (header.object_type, header.sample_rate_index, header.channels)
            if key != self._aac:
                try:
                    config = header.config()
                except ValueError as e:
                    self._drop(f"AAC frame: {e}")
                    return tags
                self._aac = key
                self.stats.sequence_headers += 1
                tags.append(_tag(TAG_AUDIO, ts, [AAC_SEQUENCE_HEADER, config]))
            tags.append(_tag(TAG_AUDIO, ts, [AAC_RAW, raw]))
            self.stats.audio_frames += 1
            # The next frame of this PES starts 1024 samples later (§4.5.2.1).
            dts += SAMPLES_PER_FRAME * 90_000 // header.sample_rate
        return tags

    def _drop(self, reason: str) -> None:
        self.stats.dropped += 1
        if self.stats.dropped <= 10 or self.stats.dropped % 1000 == 0:
            log.warning("FLV drops a frame (%d so far): %s", self.stats.dropped, reason)


class FlvSink:
    """A ``FrameSink`` writing one viewer's HTTP-FLV byte stream.

    The FLV header goes out with the first tags, so a viewer that attached
    before any keyframe gets nothing at all until one arrives.

    ``audio``: True or False fixes the header's audio flag (and whether audio
    is muxed); None (the default) follows the stream: frames from the first
    keyframe on are held until ``tracks`` (the dispatcher's, or, if not
    given, tracks learnt from the frames this sink sees) are ready, at most
    ``max_pending`` of them. A late joiner of a stream whose tracks are
    known holds nothing. ``ready``, when given, replaces ``tracks.ready`` as
    the test (the platform's ``LiveStream.tracks_known``, which knows sooner
    when the stream carries no audio).

    ``on_start`` is called once, right after the first tags (header,
    sequence header, first keyframe) are written: the stream's timeline
    notes when this viewer's first picture left.
    """

    def __init__(
        self, write: Callable[[bytes], None], *, audio: bool | None = None,
        tracks: StreamTracks | None = None, muxer: FlvMuxer | None = None, max_pending: int = 256,
        on_start: Callable[[], None] | None = None, ready: Callable[[], bool] | None = None,
    ) -> None:
        self.muxer = muxer if muxer is not None else FlvMuxer(audio=bool(audio))
        self.write = write
        self.header_written = False
        self.tracks = tracks if tracks is not None else StreamTracks()
        self.max_pending = max_pending
        self._learn = tracks is None
        self._deciding = audio is None and muxer is None
        self._pending: list[Frame] = []
        self.on_start = on_start
        self._ready = ready

    @property
    def held(self) -> int:
        """Frames waiting for the tracks to be known."""
        return len(self._pending)

    def input_frame(self, frame: Frame) -> None:
        if self._deciding:
            frames = self._decide(frame)
            tags = [tag for f in frames for tag in self.muxer.frame(f)]
        else:
            tags = self.muxer.frame(frame)
        if not tags:
            return
        if not self.header_written:
            self.header_written = True
            tags.insert(0, self.muxer.header())
            self.write(b"".join(tags))
            if self.on_start is not None:
                self.on_start()
            return
        self.write(b"".join(tags) if len(tags) > 1 else tags[0])

    def _decide(self, frame: Frame) -> list[Frame]:
        """The frames to mux now: none while the tracks are unknown, then all held ones."""
        if self._learn:
            self.tracks.add(frame)
        ready = self.tracks.ready if self._ready is None else self._ready()
        if not ready and len(self._pending) < self.max_pending:
            if not self._pending and not (frame.codec.is_video and frame.keyframe):
                return [frame]  # before the first keyframe: the muxer counts and drops it
            self._pending.append(frame)
            return []
        self._deciding = False
        self.muxer.audio = self.tracks.audio is not None
        frames, self._pending = self._pending, []
        frames.append(frame)
        return frames

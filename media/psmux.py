"""Sans-IO MPEG-2 program stream muxer for GB/T 28181 live media.

Theory of operation (ISO/IEC 13818-1 §2.5, GB/T 28181-2016 Annex C): the
inverse of `media.ps.PsDemuxer`, laid out as a camera does it. Every
`PsMuxer.mux(frame)` returns one pack:

* a pack header (§2.5.3.3, MPEG-2 '01' form) whose SCR is the frame's DTS, so
  the system clock never runs past the decoding time of what the pack carries;
* before every video keyframe, a system header (§2.5.3.5) and a program
  stream map (§2.5.4) declaring the streams (Annex C.2 stream types, CRC_32
  per Annex A), so a receiver that joins at a keyframe learns the codecs. A
  stream without video repeats them every ``headers_interval`` ticks instead;
* the frame's PES packets (§2.4.3.6): the first carries the PTS (and the DTS
  when it differs, §2.4.3.7), continuation packets carry neither. A video
  access unit larger than ``max_pes_payload`` spans several PES packets,
  which the demuxer joins back because no PTS intervenes.

Video is stream_id 0xE0, audio 0xC0 (Table 2-22). An audio frame (one G.711
block or one AAC ADTS frame) always goes in one PES whatever
``max_pes_payload`` says: a demuxer takes each audio PES as a whole frame.

`split_payload` cuts a pack into RTP-payload-sized chunks (GB/T 28181-2016
Annex C.1 / RFC 2250-style: PS bytes carried back to back over RTP, a receiver
reassembles them whatever the cut).
"""

from __future__ import annotations

from media.frame import Codec, Frame

__all__ = [
    "AUDIO_STREAM_ID",
    "MAX_PES_PAYLOAD",
    "RTP_PAYLOAD_SIZE",
    "STREAM_TYPE_OF",
    "VIDEO_STREAM_ID",
    "PsMuxer",
    "crc32_mpeg",
    "encode_timestamp",
    "pack_header",
    "program_stream_map",
    "split_payload",
    "system_header",
]

VIDEO_STREAM_ID = 0xE0
AUDIO_STREAM_ID = 0xC0

# ISO/IEC 13818-1 Table 2-34 plus GB/T 28181-2016 Annex C.2 (0x90/0x91 G.711).
STREAM_TYPE_OF: dict[Codec, int] = {
    Codec.H264: 0x1B,
    Codec.H265: 0x24,
    Codec.G711A: 0x90,
    Codec.G711U: 0x91,
    Codec.AAC: 0x0F,
}

# PES_packet_length is 16 bits and counts the 3 flag bytes and the header data
# (PTS + DTS: 10 bytes) too, so no payload above this fits one PES (§2.4.3.7).
MAX_PES_PAYLOAD = 0xFFFF - 3 - 10
DEFAULT_PES_PAYLOAD = 65_400
RTP_PAYLOAD_SIZE = 1400  # below a 1500-byte Ethernet MTU with IP/UDP/RTP headers
# program_mux_rate / rate_bound in units of 50 bytes/s (§2.5.3.4): 10 Mbit/s.
DEFAULT_MUX_RATE = 25_000

_TS_MASK = (1 << 33) - 1


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else c << 1
        table.append(c & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32_mpeg(data: bytes | bytearray | memoryview) -> int:
    """CRC_32 of ISO/IEC 13818-1 Annex A: polynomial 0x04C11DB7, init all ones, MSB first, no final XOR."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ b]
    return crc


def encode_timestamp(prefix: int, ts: int) -> bytes:
    """The 5-byte PTS/DTS field (§2.4.3.7): 4-bit ``prefix``, 33 bits with marker bits."""
    ts &= _TS_MASK
    return bytes((
        (prefix << 4) | ((ts >> 29) & 0x0E) | 1,
        (ts >> 22) & 0xFF,
        ((ts >> 14) & 0xFE) | 1,
        (ts >> 7) & 0xFF,
        ((ts << 1) & 0xFE) | 1,
    ))


def pack_header(scr: int, mux_rate: int = DEFAULT_MUX_RATE) -> bytes:
    """MPEG-2 pack_header() (§2.5.3.3): SCR base ``scr`` (90 kHz), extension 0, no stuffing."""
    base = scr & _TS_MASK
    return bytes((
        0x00, 0x00, 0x01, 0xBA,
        0x40 | ((base >> 27) & 0x38) | 0x04 | ((base >> 28) & 0x03),
        (base >> 20) & 0xFF,
        ((base >> 12) & 0xF8) | 0x04 | ((base >> 13) & 0x03),
        (base >> 5) & 0xFF,
        ((base << 3) & 0xF8) | 0x04,  # SCR_extension[8..7] = 0
        0x01,  # SCR_extension[6..0] = 0, marker
        (mux_rate >> 14) & 0xFF,
        (mux_rate >> 6) & 0xFF,
        ((mux_rate << 2) & 0xFC) | 0x03,
        0xF8,  # reserved, pack_stuffing_length = 0
    ))


def system_header(video: Codec | None, audio: Codec | None,
                  rate_bound: int = DEFAULT_MUX_RATE) -> bytes:
    """system_header() (§2.5.3.5) with one P-STD bound per stream.

    Video: buffer bound scale 1 (1024-byte units), 400 KiB; audio: scale 0
    (128-byte units), 4 KiB -- what GB cameras send, and ample for both.
    """
    streams = bytearray()
    if video is not None:
        streams += bytes((VIDEO_STREAM_ID, 0xE0 | (400 >> 8), 400 & 0xFF))
    if audio is not None:
        streams += bytes((AUDIO_STREAM_ID, 0xC0 | (32 >> 8), 32 & 0xFF))
    body = bytes((
        0x80 | ((rate_bound >> 15) & 0x7F),
        (rate_bound >> 7) & 0xFF,
        ((rate_bound << 1) & 0xFE) | 0x01,
        (1 if audio is not None else 0) << 2,  # audio_bound, fixed_flag 0, CSPS_flag 0
        0xE0 | (1 if video is not None else 0),  # audio/video lock, marker, video_bound
        0x7F,  # packet_rate_restriction_flag 0, reserved
    )) + bytes(streams)
    return b"\x00\x00\x01\xbb" + len(body).to_bytes(2, "big") + body


def program_stream_map(streams: list[tuple[int, int]], version: int = 0) -> bytes:
    """program_stream_map() (§2.5.4.1) for ``(stream_type, elementary_stream_id)`` pairs.

    No descriptors. The CRC_32 covers the whole packet from its start code,
    as GB/T 28181 devices and ZLMediaKit compute it.
    """
    es_map = b"".join(bytes((st, sid, 0, 0)) for st, sid in streams)
    body = (
        bytes((0x80 | 0x60 | (version & 0x1F), 0xFF, 0, 0))  # current_next 1, no program info
        + len(es_map).to_bytes(2, "big")
        + es_map
    )
    head = b"\x00\x00\x01\xbc" + (len(body) + 4).to_bytes(2, "big") + body
    return head + crc32_mpeg(head).to_bytes(4, "big")


def split_payload(data: bytes, size: int = RTP_PAYLOAD_SIZE) -> list[bytes]:
    """Cut PS bytes into chunks of at most ``size`` bytes, one per RTP packet."""
    if size < 1:
        raise ValueError(f"chunk size {size} must be positive")
    return [data[i:i + size] for i in range(0, len(data), size)]


class PsMuxer:
    """``mux(Frame) -> bytes``: one PS pack per frame (see the module docstring).

    ``video``/``audio`` name the codecs the PSM declares (either may be None);
    a frame of any other codec is a caller error (``ValueError``).
    """

    def __init__(self, video: Codec | None = Codec.H264, audio: Codec | None = None, *,
                 mux_rate: int = DEFAULT_MUX_RATE,
                 max_pes_payload: int = DEFAULT_PES_PAYLOAD,
                 headers_interval: int = 90_000) -> None:
        if video is not None and not video.is_video:
            raise ValueError(f"{video.value} is not a video codec")
        if audio is not None and audio.is_video:
            raise ValueError(f"{audio.value} is not an audio codec")
        if video is None and audio is None:
            raise ValueError("a program stream needs at least one stream")
        if not 0 < mux_rate < 1 << 22:
            raise ValueError(f"mux rate {mux_rate} does not fit 22 bits")
        if not 0 < max_pes_payload <= MAX_PES_PAYLOAD:
            raise ValueError(f"PES payload limit {max_pes_payload} outside 1..{MAX_PES_PAYLOAD}")
        self.video = video
        self.audio = audio
        self.mux_rate = mux_rate
        self.max_pes_payload = max_pes_payload
        self.headers_interval = headers_interval
        streams: list[tuple[int, int]] = []
        if video is not None:
            streams.append((STREAM_TYPE_OF[video], VIDEO_STREAM_ID))
        if audio is not None:
            streams.append((STREAM_TYPE_OF[audio], AUDIO_STREAM_ID))
        # Constant for the muxer's life: built once, sent before every keyframe.
        self.headers = system_header(video, audio, mux_rate) + program_stream_map(streams)
        self._headers_at: int | None = None

    def mux(self, frame: Frame) -> bytes:
        """One pack: pack header, system header + PSM when due, then the frame's PES packets."""
        if frame.codec is self.video:
            stream_id = VIDEO_STREAM_ID
            with_headers = frame.keyframe
        elif frame.codec is self.audio:
            stream_id = AUDIO_STREAM_ID
            with_headers = self.video is None and (
                self._headers_at is None or frame.dts - self._headers_at >= self.headers_interval
            )
        else:
            raise ValueError(f"{frame.codec.value} frame for a muxer of {self.video}/{self.audio}")
        if not frame.data:
            raise ValueError("empty frame")
        if stream_id == AUDIO_STREAM_ID and len(frame.data) > MAX_PES_PAYLOAD:
            # An audio PES is one frame to the demuxer: it cannot continue in the next one.
            raise ValueError(f"audio frame of {len(frame.data)} bytes does not fit one PES")
        parts: list[bytes | memoryview] = [pack_header(frame.dts, self.mux_rate)]
        if with_headers:
            parts.append(self.headers)
            self._headers_at = frame.dts
        self._pes(stream_id, frame, parts)
        return b"".join(parts)

    def _pes(self, stream_id: int, frame: Frame, parts: list[bytes | memoryview]) -> None:
        """PES_packet() headers and payload slices (§2.4.3.6) appended to ``parts``.

        Payload slices are memoryviews: the one copy is the caller's join.
        """
        data = frame.data
        view = memoryview(data)
        limit = self.max_pes_payload if stream_id == VIDEO_STREAM_ID else MAX_PES_PAYLOAD
        if frame.pts != frame.dts:
            stamps = encode_timestamp(0b0011, frame.pts) + encode_timestamp(0b0001, frame.dts)
            flags = 0xC0
        else:
            stamps = encode_timestamp(0b0010, frame.pts)
            flags = 0x80
        first_len = min(len(data), limit, MAX_PES_PAYLOAD + 10 - len(stamps))
        # '10', data_alignment_indicator 1: the payload starts an access unit / audio frame.
        parts.append(
            bytes((0, 0, 1, stream_id))
            + (3 + len(stamps) + first_len).to_bytes(2, "big")
            + bytes((0x84, flags, len(stamps)))
            + stamps
        )
        parts.append(view[:first_len] if first_len < len(data) else data)
        pos = first_len
        while pos < len(data):
            n = min(len(data) - pos, limit)
            parts.append(bytes((0, 0, 1, stream_id)) + (3 + n).to_bytes(2, "big")
                         + b"\x80\x00\x00")
            parts.append(view[pos:pos + n])
            pos += n

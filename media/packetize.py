"""RTP packetizers and SDP media sections for the RTSP output (sans-IO).

Theory of operation: the RTSP sink hands each `Frame` (one Annex B access
unit, or one block of G.711 samples) to the packetizer of its track, which
returns serialized RTP packets ready to write to UDP or interleave on TCP.

* H.264 follows RFC 6184 with packetization-mode=1: a NAL unit that fits the
  MTU goes as a single NAL unit packet (§5.6), a larger one as FU-A fragments
  (§5.8). H.265 follows RFC 7798: single NAL unit packets (§4.4.1) and
  Fragmentation Units (§4.4.3). Neither uses aggregation packets, so the
  receiver never needs interleaving support.
* The marker bit goes on the last packet of an access unit (RFC 6184 §5.1,
  RFC 7798 §4.1), and every packet of one access unit carries the same
  timestamp: the frame's 90 kHz PTS plus a random offset (RFC 3550 §5.1).
* Access unit delimiters are dropped: RFC 6184 §5.1 does not need them on RTP
  and many players choke on them.
* A client that joins mid-stream needs parameter sets before the next
  keyframe, so the packetizer remembers the last VPS/SPS/PPS it saw and sends
  them ahead of every IDR (H.264) / IRAP (H.265) access unit that lacks them.
* G.711 follows RFC 3551 §4.5.14 (PCMA/PCMU, static payload types 8/0).
* AAC follows RFC 3640 §3.3.6 (mpeg4-generic, mode AAC-hbr): the ADTS
  headers of the program stream are stripped and each access unit goes in
  its own packet behind a 16-bit AU-headers-length and one AU-header
  (13-bit AU-size, 3-bit AU-Index 0); one larger than the MTU is fragmented
  (§3.2.3), every fragment's AU-size giving the whole AU, marker on the last.

``mtu`` here is the largest RTP *payload* in bytes; each packet is at most
``mtu + 12`` bytes (fixed header, no CSRCs, no extension).
"""

from __future__ import annotations

import base64
import logging
import random

from media.aac import SAMPLES_PER_FRAME, AdtsError, split_adts
from media.frame import Codec, Frame
from media.nal import (
    H264_NAL_AUD,
    H264_NAL_IDR,
    H264_NAL_PPS,
    H264_NAL_SPS,
    H265_NAL_AUD,
    H265_NAL_IRAP_FIRST,
    H265_NAL_IRAP_LAST,
    H265_NAL_PPS,
    H265_NAL_SPS,
    H265_NAL_VPS,
    nal_type,
    parameter_sets,
    split_nals,
)
from media.pipeline import AudioTrack
from media.rtp import RtpPacket

__all__ = [
    "AAC_PAYLOAD_TYPE",
    "FU_A",
    "H265_FU",
    "AacPacketizer",
    "G711Packetizer",
    "H264Packetizer",
    "H265Packetizer",
    "MissingParameterSets",
    "audio_payload_type",
    "sdp_audio",
    "sdp_media",
]

log = logging.getLogger(__name__)

FU_A = 28  # RFC 6184 §5.2 Table 1
H265_FU = 49  # RFC 7798 §4.4.3
G711_CLOCK_RATE = 8000  # RFC 3551 §4.5.14
VIDEO_CLOCK_RATE = 90000  # RFC 6184 §8.2.1, RFC 7798 §7.1

AAC_PAYLOAD_TYPE = 97  # dynamic (RFC 3551 §6), next to video's 96
_AU_HEADERS_LENGTH = (16).to_bytes(2, "big")  # one 16-bit AU-header (RFC 3640 §3.2.1)

_G711_PAYLOAD_TYPES = {Codec.G711A: 8, Codec.G711U: 0}  # RFC 3551 §6 Table 4
_G711_NAMES = {Codec.G711A: "PCMA", Codec.G711U: "PCMU"}


class MissingParameterSets(ValueError):
    """The frame given to `sdp_media` lacks the SPS/PPS (or VPS) the fmtp line needs."""


class _RtpSequencer:
    """SSRC, payload type, sequence numbers and the timestamp offset of one track.

    RFC 3550 §5.1: sequence number and timestamp both start at random values.
    """

    def __init__(
        self, ssrc: int, rng: random.Random, payload_type: int, mtu: int, min_mtu: int
    ) -> None:
        if not 0 <= ssrc <= 0xFFFF_FFFF:
            raise ValueError(f"SSRC {ssrc} is not a 32-bit value")
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload type {payload_type} is not in 0..127")
        if mtu < min_mtu:
            raise ValueError(f"MTU {mtu} is below the minimum {min_mtu}")
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.mtu = mtu
        self.sequence = rng.getrandbits(16)
        self.timestamp_offset = rng.getrandbits(32)
        self.packets_sent = 0
        self.octets_sent = 0  # payload octets, for the RTCP SR (RFC 3550 §6.4.1)

    def _packet(self, payload: bytes, timestamp: int, marker: bool) -> bytes:
        pkt = RtpPacket(
            payload_type=self.payload_type,
            sequence=self.sequence,
            timestamp=timestamp,
            ssrc=self.ssrc,
            payload=payload,
            marker=marker,
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return pkt.serialize()


class _VideoPacketizer(_RtpSequencer):
    """What H.264 and H.265 share: AUD dropping, parameter-set injection, marker."""

    _codec: Codec
    _aud_type: int
    _param_types: tuple[int, ...]
    _header_size: int

    def __init__(self, ssrc: int, rng: random.Random, payload_type: int, mtu: int) -> None:
        # A fragment must carry at least one byte after the FU headers.
        super().__init__(ssrc, rng, payload_type, mtu, min_mtu=self._header_size + 2)
        self._params: dict[int, bytes] = {}

    @property
    def codec(self) -> Codec:
        return self._codec

    def rtp_timestamp(self, pts: int) -> int:
        """The RTP timestamp for a 90 kHz PTS, e.g. for RTSP RTP-Info (RFC 2326 §12.33)."""
        return (pts + self.timestamp_offset) & 0xFFFF_FFFF

    def _is_random_access(self, t: int) -> bool:
        raise NotImplementedError

    def _fragment(self, nal: bytes) -> list[bytes]:
        raise NotImplementedError

    def packetize(self, frame: Frame) -> list[bytes]:
        """Serialized RTP packets for one access unit; [] when nothing is left to send."""
        if frame.codec is not self._codec:
            raise ValueError(f"{type(self).__name__} cannot packetize {frame.codec.value}")
        nals: list[bytes] = []
        carried: set[int] = set()
        random_access = False
        for view in split_nals(frame.data):
            nal = bytes(view)
            if len(nal) < self._header_size:
                log.warning(
                    "dropping %d-byte %s NAL shorter than its header", len(nal), self._codec.value
                )
                continue
            t = nal_type(self._codec, nal)
            if t == self._aud_type:
                continue
            if t in self._param_types:
                self._params[t] = nal
                carried.add(t)
            random_access = random_access or self._is_random_access(t)
            nals.append(nal)
        if random_access:
            missing = [
                self._params[t] for t in self._param_types if t not in carried and t in self._params
            ]
            nals[:0] = missing
        timestamp = self.rtp_timestamp(frame.pts)
        payloads: list[bytes] = []
        for nal in nals:
            payloads.extend([nal] if len(nal) <= self.mtu else self._fragment(nal))
        return [self._packet(p, timestamp, i == len(payloads) - 1) for i, p in enumerate(payloads)]


class H264Packetizer(_VideoPacketizer):
    """RFC 6184 packetization-mode 1: single NAL unit packets and FU-A."""

    _codec = Codec.H264
    _aud_type = H264_NAL_AUD
    _param_types = (H264_NAL_SPS, H264_NAL_PPS)
    _header_size = 1

    def __init__(
        self, ssrc: int, rng: random.Random, payload_type: int = 96, mtu: int = 1400
    ) -> None:
        super().__init__(ssrc, rng, payload_type, mtu)

    def _is_random_access(self, t: int) -> bool:
        return t == H264_NAL_IDR

    def _fragment(self, nal: bytes) -> list[bytes]:
        """FU-A (RFC 6184 §5.8): indicator keeps F and NRI, header has S/E and the type."""
        indicator = (nal[0] & 0xE0) | FU_A
        kind = nal[0] & 0x1F
        body = nal[1:]
        step = self.mtu - 2
        chunks = [body[i : i + step] for i in range(0, len(body), step)]
        out = []
        for i, chunk in enumerate(chunks):
            header = kind | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
            out.append(bytes((indicator, header)) + chunk)
        return out


class H265Packetizer(_VideoPacketizer):
    """RFC 7798 without DONL (sprop-max-don-diff 0): single NAL unit packets and FUs."""

    _codec = Codec.H265
    _aud_type = H265_NAL_AUD
    _param_types = (H265_NAL_VPS, H265_NAL_SPS, H265_NAL_PPS)
    _header_size = 2

    def __init__(
        self, ssrc: int, rng: random.Random, payload_type: int = 96, mtu: int = 1400
    ) -> None:
        super().__init__(ssrc, rng, payload_type, mtu)

    def _is_random_access(self, t: int) -> bool:
        return H265_NAL_IRAP_FIRST <= t <= H265_NAL_IRAP_LAST

    def _fragment(self, nal: bytes) -> list[bytes]:
        """FU (RFC 7798 §4.4.3): payload header copies F, LayerId and TID with Type 49."""
        payload_header = bytes(((nal[0] & 0x81) | (H265_FU << 1), nal[1]))
        kind = (nal[0] >> 1) & 0x3F
        body = nal[2:]
        step = self.mtu - 3
        chunks = [body[i : i + step] for i in range(0, len(body), step)]
        out = []
        for i, chunk in enumerate(chunks):
            fu_header = kind | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
            out.append(payload_header + bytes((fu_header,)) + chunk)
        return out


class G711Packetizer(_RtpSequencer):
    """G.711 A-law (PCMA, PT 8) / mu-law (PCMU, PT 0) at 8 kHz (RFC 3551 §4.5.14).

    One octet is one sample, so a block longer than the MTU is split with the
    timestamp advancing by the octets already sent. The marker bit stays 0: we
    send continuously, without silence suppression (RFC 3551 §4.1).
    """

    def __init__(
        self, ssrc: int, rng: random.Random, codec: Codec = Codec.G711A, mtu: int = 1400
    ) -> None:
        if codec not in _G711_PAYLOAD_TYPES:
            raise ValueError(f"{codec.value} is not G.711")
        self.codec = codec
        super().__init__(ssrc, rng, _G711_PAYLOAD_TYPES[codec], mtu, min_mtu=1)

    def rtp_timestamp(self, pts: int) -> int:
        """8 kHz sample clock from the 90 kHz PTS (RFC 3551 §4.5.14)."""
        return (pts * G711_CLOCK_RATE // VIDEO_CLOCK_RATE + self.timestamp_offset) & 0xFFFF_FFFF

    def packetize(self, frame: Frame) -> list[bytes]:
        """Serialized RTP packets for one block of samples."""
        if frame.codec is not self.codec:
            raise ValueError(
                f"G711Packetizer({self.codec.value}) cannot packetize {frame.codec.value}"
            )
        base = self.rtp_timestamp(frame.pts)
        data = frame.data
        return [
            self._packet(data[i : i + self.mtu], (base + i) & 0xFFFF_FFFF, False)
            for i in range(0, len(data), self.mtu)
        ]


class AacPacketizer(_RtpSequencer):
    """AAC from ADTS frames as RFC 3640 mpeg4-generic, mode AAC-hbr (§3.3.6).

    The RTP clock is the sample rate (§4.1 "rate"), so each AU advances the
    timestamp by 1024. A frame whose data is not whole ADTS frames is
    dropped and logged: bad input from a camera must not end the viewer.
    """

    codec = Codec.AAC

    def __init__(
        self, ssrc: int, rng: random.Random, sample_rate: int,
        payload_type: int = AAC_PAYLOAD_TYPE, mtu: int = 1400,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, not {sample_rate}")
        super().__init__(ssrc, rng, payload_type, mtu, min_mtu=5)
        self.sample_rate = sample_rate
        self.dropped = 0

    def rtp_timestamp(self, pts: int) -> int:
        """Sample clock from the 90 kHz PTS (RFC 3640 §4.1)."""
        return (pts * self.sample_rate // VIDEO_CLOCK_RATE + self.timestamp_offset) & 0xFFFF_FFFF

    def packetize(self, frame: Frame) -> list[bytes]:
        """Serialized RTP packets for the ADTS frames of one PES payload."""
        if frame.codec is not Codec.AAC:
            raise ValueError(f"AacPacketizer cannot packetize {frame.codec.value}")
        try:
            units = split_adts(frame.data)
        except AdtsError as e:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("RTP: dropping an AAC frame (%d so far): %s", self.dropped, e)
            return []
        base = self.rtp_timestamp(frame.pts)
        room = self.mtu - 4
        out: list[bytes] = []
        for i, (_, raw) in enumerate(units):
            timestamp = (base + i * SAMPLES_PER_FRAME) & 0xFFFF_FFFF
            au_header = _AU_HEADERS_LENGTH + (len(raw) << 3).to_bytes(2, "big")
            for start in range(0, len(raw), room):
                last = start + room >= len(raw)
                out.append(self._packet(b"".join((au_header, raw[start : start + room])), timestamp, last))
        return out


def audio_payload_type(codec: Codec) -> int:
    """PCMA 8 / PCMU 0 (RFC 3551 §6 Table 4), AAC the dynamic ``AAC_PAYLOAD_TYPE``."""
    if codec in _G711_PAYLOAD_TYPES:
        return _G711_PAYLOAD_TYPES[codec]
    if codec is Codec.AAC:
        return AAC_PAYLOAD_TYPE
    raise ValueError(f"no RTP payload format for {codec.value}")


def sdp_audio(track: AudioTrack, payload_type: int, control: str) -> str:
    """The audio media section of an RTSP DESCRIBE answer, CRLF-terminated lines.

    G.711: RFC 3551 §6 (rtpmap PCMA/PCMU 8000). AAC: RFC 3640 §4.1 and the
    AAC-hbr mode of §3.3.6 (sizelength 13, indexlength 3, indexdeltalength
    3), ``config`` the AudioSpecificConfig in hex (ISO/IEC 14496-3 §1.6.2.1).
    """
    if track.codec in _G711_NAMES:
        return sdp_media(track.codec, None, payload_type, control)
    if track.codec is not Codec.AAC:
        raise ValueError(f"no RTP payload format for {track.codec.value}")
    if not track.config:
        raise ValueError("AAC SDP needs the AudioSpecificConfig")
    channels = f"/{track.channels}" if track.channels else ""
    lines = [
        f"m=audio 0 RTP/AVP {payload_type}",
        f"a=rtpmap:{payload_type} mpeg4-generic/{track.sample_rate}{channels}",
        f"a=fmtp:{payload_type} streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;"
        f"indexlength=3;indexdeltalength=3;config={track.config.hex().upper()}",
        f"a=control:{control}",
    ]
    return "".join(line + "\r\n" for line in lines)


def _b64(nals: list[bytes]) -> str:
    return ",".join(base64.b64encode(n).decode("ascii") for n in nals)


def sdp_media(codec: Codec, frame: Frame | None, payload_type: int, control: str) -> str:
    """The media section of an RTSP DESCRIBE answer, CRLF-terminated lines.

    H.264: RFC 6184 §8.1 (profile-level-id is the three SPS bytes after the
    NAL header; sprop-parameter-sets is base64 SPS, PPS). H.265: RFC 7798
    §7.1 (sprop-vps/sps/pps). G.711: RFC 3551 §6. ``frame`` must hold the
    parameter sets for video (a keyframe from the GOP cache); it is unused
    for audio. The port is 0 as RTSP negotiates it in SETUP (RFC 2326 C.1).
    """
    if codec is Codec.H264 or codec is Codec.H265:
        if frame is None:
            raise MissingParameterSets(f"{codec.value} SDP needs a frame with parameter sets")
        params = parameter_sets(codec, frame.data)
        needed = ("vps", "sps", "pps") if codec is Codec.H265 else ("sps", "pps")
        absent = [k for k in needed if not params[k]]
        if absent:
            raise MissingParameterSets(f"{codec.value} frame lacks {'/'.join(absent)}")
        if codec is Codec.H264:
            sps = params["sps"][0]
            if len(sps) < 4:
                raise MissingParameterSets(f"H.264 SPS of {len(sps)} bytes has no profile-level-id")
            rtpmap = "H264/90000"
            fmtp = (
                f"packetization-mode=1;profile-level-id={sps[1:4].hex().upper()};"
                f"sprop-parameter-sets={_b64(params['sps'])},{_b64(params['pps'])}"
            )
        else:
            rtpmap = "H265/90000"
            fmtp = f"sprop-vps={_b64(params['vps'])};sprop-sps={_b64(params['sps'])};sprop-pps={_b64(params['pps'])}"
        lines = [
            f"m=video 0 RTP/AVP {payload_type}",
            f"a=rtpmap:{payload_type} {rtpmap}",
            f"a=fmtp:{payload_type} {fmtp}",
        ]
    elif codec in _G711_NAMES:
        lines = [
            f"m=audio 0 RTP/AVP {payload_type}",
            f"a=rtpmap:{payload_type} {_G711_NAMES[codec]}/{G711_CLOCK_RATE}",
        ]
    else:
        raise ValueError(f"no RTP payload format for {codec.value}")
    lines.append(f"a=control:{control}")
    return "".join(line + "\r\n" for line in lines)

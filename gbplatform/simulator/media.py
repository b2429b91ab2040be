"""Media for the device simulator: a PS clip replayed as RTP at 25 fps.

Theory of operation
-------------------
``PsClip`` holds PS-over-RTP payloads, one ``PsFrame`` per RTP timestamp,
starting at a keyframe (a group carrying a PSM, ``00 00 01 BC``). By default
they come from a ZLMediaKit capture (/work/shared/captures, H.264 1080p,
25 fps), without the capture's cut last frame, replayed as they were
packetised so the platform sees a real device's PS stream. ``gbplatform
simulate --clip h264|h265`` instead plays a test pattern encoded at start
and muxed by us (``gbplatform.simulator.clip``), with G.711 audio in the same PS.

``--payload es`` makes the device send the elementary stream itself, as
some cameras do: ``EsClip.from_ps`` demuxes a PS clip to its video access
units and cuts each into RFC 6184 (H.264: single NAL unit packets and FU-A,
packetization-mode 1) or RFC 7798 (H.265: single NAL unit packets and FUs)
payloads of at most 1400 bytes with ``media.packetize``, the RTSP server's
packetizers. The answer then names the payload type the offer maps to
``H264``/``H265`` (GB/T 28181-2016 Annex F offers ``98 H264/90000``; 2022
adds ``99 H265/90000``), and 488 when the offer has none. No audio is sent:
the offer has one video ``m=`` line and an answer cannot add another (RFC
3264 §6), so an ES device sends video only.

``RtpPacer`` (no I/O) stamps frame ``n`` of the endless loop with fresh RTP
headers: sequence numbers and timestamps continue across the clip's end
(RFC 3550 §5.1; 3600 ticks of the 90 kHz clock per 25 fps frame), the marker
bit on each frame's last packet (RFC 2250 §3 style, as the capture does).

``MediaSender`` (Twisted) paces frames by ``callLater`` every 40 ms over the
transport the platform's offer asks for (GB/T 28181-2016 §F.1, RFC 4145 §4):

* ``udp``: RTP datagrams from our RTP port to the offer's ``c=``/``m=``;
* ``tcp-active``: the platform offered ``a=setup:passive`` (or ``actpass``)
  and listens; we connect to the offer's address;
* ``tcp-passive``: the platform offered ``a=setup:active``; we listen on the
  port of our answer and the platform connects.

TCP carries RFC 4571 §2 framing (2-byte length, then the packet). A slow TCP
reader pauses us (we are its push producer) and the frames due meanwhile are
dropped, as a live camera would: the send buffer stays bounded.

``SimMedia`` turns one device's SDP offer into ``(answer, sender)``; the
SIP side (100/200, dialog, ACK, BYE) lives in ``gbplatform.simulator.device``.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from twisted.internet.protocol import (
    ClientFactory,
    DatagramProtocol,
    Factory,
    Protocol,
    connectionDone,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from media.frame import Codec, Frame
from media.nal import sps_info
from media.packetize import H264Packetizer, H265Packetizer
from media.ps import PsDemuxer
from media.psmux import RTP_PAYLOAD_SIZE
from media.rtp import RtpError, RtpPacket, seq_delta
from sip.sdp import SdpError, SessionDescription, build_gb_answer

__all__ = [
    "CAPTURE_NAME",
    "ES_ENCODINGS",
    "FRAME_INTERVAL",
    "TIMESTAMP_STEP",
    "EsClip",
    "MediaOfferError",
    "MediaSender",
    "MediaTarget",
    "PsClip",
    "PsFrame",
    "RtpPacer",
    "SimMedia",
    "offered_payload_type",
    "read_udp_payloads",
]

log = Logger()

CAPTURE_NAME = "zlm_ps_rtp_udp_1080p.pcap"
PS_PAYLOAD_TYPE = 96  # GB/T 28181-2016 §F.1: a=rtpmap:96 PS/90000
FRAME_INTERVAL = 0.04  # 25 fps, the capture's rate
TIMESTAMP_STEP = 3600  # 90 kHz / 25 fps (RFC 3551 §5: video clock 90 kHz)
MAX_CATCHUP = 3  # frames sent at once when the reactor ran late; older ones are skipped
# RFC 4145 §4: an active-only endpoint SHOULD put the discard port 9 in its m= line.
ACTIVE_TCP_PORT = 9
CONNECT_TIMEOUT = 10.0
PSM_START = b"\x00\x00\x01\xbc"  # ISO/IEC 13818-1 §2.5.4 program stream map
# rtpmap encoding names of the raw video payloads (RFC 6184 §8.1, RFC 7798 §7.1).
ES_ENCODINGS = {Codec.H264: "H264", Codec.H265: "H265"}


class MediaOfferError(SdpError):
    """An offer we cannot serve; ``status_hint`` is the SIP answer (488 by default)."""


# --------------------------------------------------------------------------
# Capture reading (classic pcap, RFC-less but documented by libpcap)
# --------------------------------------------------------------------------

_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
                b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}


def read_udp_payloads(path: str | Path) -> list[bytes]:
    """UDP payloads of IPv4 packets in a classic pcap, in capture order.

    Link types: null (0), Ethernet (1, 802.1Q tags skipped), raw IP (101,
    228), Linux SLL (113). Raises ``ValueError`` on anything else.
    """
    data = Path(path).read_bytes()
    if len(data) < 24 or data[:4] not in _PCAP_MAGICS:
        raise ValueError(f"{path}: not a classic pcap file")
    endian = _PCAP_MAGICS[data[:4]]
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    out: list[bytes] = []
    pos = 24
    while pos + 16 <= len(data):
        incl = struct.unpack_from(endian + "I", data, pos + 8)[0]
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        if linktype == 1:
            ip_at, ethertype = 14, struct.unpack_from("!H", frame, 12)[0] if len(frame) >= 14 else 0
            while ethertype in (0x8100, 0x88A8) and len(frame) >= ip_at + 4:
                ethertype = struct.unpack_from("!H", frame, ip_at + 2)[0]
                ip_at += 4
            ip = frame[ip_at:] if ethertype == 0x0800 else b""
        elif linktype == 113:
            ip = frame[16:] if len(frame) >= 16 and frame[14:16] == b"\x08\x00" else b""
        elif linktype == 0:
            ip = frame[4:]
        elif linktype in (101, 228):
            ip = frame
        else:
            raise ValueError(f"{path}: unsupported link type {linktype}")
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0] or len(ip)
        out.append(bytes(ip[ihl + 8:total]))
    return out


# --------------------------------------------------------------------------
# The clip and the pacer (no I/O)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PsFrame:
    """One PS frame: the RTP payloads of one capture timestamp, ``index`` = its place in the capture."""

    index: int
    chunks: tuple[bytes, ...]


class PsClip:
    """Complete PS frames starting at a keyframe, to be looped.

    ``encoding`` is the rtpmap name of what the payloads carry (GB/T
    28181-2016 §F.1 ``PS``); ``EsClip`` holds raw video instead.
    """

    encoding = "PS"

    def __init__(self, frames: list[PsFrame]) -> None:
        if not frames:
            raise ValueError("a PS clip needs at least one frame")
        self.frames = frames
        # Packets before frame i of one pass, for sequence numbers across loops.
        self._offsets = [0]
        for frame in frames:
            self._offsets.append(self._offsets[-1] + len(frame.chunks))

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def packets_per_loop(self) -> int:
        return self._offsets[-1]

    def packets_before(self, n: int) -> int:
        """Packets sent before frame ``n`` of the endless loop."""
        loops, i = divmod(n, len(self.frames))
        return loops * self.packets_per_loop + self._offsets[i]

    @classmethod
    def from_rtp(cls, datagrams: list[bytes]) -> PsClip:
        """Group RTP packets by timestamp in sequence order; keep complete frames from the first PSM.

        A frame is complete when its last packet has the marker bit and its
        sequence numbers have no gap (RFC 3550 §5.1); the capture's last frame
        is cut and has no marker, so it goes.
        """
        packets: list[RtpPacket] = []
        for data in datagrams:
            try:
                packets.append(RtpPacket.parse(data))
            except RtpError as e:
                log.debug("capture: skipping a non-RTP datagram: {error}", error=str(e))
        if not packets:
            raise ValueError("no RTP packets in the capture")
        first = packets[0].sequence
        packets.sort(key=lambda p: seq_delta(first, p.sequence))
        groups: list[list[RtpPacket]] = []
        for p in packets:
            if groups and groups[-1][-1].timestamp == p.timestamp:
                groups[-1].append(p)
            else:
                groups.append([p])
        frames: list[PsFrame] = []
        for index, group in enumerate(groups):
            pairs = zip(group, group[1:], strict=False)
            gapless = all(seq_delta(a.sequence, b.sequence) == 1 for a, b in pairs)
            if not group[-1].marker or not gapless:
                continue
            if not frames and PSM_START not in bytes(group[0].payload):
                continue  # wait for the first keyframe: nothing decodes before it
            frames.append(PsFrame(index, tuple(bytes(p.payload) for p in group)))
        return cls(frames)

    @classmethod
    def from_capture(cls, path: str | Path) -> PsClip:
        return cls.from_rtp(read_udp_payloads(path))

    @staticmethod
    def default_path() -> Path:
        """``$GBP_SHARED_DIR/captures/...``, else ``<repo>/../shared/captures/...``."""
        shared = os.environ.get("GBP_SHARED_DIR")
        base = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared"
        return base / "captures" / CAPTURE_NAME

    @classmethod
    def default(cls) -> PsClip:
        return cls.from_capture(cls.default_path())


class EsClip(PsClip):
    """One picture per ``PsFrame``: its RFC 6184 / RFC 7798 payloads, marker on the last.

    The pacer stamps frame ``n`` with ``n x TIMESTAMP_STEP``, which is the
    picture's presentation time (RFC 6184 §5.1: the RTP timestamp is the
    sampling time) only for a stream without B-frames at 25 fps, as IPCs
    send and as the capture and the generated clips are; anything else is
    refused with ``ValueError``.
    """

    def __init__(self, frames: list[PsFrame], codec: Codec) -> None:
        if codec not in ES_ENCODINGS:
            raise ValueError(f"no RTP payload format for {codec.value} here")
        super().__init__(frames)
        self.codec = codec
        self.encoding = ES_ENCODINGS[codec]

    @classmethod
    def from_frames(cls, frames: list[Frame], mtu: int = RTP_PAYLOAD_SIZE) -> EsClip:
        """Packetize video access units (decode order, first one a keyframe with its parameter sets).

        ``media.packetize`` drops access unit delimiters and puts the last
        parameter sets in front of a keyframe lacking them (RFC 6184 §5.1 does
        not need AUDs; a viewer needs SPS/PPS at every keyframe).
        """
        if not frames:
            raise ValueError("an ES clip needs at least one access unit")
        codec = frames[0].codec
        if codec not in ES_ENCODINGS or any(f.codec is not codec for f in frames):
            raise ValueError("an ES clip needs H.264 or H.265 access units of one codec")
        first = frames[0]
        if not first.keyframe or sps_info(codec, first.data) is None:
            raise ValueError("an ES clip must open on a keyframe carrying its parameter sets")
        for i, f in enumerate(frames):
            if f.pts != f.dts or f.pts - first.pts != i * TIMESTAMP_STEP:
                raise ValueError(f"access unit {i} has PTS {f.pts - first.pts}, DTS "
                                 f"{f.dts - first.pts}: ES mode needs one picture per "
                                 f"{TIMESTAMP_STEP} ticks and no B-frames")
        # Headers are stamped again by RtpPacer; SSRC and offsets here are throwaway.
        packetizer_type = H264Packetizer if codec is Codec.H264 else H265Packetizer
        packetizer = packetizer_type(0, random.Random(0), mtu=mtu)
        clip = [
            PsFrame(i, tuple(bytes(RtpPacket.parse(p).payload) for p in packetizer.packetize(f)))
            for i, f in enumerate(frames)
        ]
        return cls(clip, codec)

    @classmethod
    def from_ps(cls, clip: PsClip, mtu: int = RTP_PAYLOAD_SIZE) -> EsClip:
        """The video of a PS clip (the capture or a generated one), its audio left out."""
        demuxer = PsDemuxer()
        frames: list[Frame] = []
        for frame in clip.frames:
            frames += demuxer.feed(b"".join(frame.chunks))
            frames += demuxer.end_of_frame()
        frames += demuxer.flush()
        video = [f for f in frames if f.codec in ES_ENCODINGS]
        if demuxer.stats.dropped:
            raise ValueError(f"the PS clip lost {demuxer.stats.dropped} frame(s) in the demuxer")
        return cls.from_frames(video, mtu)


class RtpPacer:
    """RTP headers for frame ``n`` of a looped clip (RFC 3550 §5.1), no I/O.

    The first sequence number and timestamp are random (RFC 3550 §5.1: "SHOULD
    be random") from the injected ``rng``.
    """

    def __init__(self, clip: PsClip, ssrc: int, rng: random.Random,
                 payload_type: int = PS_PAYLOAD_TYPE) -> None:
        self.clip = clip
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.first_sequence = rng.randrange(1 << 16)
        self.first_timestamp = rng.randrange(1 << 32)

    def packets_for_frame(self, n: int) -> list[bytes]:
        frame = self.clip.frames[n % len(self.clip)]
        seq = self.first_sequence + self.clip.packets_before(n)
        ts = (self.first_timestamp + n * TIMESTAMP_STEP) & 0xFFFFFFFF
        last = len(frame.chunks) - 1
        return [
            RtpPacket(
                payload_type=self.payload_type, sequence=(seq + i) & 0xFFFF, timestamp=ts,
                ssrc=self.ssrc, payload=chunk, marker=i == last,
            ).serialize()
            for i, chunk in enumerate(frame.chunks)
        ]


# --------------------------------------------------------------------------
# Where the media goes
# --------------------------------------------------------------------------


def offered_payload_type(offer: SessionDescription, encoding: str) -> int:
    """The payload type the offer's video ``m=`` maps to ``encoding`` (RFC 3264 §6.1: answer one offered).

    Raises ``MediaOfferError`` (488) when it offers none.
    """
    media = offer.first_media("video")
    if media is not None:
        for pt, (name, _clock) in media.rtpmap().items():
            if name.upper() == encoding and str(pt) in media.formats:
                return pt
    raise MediaOfferError(f"offer has no {encoding} payload type", 488)


@dataclass(frozen=True)
class MediaTarget:
    """The transport an offer asks for: ``mode`` is udp, tcp-active or tcp-passive (our role)."""

    mode: str
    host: str
    port: int
    ssrc: int

    @classmethod
    def from_offer(cls, offer: SessionDescription) -> MediaTarget:
        """GB/T 28181-2016 §9.2.2 live view offer -> our side's transport (RFC 4145 §4 roles)."""
        if offer.session_name.strip() != "Play":
            raise MediaOfferError(f"s={offer.session_name!r}: only live Play is simulated", 488)
        media = offer.first_media("video")
        if media is None:
            raise MediaOfferError("offer has no video m= line", 488)
        if offer.media_direction(media) not in ("recvonly", "sendrecv"):
            raise MediaOfferError("offer does not receive video", 488)
        host = offer.media_ip(media)
        if not host:
            raise MediaOfferError("offer has no c= address", 488)
        ssrc = offer.ssrc_int
        if ssrc is None or ssrc > 0xFFFFFFFF:
            raise MediaOfferError("offer has no usable y= SSRC", 488)
        if not media.is_tcp:
            mode = "udp"
        else:
            setup = media.setup or "actpass"
            if setup == "holdconn":
                raise MediaOfferError("a=setup:holdconn: no connection wanted", 488)
            # RFC 4145 §4: the answerer takes the other role; actpass -> we connect.
            mode = "tcp-passive" if setup == "active" else "tcp-active"
        if mode != "tcp-passive" and not 0 < media.port < 65536:
            raise MediaOfferError(f"offer port {media.port} unusable (RFC 3264 §6: 0 rejects)", 488)
        return cls(mode, host, media.port, ssrc)


# --------------------------------------------------------------------------
# Twisted adapters
# --------------------------------------------------------------------------


class _TcpStream(Protocol):
    """One TCP media connection; we are its streaming push producer (backpressure)."""

    def __init__(self, sender: MediaSender) -> None:
        self.sender = sender

    def connectionMade(self) -> None:  # noqa: N802 - Twisted API
        assert self.transport is not None
        self.sender._connected(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted API
        self.sender._disconnected(self, reason)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        pass  # a GB media receiver sends nothing back over TCP (RTCP is not muxed here)

    def write_packets(self, packets: list[bytes]) -> None:
        transport: Any = self.transport
        # RFC 4571 §2: each packet preceded by its 16-bit length.
        transport.write(b"".join(struct.pack("!H", len(p)) + p for p in packets))

    # IPushProducer
    def pauseProducing(self) -> None:  # noqa: N802 - Twisted API
        self.sender.paused = True

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted API
        self.sender.paused = False

    def stopProducing(self) -> None:  # noqa: N802 - Twisted API
        self.sender.paused = True


class _StreamFactory(ClientFactory):
    def __init__(self, sender: MediaSender) -> None:
        self.sender = sender

    def buildProtocol(self, addr: Any) -> Protocol:  # noqa: N802 - Twisted API
        return _TcpStream(self.sender)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:  # noqa: N802
        self.sender._connect_failed(reason)


ListenUdp = Callable[..., Any]
ListenTcp = Callable[..., Any]


class MediaSender:
    """Sends a ``RtpPacer``'s frames in real time to one ``MediaTarget``.

    Call ``open()`` before answering (it binds the UDP/listening TCP port the
    answer names and returns it), ``start()`` on ACK, ``stop()`` on BYE.
    Frame k is due ``k * FRAME_INTERVAL`` after pacing began; a late reactor
    gets at most ``MAX_CATCHUP`` frames at once and the rest are skipped.
    """

    def __init__(self, reactor: Any, pacer: RtpPacer, target: MediaTarget, *, local_ip: str,
                 listen_udp: ListenUdp | None = None, listen_tcp: ListenTcp | None = None) -> None:
        self.reactor = reactor
        self.pacer = pacer
        self.target = target
        self.local_ip = local_ip
        self._listen_udp = listen_udp or reactor.listenUDP
        self._listen_tcp = listen_tcp or reactor.listenTCP
        self.packets = 0
        self.bytes = 0
        self.frames = 0
        self.frames_dropped = 0
        self.paused = False
        self.started = False
        self.stopped = False
        self._udp: Any = None
        self._listening: Any = None
        self._connector: Any = None
        self._stream: _TcpStream | None = None
        self._t0: float | None = None
        self._next = 0
        self._call: Any = None

    def open(self) -> int:
        """Bind what the answer advertises; returns the port for its ``m=`` line."""
        mode = self.target.mode
        if mode == "udp":
            self._udp = self._listen_udp(0, DatagramProtocol(), interface=self.local_ip)
            return int(self._udp.getHost().port)
        if mode == "tcp-passive":
            factory = Factory.forProtocol(lambda: _TcpStream(self))
            self._listening = self._listen_tcp(0, factory, interface=self.local_ip)
            return int(self._listening.getHost().port)
        return ACTIVE_TCP_PORT

    def start(self) -> None:
        if self.started or self.stopped:
            return
        self.started = True
        t = self.target
        log.info("media to {host}:{port} over {mode}, SSRC {ssrc}, payload {pt} {encoding}",
                 host=t.host, port=t.port, mode=t.mode, ssrc=t.ssrc, pt=self.pacer.payload_type,
                 encoding=self.pacer.clip.encoding)
        if t.mode == "udp":
            self._begin()
        elif t.mode == "tcp-active":
            self._connector = self.reactor.connectTCP(
                t.host, t.port, _StreamFactory(self), timeout=CONNECT_TIMEOUT)
        elif self._stream is not None:
            self._begin()  # the platform connected before the ACK

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        stream, self._stream = self._stream, None
        transport: Any = None if stream is None else stream.transport
        if transport is not None:
            transport.unregisterProducer()
            transport.loseConnection()
        if self._connector is not None and stream is None:
            self._connector.disconnect()  # still connecting: give up (IConnector)
        for port in (self._udp, self._listening):
            if port is not None:
                port.stopListening()
        self._udp = self._listening = None

    # -- connection callbacks ------------------------------------------------
    def _connected(self, stream: _TcpStream) -> None:
        transport: Any = stream.transport
        if self.stopped or self._stream is not None:
            log.info("media: refusing a second TCP connection")
            transport.loseConnection()
            return
        self._stream = stream
        transport.registerProducer(stream, True)
        if self.started:
            self._begin()

    def _disconnected(self, stream: _TcpStream, reason: Failure) -> None:
        if stream is not self._stream:
            return
        log.info("media TCP connection to {host} closed: {reason}", host=self.target.host,
                 reason=reason.getErrorMessage())
        self._stream = None
        self.stop()

    def _connect_failed(self, reason: Failure) -> None:
        log.warn("media: cannot connect to {host}:{port}: {reason}", host=self.target.host,
                 port=self.target.port, reason=reason.getErrorMessage())
        self.stop()

    # -- pacing ----------------------------------------------------------------
    def _begin(self) -> None:
        self._t0 = float(self.reactor.seconds())
        self._tick()

    def _tick(self) -> None:
        self._call = None
        if self.stopped or self._t0 is None:
            return
        now = float(self.reactor.seconds())
        # Frame k is due at t0 + k * interval; the epsilon absorbs float drift of the clock.
        due = int((now - self._t0) / FRAME_INTERVAL + 1e-6) + 1
        behind = due - self._next
        if behind > MAX_CATCHUP:
            # Re-anchor rather than burst: the stream runs late but stays whole.
            self._t0 += (behind - MAX_CATCHUP) * FRAME_INTERVAL
            due = self._next + MAX_CATCHUP
            log.debug("media: {n} frame(s) late, re-anchored", n=behind - MAX_CATCHUP)
        while self._next < due and not self.stopped:
            self._send_frame(self._next)
            self._next += 1
        if self.stopped:
            return
        delay = self._t0 + self._next * FRAME_INTERVAL - now
        self._call = self.reactor.callLater(max(0.0, delay), self._tick)

    def _send_frame(self, n: int) -> None:
        if self.paused:
            self.frames_dropped += 1  # live source: a slow reader loses frames, not memory
            return
        packets = self.pacer.packets_for_frame(n)
        if self._stream is not None:
            self._stream.write_packets(packets)
            self.bytes += sum(2 + len(p) for p in packets)
        elif self._udp is not None:
            dest = (self.target.host, self.target.port)
            for p in packets:
                try:
                    self._udp.write(p, dest)
                except OSError as e:
                    log.warn("media datagram to {host}:{port} failed: {error}",
                             host=dest[0], port=dest[1], error=str(e))
                    return
                self.bytes += len(p)
                self.packets += 1
            self.frames += 1
            return
        else:
            return
        self.packets += len(packets)
        self.frames += 1


# --------------------------------------------------------------------------
# Per-simulator factory
# --------------------------------------------------------------------------


class SimMedia:
    """Answers offers for all simulated devices; loads the clip once, on first use."""

    def __init__(self, reactor: Any, rng: random.Random, *, clip: PsClip | None = None,
                 clip_loader: Callable[[], PsClip] = PsClip.default,
                 listen_udp: ListenUdp | None = None, listen_tcp: ListenTcp | None = None) -> None:
        self.reactor = reactor
        self.rng = rng
        self._clip = clip
        self._clip_loader = clip_loader
        self.listen_udp = listen_udp
        self.listen_tcp = listen_tcp

    @property
    def clip(self) -> PsClip:
        if self._clip is None:
            self._clip = self._clip_loader()
        return self._clip

    def preload(self) -> PsClip:
        """Load (or encode) the clip now rather than on the first INVITE, which would wait on it."""
        return self.clip

    def new_sender(self, pacer: RtpPacer, target: MediaTarget, local_ip: str) -> MediaSender:
        """The sender of one answered offer (``gbplatform.simulator.external`` hands it to another process)."""
        return MediaSender(self.reactor, pacer, target, local_ip=local_ip,
                           listen_udp=self.listen_udp, listen_tcp=self.listen_tcp)

    def answer(self, offer: SessionDescription, *, device_id: str,
               local_ip: str) -> tuple[SessionDescription, MediaSender]:
        """The SDP answer (GB/T 28181-2016 §9.2.2, ``y=`` echoed) and an opened, unstarted sender.

        Raises ``MediaOfferError``/``SdpError`` (488) for an offer we cannot
        serve, ``OSError``/``ValueError`` when the clip or a socket fails.
        """
        target = MediaTarget.from_offer(offer)
        clip = self.clip
        payload_type = offered_payload_type(offer, clip.encoding)
        pacer = RtpPacer(clip, target.ssrc, self.rng, payload_type)
        sender = self.new_sender(pacer, target, local_ip)
        port = sender.open()
        try:
            answer = build_gb_answer(offer, device_id=device_id, ip=local_ip, port=port,
                                     encodings=(clip.encoding,))
        except (SdpError, ValueError):
            sender.stop()
            raise
        if clip.encoding == "H264":
            # RFC 6184 §8.1: without packetization-mode the receiver may assume
            # mode 0, which has no FU-A; we fragment, so we say mode 1.
            media = answer.media[0]
            fmtp = ("fmtp", f"{payload_type} packetization-mode=1")
            answer = replace(answer, media=[replace(media, attributes=[*media.attributes, fmtp])])
        return answer, sender

"""Simulator ``--payload es``: raw H.264/H.265 RTP (RFC 6184 / RFC 7798) instead of PS.

The packets a simulated ES camera sends are depacketized with the platform's
``media.depacketize`` (and fed through ``media.ingest.RtpIngest`` with the
payload map read from the answer) back to the access units of the clip.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from gbplatform.app import cli
from gbplatform.app.config import ConfigError
from gbplatform.simulator.clip import ClipError, build_clip, clip_loader, spec_for
from gbplatform.simulator.device import SimConfig, Simulator
from gbplatform.simulator.media import TIMESTAMP_STEP, EsClip, PsClip, RtpPacer
from media import nal
from media.depacketize import Depacketizer
from media.frame import Codec, Frame
from media.ingest import RtpIngest, payload_formats_from_rtpmap
from media.pipeline import FrameDispatcher
from media.ps import PsDemuxer
from media.rtp import RtpPacket
from sip import sdp
from tests.conftest import skip_or_fail
from tests.unit.test_sim_media import SSRC, MediaNet, offer

SMALL = {"seconds": 1, "width": 320, "height": 180}
_AUD = {Codec.H264: nal.H264_NAL_AUD, Codec.H265: nal.H265_NAL_AUD}


@pytest.fixture(scope="session")
def clip_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache test_sim_clip and test_sim_media share: each clip is encoded once per session."""
    return tmp_path_factory.getbasetemp() / "sim-clips"


@pytest.fixture(scope="module", params=["h264", "h265"])
def ps_clip(request: pytest.FixtureRequest, clip_cache: Path) -> PsClip:
    return build_clip(spec_for(request.param, "g711a", **SMALL), clip_cache)


def video_of(clip: PsClip) -> list[Frame]:
    d = PsDemuxer()
    frames = [f for fr in clip.frames for f in d.feed(b"".join(fr.chunks)) + d.end_of_frame()]
    return [f for f in frames + d.flush() if f.codec in (Codec.H264, Codec.H265)]


def nals(frame: Frame) -> list[bytes]:
    """The NAL units of an access unit without AUDs (RFC 6184 §5.1: not carried)."""
    units = [bytes(n) for n in nal.split_nals(frame.data)]
    return [n for n in units if nal.nal_type(frame.codec, n) != _AUD[frame.codec]]


def depacketize(codec: Codec, packets: list[RtpPacket]) -> list[Frame]:
    d = Depacketizer(codec)
    frames = [f for p in packets for f in d.feed(p)] + d.flush()
    assert d.stats.dropped == d.stats.bad_packets == 0
    return frames


def fragment_type(codec: Codec, payload: bytes) -> int:
    return payload[0] & 0x1F if codec is Codec.H264 else (payload[0] >> 1) & 0x3F


# -- the clip and its packets ----------------------------------------------------------------


def test_es_clip_round_trips_through_the_depacketizer(ps_clip: PsClip) -> None:
    source = video_of(ps_clip)
    clip = EsClip.from_ps(ps_clip)
    codec = source[0].codec
    assert (clip.codec, clip.encoding, len(clip)) == (codec, codec.value.upper(), 25)
    pacer = RtpPacer(clip, ssrc=7, rng=random.Random(4), payload_type=98)
    packets = [RtpPacket.parse(p) for n in range(50) for p in pacer.packets_for_frame(n)]
    assert max(len(p.payload) for p in packets) <= 1400
    # One marker per access unit, on its last packet; one timestamp per access unit.
    assert sum(p.marker for p in packets) == 50
    per_ts: dict[int, list[RtpPacket]] = {}
    for p in packets:
        per_ts.setdefault(p.timestamp, []).append(p)
    assert [t - pacer.first_timestamp for t in per_ts] == [n * TIMESTAMP_STEP for n in range(50)]
    assert all([p.marker for p in group] == [False] * (len(group) - 1) + [True]
               for group in per_ts.values())
    # Large NAL units go as FU-A (28) / FU (49), small ones as single NAL unit packets.
    kinds = {fragment_type(codec, bytes(p.payload)) for p in packets}
    assert (28 if codec is Codec.H264 else 49) in kinds and len(kinds) > 1
    frames = depacketize(codec, packets)
    assert len(frames) == 50
    assert [nals(f) for f in frames] == [nals(f) for f in source + source]
    assert [f.keyframe for f in frames] == [f.keyframe for f in source + source]
    assert [f.pts - frames[0].pts for f in frames] == [n * TIMESTAMP_STEP for n in range(50)]
    info = nal.sps_info(codec, frames[0].data)
    assert info is not None and (info.width, info.height) == (320, 180)


def test_es_clip_from_the_real_capture() -> None:
    path = PsClip.default_path()
    if not path.exists():
        skip_or_fail(f"{path} not present")
    ps = PsClip.from_capture(path)
    clip = EsClip.from_ps(ps)
    assert (clip.codec, len(clip)) == (Codec.H264, len(ps))
    pacer = RtpPacer(clip, ssrc=7, rng=random.Random(4), payload_type=98)
    packets = [RtpPacket.parse(p) for n in range(len(clip)) for p in pacer.packets_for_frame(n)]
    assert max(len(p.payload) for p in packets) <= 1400
    frames = depacketize(Codec.H264, packets)
    assert [nals(f) for f in frames] == [nals(f) for f in video_of(ps)]
    info = nal.sps_info(Codec.H264, frames[0].data)
    assert info is not None and (info.width, info.height) == (1920, 1080)


def test_es_clip_refuses_what_it_cannot_stamp(ps_clip: PsClip) -> None:
    video = video_of(ps_clip)
    with pytest.raises(ValueError, match="open on a keyframe"):
        EsClip.from_frames(video[1:])
    reordered = [video[0], video[2], video[1], *video[3:]]  # B-frame order: PTS out of step
    with pytest.raises(ValueError, match="no B-frames"):
        EsClip.from_frames(reordered)
    audio = Frame(Codec.G711A, b"\xd5" * 320, 0, 0, True, 0xC0)
    with pytest.raises(ValueError, match="H.264 or H.265"):
        EsClip.from_frames([audio])
    with pytest.raises(ValueError, match="at least one"):
        EsClip.from_frames([])


# -- the SDP answer ------------------------------------------------------------------------------


def es_offer(payloads: list[str], **kw: Any) -> bytes:
    """``offer()`` with its video payloads replaced by ``payloads`` ("<pt> <name>/<clock>")."""
    body = offer(**kw).decode()
    lines = [line for line in body.split("\r\n") if line and not line.startswith("a=rtpmap")]
    lines = [f"m=video {line.split()[1]} {line.split()[2]} {' '.join(p.split()[0] for p in payloads)}"
             if line.startswith("m=video") else line for line in lines]
    at = lines.index("a=recvonly") + 1
    lines[at:at] = [f"a=rtpmap:{p}" for p in payloads]
    return "".join(line + "\r\n" for line in lines).encode()


PLATFORM_OFFER = ["96 PS/90000", "98 H264/90000", "97 MPEG4/90000", "99 H265/90000"]


def test_the_platform_offer_has_the_es_payloads() -> None:
    # What gbplatform.sessions.live offers; the ES device answers from it (98 H264, 99 H265).
    assert list(sdp.DEFAULT_VIDEO_PAYLOADS) == PLATFORM_OFFER


@pytest.mark.parametrize("proto", ["RTP/AVP", "TCP/RTP/AVP"])
def test_es_device_answers_and_streams_what_the_ingest_plays(ps_clip: PsClip, proto: str) -> None:
    clip = EsClip.from_ps(ps_clip)
    codec = clip.codec
    pt = 98 if codec is Codec.H264 else 99
    m = MediaNet(clip=clip)
    req, resp = m.invite(es_offer(PLATFORM_OFFER, proto=proto,
                                  setup="passive" if proto != "RTP/AVP" else None))
    assert resp.status == 200
    answer = sdp.parse(resp.body)
    media = answer.first_media("video")
    assert media is not None and media.formats == [str(pt)] and media.proto == proto
    assert media.rtpmap() == {pt: (codec.value.upper(), 90000)}
    fmtp = media.attribute("fmtp")
    assert fmtp == ("98 packetization-mode=1" if codec is Codec.H264 else None)
    assert answer.effective_ssrc == SSRC and media.direction == "sendonly"
    m.ack_and_dialog(req, resp)
    if proto == "RTP/AVP":
        m.run_frames(30)
        raw = [d for d, _ in m.udp[0].sent]
    else:
        client: Any = m.reactor.tcpClients[-1]
        host, port, factory, _, _ = client
        proto_: Any = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport: Any = StringTransport()  # type: ignore[no-untyped-call]
        proto_.makeConnection(transport)
        m.run_frames(29)
        stream, raw = transport.value(), []
        while stream:  # RFC 4571 §2 framing
            (n,) = struct.unpack_from("!H", stream)
            raw.append(stream[2:2 + n])
            stream = stream[2 + n:]
    packets = [RtpPacket.parse(d) for d in raw]
    assert {p.payload_type for p in packets} == {pt} and {p.ssrc for p in packets} == {int(SSRC)}
    # The platform side: the payload map read from the answer, then RtpIngest.
    frames: list[Frame] = []

    class Collect(FrameDispatcher):
        def input_frame(self, frame: Frame, now: float = 0.0) -> None:
            frames.append(frame)

    ingest = RtpIngest(Collect(), ssrc=int(SSRC))
    ingest.set_payload_formats(payload_formats_from_rtpmap(media.rtpmap()))
    for d in raw:
        ingest.datagram(d, 0.0)
    ingest.close(1.0)
    source = video_of(ps_clip)
    assert len(frames) == sum(p.marker for p in packets) >= 30
    assert {f.codec for f in frames} == {codec}  # video only: the PS clip's G.711 is left out
    assert [nals(f) for f in frames] == [nals(source[n % 25]) for n in range(len(frames))]
    assert ingest.stats.unknown_payload_type == ingest.dropped_frames == 0


def test_es_answer_uses_the_offered_payload_type(ps_clip: PsClip) -> None:
    clip = EsClip.from_ps(ps_clip)
    name = clip.encoding
    m = MediaNet(clip=clip)
    req, resp = m.invite(es_offer(["96 PS/90000", f"100 {name}/90000"]))
    assert resp.status == 200
    media = sdp.parse(resp.body).first_media("video")
    assert media is not None and media.rtpmap() == {100: (name, 90000)}
    m.ack_and_dialog(req, resp)
    m.run_frames(2)
    assert {RtpPacket.parse(d).payload_type for d, _ in m.udp[0].sent} == {100}


@pytest.mark.parametrize("payloads", [["96 PS/90000"], ["96 PS/90000", "97 MPEG4/90000"]])
def test_an_offer_without_the_es_payload_gets_488(ps_clip: PsClip, payloads: list[str]) -> None:
    clip = EsClip.from_ps(ps_clip)
    other = "99 H265/90000" if clip.codec is Codec.H264 else "98 H264/90000"
    m = MediaNet(clip=clip)
    _, resp = m.invite(es_offer([*payloads, other]))
    assert resp.status == 488
    assert m.sim.devices[0].plays == {} and m.udp == []  # refused before binding a port


def test_a_ps_device_answers_the_offered_ps_payload_type() -> None:
    m = MediaNet()
    req, resp = m.invite(es_offer(["98 H264/90000", "100 PS/90000"]))
    media = sdp.parse(resp.body).first_media("video")
    assert media is not None and media.rtpmap() == {100: ("PS", 90000)}
    m.ack_and_dialog(req, resp)
    m.run_frames(1)
    assert {RtpPacket.parse(d).payload_type for d, _ in m.udp[0].sent} == {100}


# -- the simulate option ---------------------------------------------------------------------


def test_simulate_payload_option_reaches_the_simulator(
        clip_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # h264 + g711u: the PS clip test_sim_clip encodes (shared cache), its audio dropped.
    args = cli.build_parser().parse_args(["simulate", "--clip", "h264", "--audio", "g711u",
                                          "--payload", "es"])
    config = SimConfig.from_args(args)
    assert (config.clip, config.payload) == ("h264", "es")
    assert SimConfig.from_args(cli.build_parser().parse_args(["simulate"])).payload == "ps"
    monkeypatch.setenv("GBP_SIM_CLIP_CACHE", str(clip_cache))
    clip = Simulator(config, Clock(), random.Random(1)).media.preload()
    assert isinstance(clip, EsClip) and (clip.encoding, len(clip)) == ("H264", 100)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["simulate", "--payload", "ts"])


def test_payload_choices_are_checked() -> None:
    with pytest.raises(ConfigError, match="payload must be one of"):
        SimConfig(payload="ts")
    with pytest.raises(ClipError, match="payload 'ts'"):
        clip_loader("h264", payload="ts")
    assert clip_loader("capture", payload="ps") == PsClip.default

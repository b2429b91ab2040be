"""Our PS demuxer agrees with ffprobe (ffmpeg's mpegps demuxer + H.264 parser) on both captures.

The PS carried in each capture's RTP is written to a file; ffprobe lists its
video packets (one per access unit) with pts and key flags, and the picture
size. ``PsDemuxer`` fed the same bytes must give the same frames: count,
keyframe positions, pts, and the SPS resolution.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from media import nal
from media.frame import Frame
from media.framing import Rfc4571Framer
from media.ps import PsDemuxer
from media.rtp import RtpPacket
from tests.media_captures import tcp_stream, udp_payloads


def _ffprobe(path: Path) -> dict[str, Any]:
    if shutil.which("ffprobe") is None:
        pytest.fail("ffprobe is missing: scripts/test.sh installs Debian's ffmpeg")
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height:packet=pts,flags", "-of", "json", str(path)],
        capture_output=True, timeout=60, check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _complete_frames(packets: list[RtpPacket]) -> bytes:
    """The PS of every frame whose last packet (marker bit) arrived: the captures end mid-frame."""
    out: list[bytes] = []
    frame: list[bytes] = []
    for p in packets:
        frame.append(bytes(p.payload))
        if p.marker:
            out.extend(frame)
            frame = []
    return b"".join(out)


def _agree(ps: bytes, tmp_path: Path) -> int:
    path = tmp_path / "capture.ps"
    path.write_bytes(ps)
    probe = _ffprobe(path)
    demuxer = PsDemuxer()
    frames: list[Frame] = [*demuxer.feed(ps), *demuxer.flush()]
    stream = probe["streams"][0]
    assert stream["codec_name"] == "h264"
    packets = probe["packets"]
    assert len(frames) == len(packets)
    assert [f.keyframe for f in frames] == ["K" in p["flags"] for p in packets]
    assert [f.pts for f in frames] == [int(p["pts"]) for p in packets]
    for f in frames:
        if f.keyframe:
            info = nal.sps_info(f.codec, f.data)
            assert info is not None and (info.width, info.height) == (stream["width"], stream["height"])
    return len(frames)


def test_udp_capture_matches_ffprobe(shared_dir: Path, tmp_path: Path) -> None:
    packets = [RtpPacket.parse(p) for _, p in udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap")]
    packets.sort(key=lambda p: p.sequence)  # no wrap within these 10 s (test_media_ps checks)
    assert _agree(_complete_frames(packets), tmp_path) == 250


def test_tcp_capture_matches_ffprobe(shared_dir: Path, tmp_path: Path) -> None:
    framer = Rfc4571Framer()
    raw = framer.feed(tcp_stream(shared_dir / "captures" / "zlm_ps_rtp_tcp_1080p.pcap"))
    packets = [RtpPacket.parse(bytes(r)) for r in raw]
    assert _agree(_complete_frames(packets), tmp_path) == 254

"""JPEG snapshots of real keyframes from ZLMediaKit's 1080p PS-over-RTP capture."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import av
import pytest

from media.frame import Codec, Frame
from media.ingest import RtpIngest
from media.pipeline import FrameDispatcher
from media.snapshot import SnapshotError, snapshot_jpeg
from tests.media_captures import udp_payloads


class Collector:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def input_frame(self, frame: Frame) -> None:
        self.frames.append(frame)


def capture_frames(shared_dir: Path) -> list[Frame]:
    """The capture's frames, in order, through the real receive path."""
    sink = Collector()
    dispatcher = FrameDispatcher()
    dispatcher.add_sink(sink)
    ingest = RtpIngest(dispatcher)
    now = 0.0
    for _, payload in udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap"):
        ingest.datagram(payload, now)
        now += 0.0025
    return sink.frames


@pytest.fixture(scope="module")
def frames(shared_dir: Path) -> list[Frame]:
    return capture_frames(shared_dir)


@pytest.fixture(scope="module")
def keyframe(frames: list[Frame]) -> Frame:
    return next(f for f in frames if f.keyframe)


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(jpeg), mode="r") as container:
        picture = next(container.decode(video=0))
        return picture.width, picture.height


def test_keyframe_gives_a_full_size_jpeg(keyframe: Frame) -> None:
    jpeg = snapshot_jpeg(keyframe)
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"  # SOI ... EOI (ITU-T T.81 §B.1.1.3)
    assert jpeg_size(jpeg) == (1920, 1080)


def test_max_width_scales_down_keeping_the_aspect_ratio(keyframe: Frame) -> None:
    assert jpeg_size(snapshot_jpeg(keyframe, max_width=640)) == (640, 360)
    # A picture already narrower is left alone.
    assert jpeg_size(snapshot_jpeg(keyframe, max_width=4096)) == (1920, 1080)


def test_quality_is_the_quantiser_scale(keyframe: Frame) -> None:
    fine, coarse = snapshot_jpeg(keyframe, quality=2), snapshot_jpeg(keyframe, quality=31)
    assert len(fine) > len(coarse)
    for bad in (1, 32):
        with pytest.raises(ValueError, match="quality"):
            snapshot_jpeg(keyframe, quality=bad)


def test_non_keyframe_is_refused(frames: list[Frame]) -> None:
    inter = next(f for f in frames if not f.keyframe)
    with pytest.raises(SnapshotError, match="keyframe"):
        snapshot_jpeg(inter)


def test_keyframe_without_parameter_sets_or_garbage_is_refused(keyframe: Frame) -> None:
    garbage = Frame(Codec.H264, b"\x00\x00\x00\x01\x65" + bytes(range(256)) * 4, pts=0, dts=0,
                    keyframe=True, stream_id=0xE0)
    for frame in (garbage, dataclasses.replace(garbage, data=b"not annex b at all"),
                  dataclasses.replace(garbage, codec=Codec.H265)):
        with pytest.raises(SnapshotError):
            snapshot_jpeg(frame)


def test_audio_is_refused() -> None:
    audio = Frame(Codec.G711A, b"\xd5" * 160, pts=0, dts=0, keyframe=True, stream_id=0xC0)
    with pytest.raises(SnapshotError, match="not a video codec"):
        snapshot_jpeg(audio)

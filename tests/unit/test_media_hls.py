"""HLS segmenting (RFC 8216) against ZLMediaKit's real 1080p PS-over-RTP capture."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest

from media.frame import Codec, Frame
from media.hls import HlsError, HlsSegmenter, mux_ts
from media.ingest import RtpIngest
from media.pipeline import FrameDispatcher
from tests.media_captures import udp_payloads


class Collector:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def input_frame(self, frame: Frame) -> None:
        self.frames.append(frame)


@pytest.fixture(scope="module")
def frames(shared_dir: Path) -> list[Frame]:
    """The capture's 250 frames: H.264 1080p at 25 fps (PTS step 3600), GOP 50."""
    sink = Collector()
    dispatcher = FrameDispatcher()
    dispatcher.add_sink(sink)
    ingest = RtpIngest(dispatcher)
    now = 0.0
    for _, payload in udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap"):
        ingest.datagram(payload, now)
        now += 0.0025
    ingest.close(now)
    assert len(sink.frames) == 250 and sink.frames[0].keyframe
    return sink.frames


def feed(seg: HlsSegmenter, frames: list[Frame]) -> HlsSegmenter:
    for frame in frames:
        seg.input_frame(frame)
    return seg


def test_two_second_gops_give_two_second_segments_and_an_exact_playlist(frames: list[Frame]) -> None:
    seg = feed(HlsSegmenter(), frames)
    # Five GOPs: four cut by the next keyframe, the fifth still pending.
    assert [s.sequence for s in seg.segments] == [0, 1, 2, 3]
    assert [s.duration for s in seg.segments] == [2.0] * 4
    assert seg.playlist("?token=t") == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
        + "".join(f"#EXTINF:2.000,\nseg{n}.ts?token=t\n" for n in range(4))
    )
    assert "#EXT-X-ENDLIST" not in seg.playlist()
    assert seg.segment(4) is None and seg.segment(-1) is None


def test_a_segment_is_a_decodable_mpegts_of_one_gop(frames: list[Frame], tmp_path: Path) -> None:
    seg = feed(HlsSegmenter(), frames)
    data = seg.segment(1)
    assert data is not None and data[0] == 0x47 and len(data) % 188 == 0
    path = tmp_path / "seg1.ts"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        assert container.format.name == "mpegts"
        (stream,) = container.streams
        assert stream.type == "video"
        ctx = stream.codec_context
        assert (ctx.name, ctx.width, ctx.height) == ("h264", 1920, 1080)
        pictures = list(container.decode(video=0))
    assert len(pictures) == 50
    assert (pictures[0].width, pictures[0].height) == (1920, 1080)
    # The device's timestamps run on across segments: segment 1 starts 2 s in.
    assert pictures[0].pts is not None and pictures[0].pts - frames[0].pts == 2 * 90_000


def test_window_is_bounded_and_media_sequence_advances(frames: list[Frame]) -> None:
    seg = feed(HlsSegmenter(window=2), frames)
    assert [s.sequence for s in seg.segments] == [2, 3]
    assert seg.media_sequence == 2 and seg.segment(0) is None and seg.segment(3) is not None
    assert "#EXT-X-MEDIA-SEQUENCE:2\n#EXTINF:2.000,\nseg2.ts\n" in seg.playlist()
    # The same clip again, shifted on in time: the numbering carries on.
    shift = frames[-1].pts + 3600 - frames[0].pts
    feed(seg, [Frame(f.codec, f.data, f.pts + shift, f.dts + shift, f.keyframe, f.stream_id) for f in frames])
    assert [s.sequence for s in seg.segments] == [7, 8] and seg.media_sequence == 7


def test_longer_target_duration_spans_gops(frames: list[Frame]) -> None:
    seg = feed(HlsSegmenter(target_duration=3.0), frames)
    # A cut waits for a keyframe at least 3 s on: every other one (4 s).
    assert [s.duration for s in seg.segments] == [4.0, 4.0]
    assert "#EXT-X-TARGETDURATION:4\n" in seg.playlist()


def test_waits_for_a_keyframe_and_ignores_audio(frames: list[Frame]) -> None:
    seg = HlsSegmenter()
    seg.input_frame(Frame(Codec.G711A, b"\xd5" * 160, 0, 0, False, 0xC0))
    feed(seg, frames[1:50])  # no keyframe: nothing to start a segment with
    assert seg.dropped_frames == 49 and not seg.segments
    feed(seg, frames[50:])
    assert [s.sequence for s in seg.segments] == [0, 1, 2]
    assert seg.playlist().startswith("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n")


def test_an_oversized_segment_is_dropped(frames: list[Frame]) -> None:
    seg = feed(HlsSegmenter(max_segment_frames=30), frames)
    assert not seg.segments and seg.dropped_frames == 250  # every GOP overflows


def test_empty_playlist_and_bad_arguments() -> None:
    assert HlsSegmenter().playlist() == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
    )
    with pytest.raises(ValueError, match="window"):
        HlsSegmenter(window=0)
    with pytest.raises(ValueError, match="target_duration"):
        HlsSegmenter(target_duration=0)
    with pytest.raises(HlsError, match="at least one frame"):
        mux_ts([])
    with pytest.raises(HlsError, match="g711a"):
        mux_ts([Frame(Codec.G711A, b"\xd5", 0, 0, False, 0xC0)])


def test_muxing_opens_no_encoder(frames: list[Frame]) -> None:
    # add_mux_stream carries codec parameters only: a segment muxes even where
    # an encoder would refuse a 0x0 picture, and no codec context exists.
    data = mux_ts(frames[:50])
    assert data[0] == 0x47
    buf = av.open(io.BytesIO(), "w", format="mpegts")
    stream = buf.add_mux_stream("h264")
    assert stream.codec_context is None
    buf.close()

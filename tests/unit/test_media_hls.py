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
from tests.media_audio import aac_frames, g711_frames, merge_by_dts
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


# -- audio ---------------------------------------------------------------------------------------


def with_audio(frames: list[Frame], codec: Codec, start: float = 0.0) -> list[Frame]:
    first = frames[0].pts + int(start * 90_000)
    seconds = (frames[-1].pts + 3600 - first) / 90_000
    sound = aac_frames(seconds, first) if codec is Codec.AAC else g711_frames(codec, seconds, first)
    return merge_by_dts(frames, sound)


def decode_segment(data: bytes) -> tuple[dict[str, tuple[str, int]], dict[str, list[float]]]:
    """({type: (codec, rate)}, {type: frame times}) of one segment, decoded by PyAV."""
    times: dict[str, list[float]] = {"video": [], "audio": []}
    with av.open(io.BytesIO(data)) as container:
        streams = {s.type: (s.codec_context.name, getattr(s.codec_context, "sample_rate", 0) or 0)
                   for s in container.streams}
        for frame in container.decode(*container.streams):
            kind = "audio" if isinstance(frame, av.AudioFrame) else "video"
            assert frame.time is not None
            times[kind].append(frame.time)
    return streams, times


@pytest.mark.parametrize(("codec", "rate"), [(Codec.G711A, 16000), (Codec.G711U, 16000), (Codec.AAC, 44100)])
def test_segments_carry_aac_audio_next_to_the_video(frames: list[Frame], codec: Codec, rate: int) -> None:
    seg = feed(HlsSegmenter(), with_audio(frames, codec))
    # Audio cuts nothing: the same four 2 s segments as video alone.
    assert [s.duration for s in seg.segments] == [2.0] * 4 and seg.dropped_audio == 0
    assert not any(s.discontinuity for s in seg.segments)
    assert seg.playlist() == feed(HlsSegmenter(), frames).playlist()
    if codec is not Codec.AAC:
        assert seg.transcoder is not None and seg.transcoder.codec is codec
    for n in (0, 2):
        data = seg.segment(n)
        assert data is not None
        streams, times = decode_segment(data)
        assert streams == {"video": ("h264", 0), "audio": ("aac", rate)}
        assert len(times["video"]) == 50
        # About 2 s of audio, lined up with the segment's video (the encoder's delay aside).
        span = times["audio"][-1] - times["audio"][0]
        assert 1.8 < span < 2.1, span
        assert abs(times["audio"][0] - times["video"][0]) < 0.2


def test_audio_before_the_first_keyframe_is_ignored(frames: list[Frame]) -> None:
    seg = HlsSegmenter()
    mixed = with_audio(frames[1:], Codec.G711A)
    first_key = next(i for i, f in enumerate(mixed) if f.keyframe and f.codec.is_video)
    feed(seg, mixed[:first_key])
    assert seg.transcoder is None and seg.dropped_frames == 49 and seg.dropped_audio == 0
    feed(seg, mixed[first_key:])
    assert [s.sequence for s in seg.segments] == [0, 1, 2]


def test_audio_appearing_later_marks_a_discontinuity(frames: list[Frame]) -> None:
    seg = feed(HlsSegmenter(window=3), with_audio(frames, Codec.G711A, start=5.0))
    assert [s.discontinuity for s in seg.segments] == [False, True, False]  # segments 1, 2, 3
    assert seg.discontinuity_sequence == 0
    assert "#EXTINF:2.000,\nseg1.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\nseg2.ts\n" in seg.playlist()
    # The clip again: once the marked segment leaves the window, the discontinuity sequence counts it.
    shift = frames[-1].pts + 3600 - frames[0].pts
    feed(seg, [Frame(f.codec, f.data, f.pts + shift, f.dts + shift, f.keyframe, f.stream_id)
               for f in with_audio(frames, Codec.G711A)])
    assert seg.discontinuity_sequence == 1 and not any(s.discontinuity for s in seg.segments)
    assert "#EXT-X-MEDIA-SEQUENCE:6\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n" in seg.playlist()


def test_audio_off_and_bad_audio_is_dropped(frames: list[Frame]) -> None:
    seg = feed(HlsSegmenter(audio=False), with_audio(frames[:60], Codec.AAC))
    data = seg.segment(0)
    assert data is not None and set(decode_segment(data)[0]) == {"video"}
    seg = HlsSegmenter()
    feed(seg, frames[:10])
    seg.input_frame(Frame(Codec.AAC, b"\x21\x10", frames[10].pts, frames[10].pts, True, 0xC0))
    good = with_audio(frames[10:60], Codec.AAC)
    feed(seg, good)
    late = next(f for f in good if f.codec is Codec.AAC)
    seg.input_frame(late)  # its DTS does not rise: the muxer would refuse the segment
    assert seg.dropped_audio == 2 and len(seg.segments) == 1


def test_mux_ts_refuses_g711_audio(frames: list[Frame]) -> None:
    with pytest.raises(HlsError, match="cannot mux g711a audio into MPEG-TS"):
        mux_ts([frames[0], Frame(Codec.G711A, b"\xd5" * 320, frames[0].pts, frames[0].pts, True, 0xC0)])

"""The simulator's generated clip: PyAV-encoded pattern + G.711 tone, muxed to PS, cached."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from gbplatform.app import cli
from gbplatform.app.config import ConfigError
from gbplatform.simulator import clip as sim_clip
from gbplatform.simulator.clip import (
    ClipError,
    ClipSpec,
    build_clip,
    clip_loader,
    encode_video,
    load_packs,
    spec_for,
)
from gbplatform.simulator.device import SimConfig, Simulator
from gbplatform.simulator.media import TIMESTAMP_STEP, PsClip, RtpPacer
from media import nal
from media.frame import Codec, Frame
from media.ps import PsDemuxer
from media.rtp import RtpPacket

SMALL = {"seconds": 1, "width": 320, "height": 180}


@pytest.fixture(scope="session")
def clip_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session, shared with test_sim_media: each clip is encoded once."""
    return tmp_path_factory.getbasetemp() / "sim-clips"


@pytest.fixture(scope="module")
def h265_clip(clip_cache: Path) -> PsClip:
    return build_clip(spec_for("h265", "g711a", **SMALL), clip_cache)


def demux_payloads(payloads: Iterable[bytes | memoryview]) -> tuple[list[Frame], PsDemuxer]:
    d = PsDemuxer()
    frames = [f for p in payloads for f in d.feed(p)]
    return frames + d.flush(), d


def test_h265_clip_decodes_to_keyframes_and_audio(h265_clip: PsClip) -> None:
    assert len(h265_clip) == 25
    chunks = [c for f in h265_clip.frames for c in f.chunks]
    assert max(len(c) for c in chunks) <= 1400
    assert all(f.chunks[0].startswith(b"\x00\x00\x01\xba") for f in h265_clip.frames)
    assert b"\x00\x00\x01\xbc" in h265_clip.frames[0].chunks[0]  # PsClip.from_rtp's keyframe test
    frames, d = demux_payloads(chunks)
    assert d.stats.resyncs == d.stats.dropped == 0
    assert d.stream_types == {0xE0: 0x24, 0xC0: 0x90}
    video = [f for f in frames if f.codec is Codec.H265]
    audio = [f for f in frames if f.codec is Codec.G711A]
    assert len(video) == len(audio) == 25
    assert [f.pts for f in video] == [n * TIMESTAMP_STEP for n in range(25)]
    assert [f.keyframe for f in video] == [True] + [False] * 24
    info = nal.sps_info(Codec.H265, video[0].data)
    assert info is not None and (info.width, info.height) == (320, 180)
    assert [f.pts for f in audio] == [n * TIMESTAMP_STEP for n in range(25)]
    assert {len(f.data) for f in audio} == {320}  # 40 ms at 8 kHz
    # A 1 kHz tone at 8 kHz repeats every 8 samples; 0xD5 is A-law's zero.
    assert audio[3].data == audio[3].data[:8] * 40 and len(set(audio[3].data)) >= 4


def test_each_ps_frame_holds_its_video_and_audio_pack(h265_clip: PsClip) -> None:
    for n in (0, 1, 24):
        d = PsDemuxer()
        d.feed(b"".join(h265_clip.frames[0].chunks))  # the PSM: codecs known from here on
        d.flush()
        frames = [f for c in h265_clip.frames[n].chunks for f in d.feed(c)] + d.flush()
        assert Counter(f.codec for f in frames) == {Codec.H265: 1, Codec.G711A: 1}
        assert {f.pts for f in frames} == {n * TIMESTAMP_STEP}


def test_looped_rtp_stream_demuxes_whole(h265_clip: PsClip) -> None:
    pacer = RtpPacer(h265_clip, ssrc=1, rng=random.Random(2))
    packets = [RtpPacket.parse(p) for n in range(50) for p in pacer.packets_for_frame(n)]
    assert sum(p.marker for p in packets) == 50
    frames, d = demux_payloads([p.payload for p in packets])
    assert Counter((f.codec, f.keyframe) for f in frames) == {
        (Codec.H265, True): 2, (Codec.H265, False): 48, (Codec.G711A, True): 50}
    assert d.stats.resyncs == 0


def test_h264_without_audio_and_with_mulaw(clip_cache: Path) -> None:
    for audio, types in (("none", {0xE0: 0x1B}), ("g711u", {0xE0: 0x1B, 0xC0: 0x91})):
        clip = build_clip(spec_for("h264", audio, **SMALL), clip_cache)
        frames, d = demux_payloads([c for f in clip.frames for c in f.chunks])
        assert d.stream_types == types
        assert len(frames) == 25 * len(types)


def test_the_cache_is_used_and_keyed(h265_clip: PsClip, clip_cache: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def no_encoding(spec: ClipSpec) -> list[list[bytes]]:
        raise AssertionError("encoded again")

    monkeypatch.setattr(sim_clip, "generate_packs", no_encoding)
    again = build_clip(spec_for("h265", "g711a", **SMALL), clip_cache)
    assert again.frames == h265_clip.frames
    key = spec_for("h265", "g711a", **SMALL).cache_key
    assert key == "h265-g711a-320x180-1s-gop25-1000000bps-1000hz-v1"
    assert (clip_cache / f"{key}.ps").stat().st_size == sum(
        len(c) for f in h265_clip.frames for c in f.chunks)
    assert spec_for("h265", "g711u", **SMALL).cache_key != key


def test_a_broken_cache_is_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[ClipSpec] = []

    def fake_generate(spec: ClipSpec) -> list[list[bytes]]:
        made.append(spec)
        return [[b"abc", b"de"], [b"f"]]

    monkeypatch.setattr(sim_clip, "generate_packs", fake_generate)
    spec = ClipSpec()
    ps, index = tmp_path / f"{spec.cache_key}.ps", tmp_path / f"{spec.cache_key}.json"
    assert load_packs(spec, tmp_path) == [[b"abc", b"de"], [b"f"]]
    assert ps.read_bytes() == b"abcdef"
    assert json.loads(index.read_text())["packs"] == [[3, 2], [1]]
    assert load_packs(spec, tmp_path) == [[b"abc", b"de"], [b"f"]] and len(made) == 1
    ps.write_bytes(b"abcd")  # cut short
    assert load_packs(spec, tmp_path) == [[b"abc", b"de"], [b"f"]] and len(made) == 2
    index.write_text("{not json")
    assert load_packs(spec, tmp_path) == [[b"abc", b"de"], [b"f"]] and len(made) == 3
    assert ps.read_bytes() == b"abcdef"


def test_an_unwritable_cache_still_plays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_clip, "generate_packs", lambda spec: [[b"\x00\x00\x01\xbc"]])
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    clip = build_clip(ClipSpec(), blocker / "cache")
    assert clip.frames[0].chunks == (b"\x00\x00\x01\xbc",)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GBP_SIM_CLIP_CACHE", str(tmp_path / "x"))
    assert sim_clip.default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("GBP_SIM_CLIP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert sim_clip.default_cache_dir() == tmp_path / "gbplatform" / "sim-clips"


def test_missing_encoder_is_a_clip_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import av

    monkeypatch.setattr(av, "codecs_available", set())
    with pytest.raises(ClipError, match="no libx265 encoder"):
        encode_video(spec_for("h265", "none", **SMALL))


@pytest.mark.parametrize(("args", "message"), [
    (("vp9",), "clip 'vp9' is not generated"),
    (("capture",), "clip 'capture' is not generated"),
    (("h264", "opus"), "audio 'opus'"),
])
def test_bad_names(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ClipError, match=message):
        spec_for(*args)


def test_bad_specs() -> None:
    with pytest.raises(ClipError, match="even"):
        ClipSpec(width=321)
    with pytest.raises(ClipError, match="no encoder for audio"):
        ClipSpec(audio=Codec.AAC)
    with pytest.raises(ClipError, match="positive"):
        ClipSpec(seconds=0)


def test_loader_choices(clip_cache: Path) -> None:
    assert clip_loader("capture", "none") == PsClip.default
    with pytest.raises(ClipError):
        clip_loader("h265", "aac")


# -- simulator option ---------------------------------------------------------------------


def test_simulate_clip_options_reach_the_simulator(
        clip_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = cli.build_parser().parse_args(["simulate", "--clip", "h264", "--audio", "g711u"])
    config = SimConfig.from_args(args)
    assert (config.clip, config.audio) == ("h264", "g711u")
    defaults = SimConfig.from_args(cli.build_parser().parse_args(["simulate"]))
    assert (defaults.clip, defaults.audio) == ("capture", "g711a")
    monkeypatch.setenv("GBP_SIM_CLIP_CACHE", str(clip_cache))
    sim = Simulator(config, Clock(), random.Random(1))
    clip = sim.media.preload()
    frames, d = demux_payloads([c for f in clip.frames for c in f.chunks])
    assert d.stream_types == {0xE0: 0x1B, 0xC0: 0x91}
    info = nal.sps_info(Codec.H264, frames[0].data)
    assert info is not None and (info.width, info.height) == (640, 360)
    assert len(clip) == 100  # 4 s at 25 fps


@pytest.mark.parametrize("field", [{"clip": "h266"}, {"audio": "opus"}])
def test_simulate_config_rejects_unknown_clips(field: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="clip must be one of"):
        SimConfig(**field)  # type: ignore[arg-type]

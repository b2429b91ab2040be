"""A test clip made at run time for the device simulator: PyAV encodes, we mux PS.

Theory of operation
-------------------
``generate_packs`` builds a few seconds of media the way a GB/T 28181 camera
sends it:

* video: FFmpeg's ``testsrc2`` pattern (a moving picture with a frame
  counter), encoded by libx264 or libx265 with a fixed GOP, no B-frames and
  parameter sets repeated before every keyframe (``repeat-headers``), as an
  IPC does so that a viewer can join at any keyframe;
* audio: a sine tone (``sine`` source, 8 kHz mono) encoded as G.711 A-law or
  µ-law (GB/T 28181-2016 §6.1.2), cut into 40 ms blocks of 320 bytes;
* both muxed by ``media.psmux.PsMuxer`` (GB/T 28181-2016 Annex C): one pack
  per video frame, system header + PSM before each keyframe, and each audio
  block in its own pack right after the video frame whose 40 ms it covers.

``RtpPacer`` stamps one RTP timestamp per ``PsFrame`` at 25 fps, so frame
``n`` of the clip is the video pack of frame ``n`` plus the audio pack(s)
whose PTS falls in ``[n, n + 1) x 3600`` ticks; each pack is cut into RTP
payloads of at most 1400 bytes on its own (a packet never spans two packs, as
cameras and ZLMediaKit send it). The platform's ``PsDemuxer`` takes the audio
from the byte stream whatever the RTP grouping.

Encoding H.265 takes about a second, so the packs are cached on disk under
``default_cache_dir()`` (``$GBP_SIM_CLIP_CACHE``, else
``$XDG_CACHE_HOME/gbplatform/sim-clips``, else ``~/.cache/...``), keyed by
every parameter that changes the bytes: ``<key>.ps`` is the program stream
(playable by ffplay) and ``<key>.json`` the pack lengths per frame, written
last so a half-written cache is never used.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from gbplatform.simulator.media import FRAME_INTERVAL, TIMESTAMP_STEP, EsClip, PsClip, PsFrame
from media import nal
from media.frame import Codec, Frame
from media.psmux import AUDIO_STREAM_ID, RTP_PAYLOAD_SIZE, VIDEO_STREAM_ID, PsMuxer, split_payload

__all__ = [
    "AUDIO_CHOICES",
    "CLIP_CHOICES",
    "PAYLOAD_CHOICES",
    "ClipError",
    "ClipSpec",
    "build_clip",
    "clip_loader",
    "default_cache_dir",
    "encode_audio",
    "encode_video",
    "generate_packs",
    "load_packs",
    "spec_for",
    "write_ps",
]

log = Logger()

CLIP_CHOICES = ("capture", "h264", "h265")
AUDIO_CHOICES = ("g711a", "g711u", "none")
PAYLOAD_CHOICES = ("ps", "es")  # PS over RTP (GB/T 28181 Annex C), or raw H.264/H.265 RTP
FPS = round(1 / FRAME_INTERVAL)  # the pacer's rate: one PsFrame per RTP timestamp
AUDIO_RATE = 8000  # G.711 (ITU-T G.711 §1): 8 kHz, one byte per sample
AUDIO_BLOCK_TICKS = TIMESTAMP_STEP  # 40 ms blocks: one per video frame
CACHE_FORMAT = 1  # bump when the layout of the cached packs changes

_ENCODERS = {Codec.H264: "libx264", Codec.H265: "libx265"}
_AUDIO_ENCODERS = {Codec.G711A: "pcm_alaw", Codec.G711U: "pcm_mulaw"}
_VIDEO_NAMES = {"h264": Codec.H264, "h265": Codec.H265}
_AUDIO_NAMES: dict[str, Codec | None] = {"g711a": Codec.G711A, "g711u": Codec.G711U, "none": None}


class ClipError(ValueError):
    """The clip cannot be made: an encoder is missing or produced something unusable."""


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides the clip's bytes (and so its cache key)."""

    video: Codec = Codec.H264
    audio: Codec | None = Codec.G711A
    width: int = 640
    height: int = 360
    seconds: int = 4
    gop: int = FPS
    bit_rate: int = 1_000_000
    tone_hz: int = 1000

    def __post_init__(self) -> None:
        if self.video not in _ENCODERS:
            raise ClipError(f"no encoder for video {self.video.value}")
        if self.audio is not None and self.audio not in _AUDIO_ENCODERS:
            raise ClipError(f"no encoder for audio {self.audio.value}")
        if self.width % 2 or self.height % 2 or not (16 <= self.width <= 4096
                                                     and 16 <= self.height <= 4096):
            raise ClipError(f"size {self.width}x{self.height}: even, 16..4096 wanted (4:2:0)")
        if self.seconds < 1 or self.gop < 1 or self.bit_rate < 10_000:
            raise ClipError("seconds, GOP and bit rate must be positive")

    @property
    def frames(self) -> int:
        return self.seconds * FPS

    @property
    def cache_key(self) -> str:
        audio = self.audio.value if self.audio is not None else "none"
        return (f"{self.video.value}-{audio}-{self.width}x{self.height}-{self.seconds}s"
                f"-gop{self.gop}-{self.bit_rate}bps-{self.tone_hz}hz-v{CACHE_FORMAT}")


def spec_for(clip: str, audio: str = "g711a", **overrides: Any) -> ClipSpec:
    """The spec of ``--clip h264|h265`` with ``--audio g711a|g711u|none``."""
    if clip not in _VIDEO_NAMES:
        raise ClipError(f"clip {clip!r} is not generated (one of h264, h265)")
    if audio not in _AUDIO_NAMES:
        raise ClipError(f"audio {audio!r} is not one of {', '.join(AUDIO_CHOICES)}")
    return ClipSpec(video=_VIDEO_NAMES[clip], audio=_AUDIO_NAMES[audio], **overrides)


# --------------------------------------------------------------------------
# Encoding (PyAV)
# --------------------------------------------------------------------------


def _lavfi(graph: str) -> Any:
    import av

    try:
        return av.open(graph, format="lavfi")
    except (av.FFmpegError, ValueError) as e:
        raise ClipError(f"cannot open the lavfi source {graph!r}: {e}") from e


def encode_video(spec: ClipSpec) -> list[Frame]:
    """``spec.frames`` Annex B access units in decode order, 90 kHz PTS/DTS from 0."""
    import av
    from av.video.frame import PictureType

    encoder = _ENCODERS[spec.video]
    if encoder not in av.codecs_available:
        raise ClipError(f"PyAV has no {encoder} encoder")
    ctx: Any = av.CodecContext.create(encoder, "w")
    ctx.width, ctx.height, ctx.pix_fmt = spec.width, spec.height, "yuv420p"
    ctx.time_base = Fraction(1, FPS)
    ctx.framerate = Fraction(FPS)
    ctx.gop_size = spec.gop
    ctx.bit_rate = spec.bit_rate
    # No B-frames and a fixed GOP, as IPCs stream; in-band parameter sets on
    # every keyframe (x264 repeats them when there is no global header).
    gop = f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0:bframes=0"
    if spec.video is Codec.H265:
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "x265-params":
                       f"{gop}:open-gop=0:repeat-headers=1:log-level=error"}
    else:
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": gop}
    src = _lavfi(f"testsrc2=size={spec.width}x{spec.height}:rate={FPS}:duration={spec.seconds}")
    packets: list[Any] = []
    try:
        for i, picture in enumerate(src.decode(video=0)):
            if i >= spec.frames:
                break
            picture.pts = i
            picture.pict_type = PictureType.NONE  # lavfi marks every frame I: x264 would make all IDR
            packets += ctx.encode(picture)
        packets += ctx.encode(None)
    except av.FFmpegError as e:
        raise ClipError(f"{encoder} failed: {e}") from e
    finally:
        src.close()
    frames = [
        Frame(spec.video, data := bytes(p), p.pts * TIMESTAMP_STEP, p.dts * TIMESTAMP_STEP,
              nal.is_keyframe(spec.video, data), VIDEO_STREAM_ID)
        for p in packets
    ]
    if len(frames) != spec.frames or not frames[0].keyframe:
        raise ClipError(f"{encoder} gave {len(frames)} frames for {spec.frames}, "
                        f"first keyframe {frames[0].keyframe if frames else None}")
    if nal.sps_info(spec.video, frames[0].data) is None:
        raise ClipError(f"{encoder}: no parameter sets in the first keyframe")
    return frames


def encode_audio(spec: ClipSpec) -> list[Frame]:
    """The tone as G.711 blocks of 40 ms (320 bytes), PTS ``i x 3600`` from 0."""
    import av

    if spec.audio is None:
        return []
    encoder = _AUDIO_ENCODERS[spec.audio]
    ctx: Any = av.CodecContext.create(encoder, "w")
    ctx.sample_rate, ctx.format, ctx.layout = AUDIO_RATE, "s16", "mono"
    src = _lavfi(f"sine=frequency={spec.tone_hz}:sample_rate={AUDIO_RATE}:duration={spec.seconds}")
    out = bytearray()
    try:
        for samples in src.decode(audio=0):
            for packet in ctx.encode(samples):
                out += bytes(packet)
        for packet in ctx.encode(None):
            out += bytes(packet)
    except av.FFmpegError as e:
        raise ClipError(f"{encoder} failed: {e}") from e
    finally:
        src.close()
    block = AUDIO_RATE * AUDIO_BLOCK_TICKS // 90_000
    wanted = spec.seconds * AUDIO_RATE
    if len(out) < wanted:
        raise ClipError(f"{encoder} gave {len(out)} samples for {wanted}")
    return [
        Frame(spec.audio, bytes(out[pos:pos + block]), i * AUDIO_BLOCK_TICKS,
              i * AUDIO_BLOCK_TICKS, True, AUDIO_STREAM_ID)
        for i, pos in enumerate(range(0, wanted, block))
    ]


def generate_packs(spec: ClipSpec) -> list[list[bytes]]:
    """Per video frame: its PS pack, then the packs of the audio blocks in its interval."""
    video = encode_video(spec)
    audio = encode_audio(spec)
    muxer = PsMuxer(spec.video, spec.audio)
    frames: list[list[bytes]] = [[muxer.mux(f)] for f in video]
    for block in audio:
        n = min(block.pts // TIMESTAMP_STEP, len(frames) - 1)
        frames[n].append(muxer.mux(block))
    return frames


# --------------------------------------------------------------------------
# Cache and PsClip
# --------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$GBP_SIM_CLIP_CACHE``, else ``$XDG_CACHE_HOME/gbplatform/sim-clips`` (``~/.cache``)."""
    explicit = os.environ.get("GBP_SIM_CLIP_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "gbplatform" / "sim-clips"


def _read_cache(ps_path: Path, index_path: Path) -> list[list[bytes]] | None:
    try:
        index = json.loads(index_path.read_text())
        data = ps_path.read_bytes()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warn("clip cache {path} unreadable, regenerating: {error}", path=str(index_path),
                 error=str(e))
        return None
    lengths = index.get("packs") if isinstance(index, dict) else None
    if (not isinstance(lengths, list) or not lengths
            or sum(sum(f) for f in lengths) != len(data)):
        log.warn("clip cache {path} does not match its index, regenerating", path=str(ps_path))
        return None
    frames: list[list[bytes]] = []
    pos = 0
    for frame in lengths:
        packs = []
        for n in frame:
            packs.append(data[pos:pos + n])
            pos += n
        frames.append(packs)
    return frames


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_packs(spec: ClipSpec, cache_dir: str | Path | None = None) -> list[list[bytes]]:
    """``generate_packs(spec)``, from the cache when it holds them, else made and cached.

    A cache that cannot be written is logged and skipped: the clip still plays.
    """
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    ps_path, index_path = base / f"{spec.cache_key}.ps", base / f"{spec.cache_key}.json"
    cached = _read_cache(ps_path, index_path)
    if cached is not None:
        return cached
    log.info("encoding the {key} clip", key=spec.cache_key)
    frames = generate_packs(spec)
    try:
        base.mkdir(parents=True, exist_ok=True)
        _write_atomic(ps_path, b"".join(p for packs in frames for p in packs))
        _write_atomic(index_path, json.dumps(
            {"spec": spec.cache_key, "packs": [[len(p) for p in packs] for packs in frames]}
        ).encode())
    except OSError as e:
        log.warn("cannot cache the clip in {dir}: {error}", dir=str(base), error=str(e))
    return frames


def build_clip(spec: ClipSpec, cache_dir: str | Path | None = None,
               chunk_size: int = RTP_PAYLOAD_SIZE) -> PsClip:
    """A loopable ``PsClip``: frame ``n`` holds the RTP payloads of its video and audio packs."""
    frames = [
        PsFrame(n, tuple(chunk for pack in packs for chunk in split_payload(pack, chunk_size)))
        for n, packs in enumerate(load_packs(spec, cache_dir))
    ]
    return PsClip(frames)


def write_ps(spec: ClipSpec, path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Write the clip's program stream to ``path`` (for ffprobe/ffplay); returns the path."""
    out = Path(path)
    out.write_bytes(b"".join(p for packs in load_packs(spec, cache_dir) for p in packs))
    return out


def clip_loader(clip: str = "capture", audio: str = "g711a",
                cache_dir: str | Path | None = None, payload: str = "ps") -> Callable[[], PsClip]:
    """The ``SimMedia`` loader for ``gbplatform simulate --clip ... --audio ... --payload ...``.

    ``capture`` replays the ZLMediaKit capture (``audio`` does not apply);
    ``h264``/``h265`` build the generated clip. ``payload="es"`` turns either
    into raw H.264/H.265 RTP, video only (``EsClip.from_ps``; the generated
    clip's PS cache is shared, its audio dropped). Raises ``ClipError`` on bad names.
    """
    if payload not in PAYLOAD_CHOICES:
        raise ClipError(f"payload {payload!r} is not one of {', '.join(PAYLOAD_CHOICES)}")
    if clip == "capture":
        ps_loader: Callable[[], PsClip] = PsClip.default
    else:
        spec = spec_for(clip, audio)
        ps_loader = lambda: build_clip(spec, cache_dir)  # noqa: E731 - a loader, as the branch above
    if payload == "es":
        return lambda: EsClip.from_ps(ps_loader())
    return ps_loader

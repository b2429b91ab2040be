"""One JPEG picture from one video keyframe.

A snapshot decodes a single IDR access unit (ITU-T H.264 §7.4.1.2.4 /
H.265 §7.4.2.4.4: an IRAP picture decodes without reference to any other
picture) and encodes it as baseline JPEG (ITU-T T.81). The access unit must
carry its parameter sets (SPS/PPS, and the VPS for H.265) in-band, as a GB/T
28181-2016 Annex C program stream delivers them before every keyframe and as
the GOP cache's first frame therefore holds them.

Decoding and encoding are done by PyAV (FFmpeg's ``h264``/``hevc`` decoders
and ``mjpeg`` encoder). This is CPU work of tens of milliseconds for 1080p:
callers on an event loop run it in a worker thread. PyAV is imported on the
first snapshot, not with this module: it costs about 17 MiB of RSS that a
platform nobody takes a snapshot from should not pay.
"""

from __future__ import annotations

import fractions
import logging
from typing import TYPE_CHECKING

from media.frame import Codec, Frame

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

__all__ = ["SnapshotError", "snapshot_jpeg"]

_DECODERS = {Codec.H264: "h264", Codec.H265: "hevc"}

# FFmpeg's video quantiser scale (ffmpeg -q:v): 2 is the finest the mjpeg
# encoder accepts by default, 31 the coarsest.
MIN_QUALITY = 2
MAX_QUALITY = 31


class SnapshotError(ValueError):
    """The frame cannot give a picture: not a keyframe, not decodable, or not video."""


def snapshot_jpeg(frame: Frame, *, quality: int = 5, max_width: int | None = None) -> bytes:
    """The JPEG (ITU-T T.81) of one keyframe access unit in Annex B form.

    ``quality`` is the quantiser scale, 2 (best) to 31; ``max_width`` scales
    a wider picture down, keeping its aspect ratio with even dimensions
    (4:2:0 chroma, ITU-T T.81 §A.1.1 sampling factors 2x2).
    """
    if not MIN_QUALITY <= quality <= MAX_QUALITY:
        raise ValueError(f"quality must be {MIN_QUALITY}..{MAX_QUALITY}, not {quality}")
    if max_width is not None and max_width < 2:
        raise ValueError(f"max_width must be at least 2, not {max_width}")
    decoder = _DECODERS.get(frame.codec)
    if decoder is None:
        raise SnapshotError(f"cannot take a snapshot of {frame.codec.value}: not a video codec")
    if not frame.keyframe:
        raise SnapshotError("a snapshot needs a keyframe (IDR/IRAP access unit)")
    picture = _decode(decoder, frame.data)
    width, height = _size(picture.width, picture.height, max_width)
    return _encode(picture.reformat(format="yuvj420p", width=width, height=height), quality)


def _decode(decoder: str, data: bytes) -> av.VideoFrame:
    import av

    ctx = av.CodecContext.create(decoder, "r")
    assert isinstance(ctx, av.VideoCodecContext)
    try:
        pictures = list(ctx.decode(av.Packet(data)))
        if not pictures:
            # A decoder with frame reordering delay hands the picture out on flush.
            pictures = list(ctx.decode(None))
    except av.error.FFmpegError as e:
        log.info("snapshot: the %s decoder refused the access unit: %s", decoder, e)
        raise SnapshotError(f"the {decoder} access unit is not decodable: {e}") from e
    for picture in pictures:
        if isinstance(picture, av.VideoFrame):
            return picture
    raise SnapshotError(f"the {decoder} access unit gave no picture (parameter sets missing?)")


def _size(width: int, height: int, max_width: int | None) -> tuple[int, int]:
    if max_width is None or width <= max_width:
        return width, height
    scaled = max(2, round(height * max_width / width))
    return max_width - max_width % 2, scaled - scaled % 2


def _encode(picture: av.VideoFrame, quality: int) -> bytes:
    import av

    ctx = av.CodecContext.create("mjpeg", "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width = picture.width
    ctx.height = picture.height
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = fractions.Fraction(1, 25)
    # Pinning the quantiser range is what fixes the scale: without a frame
    # quality, the qscale flag alone leaves FFmpeg at its finest value.
    ctx.qmin = ctx.qmax = quality
    try:
        packets = ctx.encode(picture) + ctx.encode(None)
    except av.error.FFmpegError as e:
        log.warning("snapshot: the mjpeg encoder failed on a %dx%d picture: %s", picture.width, picture.height, e)
        raise SnapshotError(f"JPEG encoding failed: {e}") from e
    return b"".join(bytes(p) for p in packets)

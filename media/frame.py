"""Elementary-stream frames handed between media pipeline stages.

A `Frame` is what `PsDemuxer` emits and every `FrameSink` consumes: one video
access unit in Annex B byte-stream form (ITU-T H.264 Annex B / H.265 Annex B),
or one block of raw audio samples, stamped with 90 kHz PTS/DTS as carried in
the PES header (ISO/IEC 13818-1 §2.4.3.7).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Codec(enum.Enum):
    """Codecs GB/T 28181-2016 Annex C allows in the program stream."""

    H264 = "h264"
    H265 = "h265"
    G711A = "g711a"
    G711U = "g711u"
    AAC = "aac"

    @property
    def is_video(self) -> bool:
        return self in (Codec.H264, Codec.H265)


@dataclass(frozen=True, slots=True)
class Frame:
    """One access unit (video, Annex B) or one audio block.

    ``pts``/``dts`` are 90 kHz ticks (ISO/IEC 13818-1 §2.4.3.7); ``dts`` equals
    ``pts`` when the PES header carries a PTS only. ``stream_id`` is the PES
    stream_id (0xE0-0xEF video, 0xC0-0xDF audio).
    """

    codec: Codec
    data: bytes
    pts: int
    dts: int
    keyframe: bool
    stream_id: int

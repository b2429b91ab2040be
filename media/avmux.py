"""Frames to PyAV packets for mux-only streams (no encoder), shared by HLS and recording.

Both mux MPEG-TS with PyAV's ``add_mux_stream`` (codec parameters, no
encoder: PyAV's ``add_stream("h264")`` would open libx264) and hand every
frame over as an ``av.Packet`` in the PES clock (ISO/IEC 13818-1 §2.4.3.7,
90 kHz). PyAV is imported on first use: it costs about 17 MiB of RSS.
"""

from __future__ import annotations

import fractions
from typing import TYPE_CHECKING, Any

from media.frame import Codec, Frame

if TYPE_CHECKING:
    import av

__all__ = ["CLOCK_RATE", "MUXER_CODECS", "TIME_BASE", "av_packet"]

CLOCK_RATE = 90_000
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)
# FFmpeg's codec names for the video codecs GB/T 28181 carries.
MUXER_CODECS = {Codec.H264: "h264", Codec.H265: "hevc"}


def av_packet(frame: Frame, stream: Any) -> av.Packet[Any]:
    """One frame as a packet of ``stream``, stamped with its 90 kHz pts/dts and keyframe flag."""
    import av

    packet = av.Packet(frame.data)
    packet.stream = stream
    packet.time_base = TIME_BASE
    packet.pts = frame.pts
    packet.dts = frame.dts
    packet.is_keyframe = frame.keyframe
    return packet

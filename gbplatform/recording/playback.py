"""Playing recordings back: timeline, HLS VOD playlists over byte ranges, MP4 download.

Theory of operation
-------------------
Every closed segment carries its keyframe index: ``[offset, pts, epoch]``
per random access point, each offset the start of a PAT (``media.tsindex``).
The bytes between two consecutive offsets are a GOP that decodes on its own,
so playback never remuxes for HLS:

* ``gop_ranges`` turns the segments overlapping a time range into
  ``Range``s (segment, byte offset, length, wall-clock start, duration), the
  GOPs that intersect the range, merged up to about ``MIN_PART`` seconds.
* ``vod_playlist`` writes them as an RFC 8216 VOD playlist:
  ``EXT-X-PLAYLIST-TYPE:VOD`` (§4.3.3.5), one ``EXT-X-BYTERANGE`` (§4.3.2.2)
  per part into the segment's URI, ``EXT-X-DISCONTINUITY`` (§4.3.2.3) where
  footage is missing or the timestamps restart, and ``EXT-X-ENDLIST``.
* ``remux_mp4`` stream-copies the same ranges into a fragmented MP4
  (ISO/IEC 14496-12 §8.8, ``movflags=frag_keyframe+empty_moov``) written
  to any ``write`` callable as it is built, so a download streams while it is
  assembled. Timestamps are rebased to the wall clock from the range start
  (a gap stays a gap, a restarted device clock cannot go backwards).

``timeline`` merges segments into the intervals that have footage and the
gaps between them. ``TimelineCache`` is the small LRU in front of it.
"""

from __future__ import annotations

import fractions
import io
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from msgspec import UNSET

from gbplatform.recording.queries import SegmentRecord
from gbplatform.recording.shapes import RecordUrls

__all__ = ["Range", "TimelineCache", "gop_ranges", "interval_urls", "remux_mp4", "rtsp_vod_base", "timeline",
           "vod_playlist"]

CLOCK_RATE = 90_000
MIN_PART = 2.0  # seconds: GOPs are merged into HLS parts at least this long
GAP = 1.0  # seconds of missing footage that count as a gap
_TB = fractions.Fraction(1, CLOCK_RATE)


@dataclass(frozen=True)
class Range:
    segment: SegmentRecord
    offset: int
    length: int
    start: float  # epoch seconds
    duration: float
    first_pts: int


def _gops(seg: SegmentRecord) -> list[tuple[int, int, float, float, int]]:
    """(offset, end offset, start, end, pts) per GOP of ``seg``."""
    index = [(int(k[0]), int(k[1]), float(k[2])) for k in seg.keyframes]
    end_time = seg.end if seg.end is not None else seg.start
    out = []
    for i, (offset, pts, at) in enumerate(index):
        if i + 1 < len(index):
            nxt_off, nxt_pts, _ = index[i + 1]
            end_off, end_at = nxt_off, at + ((nxt_pts - pts) % (1 << 33)) / CLOCK_RATE
        else:
            end_off, end_at = seg.size, end_time
        # The first GOP starts at byte 0: the muxer's SDT precedes the first PAT.
        out.append((0 if i == 0 else offset, end_off, at, max(end_at, at), pts))
    return out


def gop_ranges(segments: Sequence[SegmentRecord], start: float, end: float,
               min_part: float = MIN_PART) -> list[Range]:
    """The GOPs of ``segments`` that intersect ``[start, end)``, merged into parts."""
    out: list[Range] = []
    for seg in segments:
        current: list[Any] | None = None
        for offset, end_off, at, until, pts in _gops(seg):
            if until <= start or at >= end or end_off <= offset:
                continue
            if current is not None and current[4] < min_part:
                current[2] = end_off - current[1]
                current[4] = until - current[3]
                continue
            if current is not None:
                out.append(Range(*current))
            current = [seg, offset, end_off - offset, at, until - at, pts]
        if current is not None:
            out.append(Range(*current))
    return out


def vod_playlist(ranges: Sequence[Range], uri: Callable[[SegmentRecord], str]) -> str:
    """An RFC 8216 VOD media playlist of ``ranges`` (see the module docstring)."""
    longest = max((r.duration for r in ranges), default=1.0)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:4",  # §7: EXT-X-BYTERANGE needs version 4
        f"#EXT-X-TARGETDURATION:{max(1, math.ceil(longest))}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-MEDIA-SEQUENCE:0",
    ]
    previous: Range | None = None
    for r in ranges:
        if previous is not None and _discontinuous(previous, r):
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXTINF:{r.duration:.3f},")
        lines.append(f"#EXT-X-BYTERANGE:{r.length}@{r.offset}")
        lines.append(uri(r.segment))
        previous = r
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _discontinuous(a: Range, b: Range) -> bool:
    if a.segment.id == b.segment.id and a.offset + a.length == b.offset:
        return False
    gap = b.start - (a.start + a.duration)
    # Another file: continuous only if both the wall clock and the PTS carry on.
    expected_pts = (a.first_pts + round(a.duration * CLOCK_RATE)) % (1 << 33)
    pts_jump = abs(((b.first_pts - expected_pts + (1 << 32)) % (1 << 33)) - (1 << 32))
    return abs(gap) > GAP or pts_jump > GAP * CLOCK_RATE


def rtsp_vod_base(host_header: bytes | None, rtsp_port: int) -> str | None:
    """``rtsp://<API host name>:<rtsp_port>`` when the RTSP server is on, else None.

    The RTSP server listens beside the API: same host name (from the request's
    Host header, IPv6 literals kept in brackets), its own port.
    """
    if not rtsp_port or not host_header:
        return None
    host = host_header.decode("ascii", "replace")
    hostname = host if host.endswith("]") else host.rsplit(":", 1)[0]
    return f"rtsp://{hostname}:{rtsp_port}"


def interval_urls(channel_id: str, start: float, end: float, rtsp_base: str | None,
                  token: str | None = None) -> RecordUrls:
    """Playback URLs of one timeline interval: HLS VOD, MP4 download and, with RTSP on, RTSP VOD.

    ``token`` (a playback token for the channel's recordings, URL-safe) makes them
    work as given in a player."""
    query = f"start={start:.3f}&end={end:.3f}" + (f"&token={token}" if token else "")
    return RecordUrls(hls=f"/vod/{channel_id}/index.m3u8?{query}", mp4=f"/vod/{channel_id}.mp4?{query}",
                      rtsp=f"{rtsp_base}/vod/{channel_id}?{query}" if rtsp_base is not None else UNSET)


def timeline(segments: Sequence[SegmentRecord], start: float, end: float,
             open_from: float | None = None, now: float | None = None) -> dict[str, Any]:
    """Intervals with footage within ``[start, end)`` and the gaps between them."""
    spans = [(max(s.start, start), min(s.end if s.end is not None else s.start, end)) for s in segments]
    if open_from is not None and now is not None and open_from < end and now > start:
        spans.append((max(open_from, start), min(now, end)))
    spans = sorted(s for s in spans if s[1] > s[0])
    merged: list[list[float]] = []
    for a, b in spans:
        if merged and a - merged[-1][1] <= GAP:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    gaps = []
    cursor = start
    for a, b in merged:
        if a > cursor:
            gaps.append((cursor, a))
        cursor = max(cursor, b)
    limit = min(end, now) if now is not None else end
    if cursor < limit:
        gaps.append((cursor, limit))
    return {"intervals": [(a, b) for a, b in merged], "gaps": gaps,
            "seconds": round(sum(b - a for a, b in merged), 3)}


class TimelineCache:
    """A bounded LRU of timeline results, invalidated per channel."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def get(self, key: tuple[str, str]) -> Any:
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return value

    def put(self, key: tuple[str, str], value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def invalidate(self, channel_id: str) -> None:
        for key in [k for k in self._items if k[0] == channel_id]:
            del self._items[key]


class Cancelled(Exception):
    """The client went away; stop building the download."""


@dataclass
class Progress:
    total_seconds: float
    done_seconds: float = 0.0
    bytes: int = 0
    state: str = "running"  # running | done | failed | cancelled
    error: str | None = None


class _Out:
    def __init__(self, emit: Callable[[bytes], None], progress: Progress) -> None:
        self.emit = emit
        self.progress = progress

    def write(self, data: bytes) -> int:
        chunk = bytes(data)
        self.emit(chunk)
        self.progress.bytes += len(chunk)
        return len(chunk)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def remux_mp4(ranges: Sequence[Range], read: Callable[[SegmentRecord, int, int], bytes],
              emit: Callable[[bytes], None], progress: Progress) -> None:
    """Stream-copy ``ranges`` into a fragmented MP4 written to ``emit`` (blocking: run in a thread)."""
    if not ranges:
        raise ValueError("nothing to download")
    import av  # on first download, not at import: PyAV costs about 17 MiB of RSS

    origin = ranges[0].start
    out_file = _Out(emit, progress)
    options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
    with av.open(out_file, "w", format="mp4", options=options) as out:
        streams: dict[str, Any] = {}
        last_dts: dict[str, int] = {}
        for r in ranges:
            data = read(r.segment, r.offset, r.length)
            with av.open(io.BytesIO(data), "r", format="mpegts") as src:
                if not streams:
                    for s in src.streams:
                        if s.type in ("video", "audio") and s.type not in streams:
                            streams[s.type] = out.add_stream_from_template(s)
                            streams[s.type].time_base = _TB
                shift = round((r.start - origin) * CLOCK_RATE) - r.first_pts
                for packet in src.demux():
                    kind = packet.stream.type
                    target = streams.get(kind)
                    if target is None or packet.dts is None or packet.size == 0:
                        continue
                    scale = packet.time_base / _TB
                    dts = round(packet.dts * scale) + shift
                    pts = round((packet.pts if packet.pts is not None else packet.dts) * scale) + shift
                    if dts <= last_dts.get(kind, -(1 << 62)):
                        continue
                    last_dts[kind] = dts
                    packet.stream = target
                    packet.time_base = _TB
                    packet.dts, packet.pts = dts, pts
                    out.mux(packet)
                    if kind == "video":
                        progress.done_seconds = min(progress.total_seconds, max(0.0, pts / CLOCK_RATE))
    progress.done_seconds = progress.total_seconds

"""Crash recovery: reconcile the segment index with the files on disk at start.

A segment whose row is still ``open`` was being written when the process
died. Its file holds everything the writer had handed to the kernel: it is
cut back to its last whole 188-byte TS packet (ISO/IEC 13818-1 §2.4.3.2; a
player would otherwise stumble on the torn packet at the end), scanned for
its keyframe index and duration (``media.tsindex``) and closed with the real
end time: start plus the PTS span. A row whose file is gone is dropped.

A ``.ts`` file under the storage root that no row names (a crash between
creating the file and recording its row, or files copied in by hand) is
adopted when its name says which channel and when (``segment_key``'s
layout), and reported otherwise. Nothing is deleted here.

These functions block (file I/O): the manager runs them in a thread.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass

from gbplatform.recording.storage import LocalStorage
from media.tsindex import complete_length, scan_ts
from sip.gbid import LOOSE_ID_PATTERN

__all__ = ["Repaired", "parse_key", "repair"]

CLOCK_RATE = 90_000
_KEY = re.compile(
    rf"(?P<ch>{LOOSE_ID_PATTERN})" r"/\d{4}-\d{2}-\d{2}/(?P=ch)-(?P<t>\d{8}T\d{6})\.(?P<ms>\d{3})Z(?:~\d+)?\.ts"
)


@dataclass(frozen=True)
class Repaired:
    key: str
    start: float
    end: float
    size: int
    truncated: int  # bytes cut off the torn tail
    keyframes: list[tuple[int, int, float]]
    frames: int


def parse_key(key: str) -> tuple[str, float] | None:
    """``(channel_id, start epoch)`` from a key made by ``segment_key``, or None."""
    m = _KEY.fullmatch(key)
    if m is None:
        return None
    t = dt.datetime.strptime(m.group("t"), "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
    return m.group("ch"), t.timestamp() + int(m.group("ms")) / 1000


def repair(storage: LocalStorage, key: str, start: float) -> Repaired | None:
    """Truncate ``key`` to whole TS packets and rebuild its index; None if the file is gone."""
    path = storage.path(key)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    keep = complete_length(size)
    if keep != size:
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    with open(path, "rb") as f:
        data = f.read()
    indexer = scan_ts(data)
    first = indexer.first_pts
    keyframes = [(e.offset, e.pts, start + ((e.pts - first) % (1 << 33)) / CLOCK_RATE if first is not None else start)
                 for e in indexer.entries]
    end = start + (indexer.duration_ticks() + indexer.frame_step()) / CLOCK_RATE if first is not None else start
    return Repaired(key, start, end, keep, size - keep, keyframes, indexer.video_pes)

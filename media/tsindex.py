"""Keyframe index of an MPEG-TS recording, built by scanning its bytes.

Theory of operation: a recording is one MPEG-TS file (ISO/IEC 13818-1 §2.4)
per segment, muxed by FFmpeg's mpegts muxer with the video as the first
elementary stream, so on PID ``0x100``. That muxer marks the first TS packet
of every video keyframe's PES with ``random_access_indicator``
(§2.4.3.5: "the next PES packet ... contains a ... random access point") and
writes a PAT and a PMT right before it, so a byte range starting at that PAT
is a decodable stream on its own: the property HLS byte-range segments need
(RFC 8216 §3 / §4.3.2.2, each segment must start with a PAT and PMT).

``TsIndexer`` is fed the bytes as they are written (or read back from a file
after a crash) in chunks of any size, and returns ``KeyframeEntry``s: the
byte offset where the keyframe's PAT starts and the keyframe's PTS. It also
tracks the first and last video PTS, which give a segment's duration.

It never looks at every packet in Python: ``bytes.find`` locates the two
4-byte-ish headers it cares about (PAT with payload_unit_start, video PID
with payload_unit_start), a few per frame, so scanning runs at memory speed.

``complete_length`` is the crash-recovery rule: a file cut mid-write keeps
its whole 188-byte packets only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "TS_PACKET",
    "VIDEO_PID",
    "KeyframeEntry",
    "TsIndexer",
    "complete_length",
    "scan_ts",
]

TS_PACKET = 188  # ISO/IEC 13818-1 §2.4.3.2
SYNC = 0x47
VIDEO_PID = 0x100  # FFmpeg mpegts muxer: start_pid, given to the first stream
PTS_WRAP = 1 << 33  # §2.4.3.7: 33-bit PTS


@dataclass(frozen=True, slots=True)
class KeyframeEntry:
    """A random access point: the PAT before the keyframe at ``offset``, its ``pts`` (90 kHz)."""

    offset: int
    pts: int


def complete_length(size: int) -> int:
    """The length of the whole TS packets in a file of ``size`` bytes."""
    return size - size % TS_PACKET


def _pes_pts(packet: bytes | memoryview, start: int) -> int | None:
    """The PTS of the PES header starting in the TS packet at ``start`` (§2.4.3.6/§2.4.3.7)."""
    p = start + 4
    afc = (packet[start + 3] >> 4) & 3
    if afc & 2:
        p += 1 + packet[start + 4]
    if not afc & 1 or p + 14 > start + TS_PACKET:
        return None
    if packet[p] != 0 or packet[p + 1] != 0 or packet[p + 2] != 1:
        return None
    if not packet[p + 7] & 0x80:  # PTS_DTS_flags
        return None
    b = packet[p + 9 : p + 14]
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def _random_access(packet: bytes | memoryview, start: int) -> bool:
    afc = (packet[start + 3] >> 4) & 3
    return bool(afc & 2 and packet[start + 4] > 0 and packet[start + 5] & 0x40)


class TsIndexer:
    """Incremental keyframe scanner over a TS byte stream (see the module docstring)."""

    def __init__(self, video_pid: int = VIDEO_PID) -> None:
        self._video_head = bytes([SYNC, 0x40 | (video_pid >> 8), video_pid & 0xFF])
        self._pat_head = bytes([SYNC, 0x40, 0x00])
        self.position = 0  # bytes fed so far
        self.entries: list[KeyframeEntry] = []
        self.first_pts: int | None = None
        self.last_pts: int | None = None
        self.video_pes = 0  # video PES packets (frames) seen
        self._carry = b""  # the incomplete last packet of the previous chunk
        self._last_pat: int | None = None

    def feed(self, data: bytes | memoryview) -> list[KeyframeEntry]:
        """Scan the next ``data``; returns the keyframes whose first packet it completed."""
        base = self.position - len(self._carry)
        buf = self._carry + bytes(data) if self._carry else data
        self.position += len(data)
        # Packets start at multiples of 188 from the start of the stream, and
        # ``base`` is always one: the carry is the tail after the last whole packet.
        view = buf if isinstance(buf, bytes) else bytes(buf)
        whole = complete_length(len(view))
        found: list[KeyframeEntry] = []
        self._scan(view, base, whole, found)
        self._carry = view[whole:]
        return found

    def _scan(self, buf: bytes, base: int, end: int, found: list[KeyframeEntry]) -> None:
        hits: list[tuple[int, bool]] = []
        for head, is_pat in ((self._pat_head, True), (self._video_head, False)):
            i = buf.find(head, 0, end)
            while i >= 0:
                if i % TS_PACKET == 0:
                    hits.append((i, is_pat))
                    i = buf.find(head, i + TS_PACKET, end)
                else:
                    i = buf.find(head, i + TS_PACKET - i % TS_PACKET, end)
        hits.sort()
        for i, is_pat in hits:
            if is_pat:
                self._last_pat = base + i
                continue
            pts = _pes_pts(buf, i)
            if pts is None:
                continue
            self.video_pes += 1
            if self.first_pts is None:
                self.first_pts = pts
            self.last_pts = pts
            if _random_access(buf, i):
                # The PAT and PMT the muxer puts right before a keyframe (two packets).
                pat = self._last_pat
                offset = pat if pat is not None and base + i - pat <= 2 * TS_PACKET else base + i
                entry = KeyframeEntry(offset, pts)
                self.entries.append(entry)
                found.append(entry)

    def duration_ticks(self) -> int:
        """Last minus first video PTS, 90 kHz, across one 33-bit wrap."""
        if self.first_pts is None or self.last_pts is None:
            return 0
        return (self.last_pts - self.first_pts) % PTS_WRAP


    def frame_step(self, default: int = 3600) -> int:
        """The mean video frame interval, 90 kHz (``default``: 25 fps, GB cameras' usual rate)."""
        if self.video_pes < 2:
            return default
        return max(1, self.duration_ticks() // (self.video_pes - 1))


def scan_ts(data: bytes, video_pid: int = VIDEO_PID) -> TsIndexer:
    """Index a whole TS in one go (recovery, adoption of unknown files)."""
    indexer = TsIndexer(video_pid)
    indexer.feed(data)
    return indexer

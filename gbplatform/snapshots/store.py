"""Rows of ``device_snapshots`` and the files under <data_dir>/device-snapshots (blocking; run off the reactor).

The ``*_txn`` functions run through ``Database.run`` (a session each, safe to
run twice); the file functions on a worker pool (``gbplatform.core.workers``).
A file's ``key`` is its path under the root: ``<device>/<channel>/<session>-<seq>.jpg``.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.orm import Session

from gbplatform.db.models import DeviceSnapshot

__all__ = ["SnapshotRow", "delete_files", "delete_rows_txn", "finish_session_txn", "get_snapshot_txn",
           "insert_snapshot_txn", "list_snapshots_txn", "old_snapshots_txn", "read_file", "session_rows_txn",
           "write_file"]

_T = DeviceSnapshot.__table__


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    id: int
    device_id: str
    channel_id: str
    session_id: str
    file_id: str
    seq: int
    size: int
    key: str
    received_at: dt.datetime
    finished: bool


def _row(r: DeviceSnapshot) -> SnapshotRow:
    return SnapshotRow(r.id, r.device_id, r.channel_id, r.session_id, r.file_id, r.seq, r.size, r.key,
                       r.received_at, r.finished)


def insert_snapshot_txn(s: Session, *, device_id: str, channel_id: str, session_id: str, file_id: str, seq: int,
                        size: int, key: str, received_at: dt.datetime, finished: bool) -> SnapshotRow:
    """Store one uploaded picture; its key is unique, so a retried transaction finds the first row."""
    existing = s.scalars(select(DeviceSnapshot).where(DeviceSnapshot.key == key)).first()
    if existing is not None:
        return _row(existing)
    row = DeviceSnapshot(device_id=device_id, channel_id=channel_id, session_id=session_id, file_id=file_id,
                         seq=seq, size=size, key=key, received_at=received_at, finished=finished)
    s.add(row)
    s.flush()
    return _row(row)


def finish_session_txn(s: Session, session_id: str, file_ids: tuple[str, ...], generated_prefix: str) -> int:
    """Mark the session's pictures finished; a picture uploaded without a name takes the device's
    ``SnapShotFileID`` of its rank (the list is in the order taken). Returns the rows marked."""
    rows = list(s.scalars(select(DeviceSnapshot).where(DeviceSnapshot.session_id == session_id)
                          .order_by(DeviceSnapshot.seq)))
    for rank, row in enumerate(rows):
        row.finished = True
        if rank < len(file_ids) and row.file_id.startswith(generated_prefix):
            row.file_id = file_ids[rank][:128]
    return len(rows)


def list_snapshots_txn(s: Session, channel_id: str, *, offset: int, limit: int) -> tuple[list[SnapshotRow], int]:
    """The channel's pictures, newest first, and how many there are."""
    total = s.scalar(select(func.count()).select_from(_T).where(_T.c.channel_id == channel_id)) or 0
    rows = s.scalars(select(DeviceSnapshot).where(DeviceSnapshot.channel_id == channel_id)
                     .order_by(DeviceSnapshot.received_at.desc(), DeviceSnapshot.id.desc())
                     .offset(offset).limit(limit))
    return [_row(r) for r in rows], int(total)


def get_snapshot_txn(s: Session, snapshot_id: int) -> SnapshotRow | None:
    row = s.get(DeviceSnapshot, snapshot_id)
    return None if row is None else _row(row)


def session_rows_txn(s: Session, session_id: str) -> list[SnapshotRow]:
    rows = s.scalars(select(DeviceSnapshot).where(DeviceSnapshot.session_id == session_id)
                     .order_by(DeviceSnapshot.seq))
    return [_row(r) for r in rows]


def old_snapshots_txn(s: Session, before: dt.datetime, limit: int) -> list[tuple[int, str]]:
    """``(id, key)`` of pictures received before ``before``, oldest first, at most ``limit``."""
    rows = s.execute(select(_T.c.id, _T.c.key).where(_T.c.received_at < before)
                     .order_by(_T.c.received_at).limit(limit))
    return [(int(i), str(k)) for i, k in rows]


def delete_rows_txn(s: Session, ids: list[int]) -> int:
    if not ids:
        return 0
    result = s.execute(delete(DeviceSnapshot).where(DeviceSnapshot.id.in_(ids)))
    return int(cast(CursorResult[Any], result).rowcount or 0)


def write_file(root: Path, key: str, data: bytes) -> None:
    """Write ``data`` at ``root/key`` atomically (temporary file, fsync, rename): a reader never sees
    half a picture, and a crash leaves no truncated JPEG under its final name."""
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_file(root: Path, key: str) -> bytes | None:
    """The picture at ``root/key``; None when it is gone (purged, or the disk was cleaned by hand)."""
    try:
        return (root / key).read_bytes()
    except FileNotFoundError:
        return None


def delete_files(root: Path, keys: list[str]) -> int:
    """Remove the pictures (already missing ones count as removed); returns how many were removed."""
    removed = 0
    for key in keys:
        try:
            (root / key).unlink()
        except FileNotFoundError:
            pass
        removed += 1
    return removed

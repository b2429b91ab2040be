"""Rows of ``device_snapshots`` and the files under <data_dir>/device-snapshots (blocking; run off the reactor).

The ``*_txn`` functions run through ``Database.run`` (a session each, safe to
run twice) and return :class:`SnapshotRow` dataclasses built from Core row
mappings; the file functions on a worker pool (``gbplatform.core.workers``).
A file's ``key`` is its path under the root: ``<device>/<channel>/<session>-<seq>.jpg``.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, RowMapping, delete, func, insert, select, update

from gbplatform.db.database import Session
from gbplatform.db.models import device_snapshots as _T

__all__ = ["SnapshotRow", "delete_files", "delete_rows_txn", "finish_session_txn", "get_snapshot_txn",
           "insert_snapshot_txn", "list_snapshots_txn", "old_snapshots_txn", "read_file", "session_rows_txn",
           "write_file"]


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


def _row(r: RowMapping) -> SnapshotRow:
    return SnapshotRow(r["id"], r["device_id"], r["channel_id"], r["session_id"], r["file_id"], r["seq"],
                       r["size"], r["key"], r["received_at"], r["finished"])


def insert_snapshot_txn(s: Session, *, device_id: str, channel_id: str, session_id: str, file_id: str, seq: int,
                        size: int, key: str, received_at: dt.datetime, finished: bool) -> SnapshotRow:
    """Store one uploaded picture; its key is unique, so a retried transaction finds the first row."""
    existing = s.execute(select(_T).where(_T.c.key == key)).mappings().first()
    if existing is not None:
        return _row(existing)
    values: dict[str, Any] = {"device_id": device_id, "channel_id": channel_id, "session_id": session_id, "file_id": file_id,
              "seq": seq, "size": size, "key": key, "received_at": received_at, "finished": finished}
    new_id = s.execute(insert(_T).values(values).returning(_T.c.id)).scalar_one()
    return SnapshotRow(id=int(new_id), **values)


def finish_session_txn(s: Session, session_id: str, file_ids: tuple[str, ...], generated_prefix: str) -> int:
    """Mark the session's pictures finished; a picture uploaded without a name takes the device's
    ``SnapShotFileID`` of its rank (the list is in the order taken). Returns the rows marked."""
    rows = s.execute(select(_T.c.id, _T.c.file_id).where(_T.c.session_id == session_id)
                     .order_by(_T.c.seq)).all()
    s.execute(update(_T).where(_T.c.session_id == session_id).values(finished=True))
    for rank, (row_id, file_id) in enumerate(rows[:len(file_ids)]):
        if file_id.startswith(generated_prefix):
            s.execute(update(_T).where(_T.c.id == row_id).values(file_id=file_ids[rank][:128]))
    return len(rows)


def list_snapshots_txn(s: Session, channel_id: str, *, offset: int, limit: int) -> tuple[list[SnapshotRow], int]:
    """The channel's pictures, newest first, and how many there are."""
    total = s.scalar(select(func.count()).select_from(_T).where(_T.c.channel_id == channel_id)) or 0
    rows = s.execute(select(_T).where(_T.c.channel_id == channel_id)
                     .order_by(_T.c.received_at.desc(), _T.c.id.desc())
                     .offset(offset).limit(limit)).mappings()
    return [_row(r) for r in rows], int(total)


def get_snapshot_txn(s: Session, snapshot_id: int) -> SnapshotRow | None:
    row = s.execute(select(_T).where(_T.c.id == snapshot_id)).mappings().first()
    return None if row is None else _row(row)


def session_rows_txn(s: Session, session_id: str) -> list[SnapshotRow]:
    rows = s.execute(select(_T).where(_T.c.session_id == session_id).order_by(_T.c.seq)).mappings()
    return [_row(r) for r in rows]


def old_snapshots_txn(s: Session, before: dt.datetime, limit: int) -> list[tuple[int, str]]:
    """``(id, key)`` of pictures received before ``before``, oldest first, at most ``limit``."""
    rows = s.execute(select(_T.c.id, _T.c.key).where(_T.c.received_at < before)
                     .order_by(_T.c.received_at).limit(limit))
    return [(int(i), str(k)) for i, k in rows]


def delete_rows_txn(s: Session, ids: list[int]) -> int:
    if not ids:
        return 0
    result = s.execute(delete(_T).where(_T.c.id.in_(ids)))
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

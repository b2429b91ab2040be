"""Device-side snapshot upload (GB/T 28181-2022 §9.14, Annex A): ``SnapShotConfig`` and
``UploadSnapShotFinished``.

The platform sends a DeviceConfig carrying ``SnapShotConfig`` (§A.2.3.2.x of
the 2022 edition) to a channel::

    <SnapShotConfig>
      <SnapNum>2</SnapNum>            1-10 pictures
      <Interval>1</Interval>          seconds between them
      <UploadURL>http://...</UploadURL>
      <SessionID>...</SessionID>      names the batch in the notification
    </SnapShotConfig>

The device answers ``Result`` (§A.2.6.3), takes the pictures, uploads each
JPEG to ``UploadURL`` over HTTP, then sends the notification::

    <Notify><CmdType>UploadSnapShotFinished</CmdType>...
      <SessionID>...</SessionID>
      <SnapShotList Num="2"><SnapShotFileID>...</SnapShotFileID>...</SnapShotList>
    </Notify>

which the platform acknowledges (200, then a ``Response`` with ``Result``).
Vendors wrap the IDs in ``<Item>`` or leave ``Num`` out: the list is read as
every leaf below ``SnapShotList`` (``LeafMap`` deep) and the file IDs are the
leaves named ``SnapShotFileID`` in any case, in document order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from sip.manscdp.messages import Notify, Response
from sip.manscdp.registry import Command, Leaf, LeafMap, Struct, declare, encode

__all__ = [
    "SNAP_SHOT_CONFIG",
    "SnapShotConfig",
    "UploadSnapShotFinished",
    "encode_snapshot_finished",
    "encode_snapshot_finished_response",
]

MAX_SNAP_NUM: Final = 10
"""``SnapNum`` is 1-10 (GB/T 28181-2022 §A.2.3.2, SnapShotConfig)."""


@dataclass(frozen=True, kw_only=True)
class SnapShotConfig:
    """``SnapShotConfig`` of a DeviceConfig (GB/T 28181-2022 §A.2.3.2): how many pictures, how many
    seconds apart, where to upload them (HTTP) and the session naming the batch."""

    snap_num: int | None = None
    interval: int | None = None
    upload_url: str | None = None
    session_id: str | None = None


SNAP_SHOT_CONFIG: Final = Struct(SnapShotConfig, (
    Leaf("SnapNum", "snap_num", int),
    Leaf("Interval", "interval", int),
    Leaf("UploadURL", "upload_url"),
    Leaf("SessionID", "session_id"),
))

_FILE_ID_LEAF = re.compile(r"(?:^|/)snapshotfileid(?:\[\d+\])?$", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class UploadSnapShotFinished(Notify):
    """UploadSnapShotFinished (GB/T 28181-2022 §A.2.5): the device has uploaded the pictures of
    ``session_id``; ``snap_shot_list`` keeps every leaf of ``SnapShotList`` by path."""

    session_id: str | None = None
    snap_shot_list: dict[str, str] = field(default_factory=dict)

    @property
    def file_ids(self) -> tuple[str, ...]:
        """The ``SnapShotFileID`` values, in document order, wrapped in ``<Item>`` or not."""
        return tuple(v.strip() for k, v in self.snap_shot_list.items() if _FILE_ID_LEAF.search(k) and v.strip())


UPLOAD_SNAPSHOT_FINISHED: Final = declare(Command(
    kind="Notify", cmd_type="UploadSnapShotFinished", cls=UploadSnapShotFinished,
    # "UploadSnapshotFinished" is matched too: CmdType is compared case-insensitively.
    fields=(Leaf("SessionID", "session_id"), LeafMap("SnapShotList", "snap_shot_list", deep=True)),
))


@dataclass(frozen=True, kw_only=True)
class SnapShotFinishedResponse(Response):
    """The platform's answer to UploadSnapShotFinished: ``Result`` OK (§A.2.6)."""


UPLOAD_SNAPSHOT_FINISHED_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="UploadSnapShotFinished", cls=SnapShotFinishedResponse,
    fields=(Leaf("Result", "result"),),
))


def encode_snapshot_finished(sn: int, device_id: str, session_id: str, file_ids: Iterable[str], *,
                             charset: str = "GB2312") -> bytes:
    """The UploadSnapShotFinished notification of ``file_ids`` (§A.2.5), with ``Num`` on its list."""
    ids = list(file_ids)
    paths = {f"SnapShotFileID[{n}]" if len(ids) > 1 else "SnapShotFileID": fid for n, fid in enumerate(ids, 1)}
    msg = UPLOAD_SNAPSHOT_FINISHED.build(sn, device_id, charset=charset, session_id=session_id,
                                         snap_shot_list=paths)
    body = encode(msg)
    if not ids:  # LeafMap writes nothing for no leaves; the list is still sent, empty
        return body.replace(b"</SessionID>", b'</SessionID>\n<SnapShotList Num="0">\n</SnapShotList>', 1)
    return body.replace(b"<SnapShotList>", f'<SnapShotList Num="{len(ids)}">'.encode(), 1)


def encode_snapshot_finished_response(sn: int, device_id: str, *, result: str = "OK",
                                      charset: str = "GB2312") -> bytes:
    """The platform's ``Response`` to an UploadSnapShotFinished (same SN, ``Result``)."""
    return encode(UPLOAD_SNAPSHOT_FINISHED_RESPONSE.build(sn, device_id, charset=charset, result=result))

"""The device registry: models, the ``Database.run`` thread-pool bridge, queries.

Import ``*_txn`` functions from :mod:`gbplatform.db.queries` and migration
helpers from :mod:`gbplatform.db.migrate`.
"""

from gbplatform.db.database import (
    Database,
    DatabaseService,
    InlineRunner,
    Runner,
    ThreadPoolRunner,
    make_engine,
)
from gbplatform.db.queries import (
    ChannelData,
    ChannelRecord,
    DeviceExists,
    DeviceNotFound,
    DeviceRecord,
    KeepaliveResult,
    Page,
    TreeNode,
)

__all__ = [
    "ChannelData",
    "ChannelRecord",
    "Database",
    "DatabaseService",
    "DeviceExists",
    "DeviceNotFound",
    "DeviceRecord",
    "InlineRunner",
    "KeepaliveResult",
    "Page",
    "Runner",
    "ThreadPoolRunner",
    "TreeNode",
    "make_engine",
]

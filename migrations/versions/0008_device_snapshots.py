"""Snapshots devices upload (GB/T 28181-2022 SnapShotConfig): table ``device_snapshots``.

One row per picture a device uploaded for a snapshot session; the session
itself lives in the platform's memory while it runs (``gbplatform.snapshots``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("file_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_snapshots")),
        sa.UniqueConstraint("key", name=op.f("uq_device_snapshots_key")),
    )
    with op.batch_alter_table("device_snapshots") as batch_op:
        batch_op.create_index(batch_op.f("ix_device_snapshots_channel_id_received_at"),
                              ["channel_id", "received_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_device_snapshots_received_at"), ["received_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_device_snapshots_session_id"), ["session_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("device_snapshots") as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_snapshots_session_id"))
        batch_op.drop_index(batch_op.f("ix_device_snapshots_received_at"))
        batch_op.drop_index(batch_op.f("ix_device_snapshots_channel_id_received_at"))
    op.drop_table("device_snapshots")

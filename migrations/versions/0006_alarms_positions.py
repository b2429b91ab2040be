"""Alarms and mobile positions: ``alarms``, ``positions``, ``alarm_settings`` (issue 11).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "alarms",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("method", sa.Integer(), nullable=True),
        sa.Column("alarm_type", sa.Integer(), nullable=True),
        sa.Column("event_type", sa.Integer(), nullable=True),
        _ts("device_time"),
        _ts("received_at", nullable=False),
        sa.Column("longitude", sa.Double(), nullable=True),
        sa.Column("latitude", sa.Double(), nullable=True),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("source", sa.String(length=16), server_default="notify", nullable=False),
        sa.Column("snapshot", sa.String(), nullable=True),
        sa.Column("snapshot_error", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms")),
    )
    with op.batch_alter_table("alarms") as batch_op:
        batch_op.create_index(batch_op.f("ix_alarms_device_id_received_at"), ["device_id", "received_at"])
        batch_op.create_index(batch_op.f("ix_alarms_channel_id_received_at"), ["channel_id", "received_at"])
        batch_op.create_index(batch_op.f("ix_alarms_received_at"), ["received_at"])
    op.create_table(
        "positions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        _ts("time", nullable=False),
        _ts("received_at", nullable=False),
        sa.Column("longitude", sa.Double(), nullable=False),
        sa.Column("latitude", sa.Double(), nullable=False),
        sa.Column("speed", sa.Double(), nullable=True),
        sa.Column("direction", sa.Double(), nullable=True),
        sa.Column("altitude", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
    )
    with op.batch_alter_table("positions") as batch_op:
        batch_op.create_index(batch_op.f("ix_positions_device_id_channel_id_time"),
                              ["device_id", "channel_id", "time"])
        batch_op.create_index(batch_op.f("ix_positions_received_at"), ["received_at"])
    op.create_table(
        "alarm_settings",
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("snapshot", sa.Boolean(), nullable=False),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("channel_id", name=op.f("pk_alarm_settings")),
    )


def downgrade() -> None:
    op.drop_table("alarm_settings")
    with op.batch_alter_table("positions") as batch_op:
        batch_op.drop_index(batch_op.f("ix_positions_received_at"))
        batch_op.drop_index(batch_op.f("ix_positions_device_id_channel_id_time"))
    op.drop_table("positions")
    with op.batch_alter_table("alarms") as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarms_received_at"))
        batch_op.drop_index(batch_op.f("ix_alarms_channel_id_received_at"))
        batch_op.drop_index(batch_op.f("ix_alarms_device_id_received_at"))
    op.drop_table("alarms")

"""Subscriptions a device is asked for: ``device_subscriptions`` (GB/T 28181-2016 §9.11).

One row per device whose subscription settings were set through the API;
a NULL kind follows the ``[subscriptions]`` default.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_subscriptions",
        sa.Column("device_id", sa.String(32), nullable=False),
        sa.Column("catalog", sa.Boolean(), nullable=True),
        sa.Column("alarm", sa.Boolean(), nullable=True),
        sa.Column("mobile_position", sa.Boolean(), nullable=True),
        sa.Column("ptz_position", sa.Boolean(), nullable=True),
        sa.Column("position_interval", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.device_id"], ondelete="CASCADE",
                                name=op.f("fk_device_subscriptions_device_id_devices")),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_subscriptions")),
    )


def downgrade() -> None:
    op.drop_table("device_subscriptions")

"""Initial registry schema: devices and channels.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("manufacturer", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("firmware", sa.String(), nullable=True),
        sa.Column("password_ha1_md5", sa.String(length=128), nullable=True),
        sa.Column("password_ha1_sha256", sa.String(length=128), nullable=True),
        sa.Column("ha1_realm", sa.String(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("pre_added", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("online", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("transport", sa.String(length=16), nullable=True),
        sa.Column("host", sa.String(), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("contact", sa.String(), nullable=True),
        sa.Column("user_agent", sa.String(), nullable=True),
        sa.Column("charset", sa.String(length=16), server_default="GB2312", nullable=False),
        sa.Column("media_transport", sa.String(length=16), server_default="UDP", nullable=False),
        sa.Column("stream_index", sa.String(length=32), nullable=True),
        sa.Column("register_expires", sa.Integer(), nullable=True),
        _ts("registered_at"),
        _ts("register_expires_at"),
        _ts("last_keepalive_at"),
        sa.Column("keepalive_interval", sa.Integer(), server_default=sa.text("60"), nullable=False),
        sa.Column("keepalive_count", sa.Integer(), server_default=sa.text("3"), nullable=False),
        _ts("online_at"),
        _ts("offline_at"),
        sa.Column("catalog_status", sa.String(length=16), server_default="idle", nullable=False),
        sa.Column("catalog_total", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("catalog_received", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _ts("catalog_synced_at"),
        sa.Column("channel_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_devices")),
    )
    with op.batch_alter_table("devices") as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_online"), ["online"], unique=False)

    op.create_table(
        "channels",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("manufacturer", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("owner", sa.String(), nullable=True),
        sa.Column("civil_code", sa.String(), nullable=True),
        sa.Column("block", sa.String(), nullable=True),
        sa.Column("address", sa.String(), nullable=True),
        sa.Column("parental", sa.Integer(), nullable=True),
        sa.Column("parent_id", sa.String(), nullable=True),
        sa.Column("business_group_id", sa.String(), nullable=True),
        sa.Column("safety_way", sa.String(), nullable=True),
        sa.Column("register_way", sa.String(), nullable=True),
        sa.Column("cert_num", sa.String(), nullable=True),
        sa.Column("certifiable", sa.String(), nullable=True),
        sa.Column("err_code", sa.String(), nullable=True),
        sa.Column("end_time", sa.String(), nullable=True),
        sa.Column("secrecy", sa.String(), nullable=True),
        sa.Column("ip_address", sa.String(), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("longitude", sa.Double(), nullable=True),
        sa.Column("latitude", sa.Double(), nullable=True),
        sa.Column("ptz_type", sa.Integer(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.Column("kind", sa.String(length=16), server_default="channel", nullable=False),
        _ts("updated_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name=op.f("fk_channels_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channels")),
        sa.UniqueConstraint(
            "device_id", "channel_id", name=op.f("uq_channels_device_id_channel_id")
        ),
    )
    with op.batch_alter_table("channels") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_channels_device_id_parent_id"), ["device_id", "parent_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("channels") as batch_op:
        batch_op.drop_index(batch_op.f("ix_channels_device_id_parent_id"))
    op.drop_table("channels")
    with op.batch_alter_table("devices") as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_online"))
    op.drop_table("devices")

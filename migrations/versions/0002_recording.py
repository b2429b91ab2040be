"""Recording: plans, per-channel policies, segments.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "record_plans",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("schedule", sa.JSON(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_plans")),
        sa.UniqueConstraint("name", name=op.f("uq_record_plans_name")),
    )
    op.create_table(
        "record_policies",
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("mode", sa.String(length=16), server_default="off", nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=True),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        _ts("updated_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["record_plans.id"],
            name=op.f("fk_record_policies_plan_id_record_plans"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("channel_id", name=op.f("pk_record_policies")),
    )
    with op.batch_alter_table("record_policies") as batch_op:
        batch_op.create_index(batch_op.f("ix_record_policies_plan_id"), ["plan_id"], unique=False)

    op.create_table(
        "record_segments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        _ts("start_at", nullable=False),
        _ts("end_at"),
        sa.Column("size", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("backend", sa.String(length=16), server_default="local", nullable=False),
        sa.Column("state", sa.String(length=16), server_default="open", nullable=False),
        sa.Column("local", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("has_audio", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("keyframes", sa.JSON(), nullable=True),
        _ts("uploaded_at"),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_segments")),
        sa.UniqueConstraint("key", name=op.f("uq_record_segments_key")),
    )
    with op.batch_alter_table("record_segments") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_record_segments_channel_id_start_at"), ["channel_id", "start_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_record_segments_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("record_segments") as batch_op:
        batch_op.drop_index(batch_op.f("ix_record_segments_state"))
        batch_op.drop_index(batch_op.f("ix_record_segments_channel_id_start_at"))
    op.drop_table("record_segments")
    with op.batch_alter_table("record_policies") as batch_op:
        batch_op.drop_index(batch_op.f("ix_record_policies_plan_id"))
    op.drop_table("record_policies")
    op.drop_table("record_plans")

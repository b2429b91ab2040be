"""Devices: ``catalog_error``, why the last catalog sync did not end ``done``.

A device that refuses the Catalog MESSAGE (baresip answers 415) left the
registry with status ``error`` and no reason once the in-memory sync was gone.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("catalog_error", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("catalog_error")

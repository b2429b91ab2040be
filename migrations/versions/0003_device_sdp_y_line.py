"""Devices: ``sdp_y_line``, whether the INVITE's SDP offer carries ``y=``.

Firmware built on Debian's osip2 5.x rejects the GB/T 28181 ``y=`` line
(answering only 100 Trying); for such a device the line is left out.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("sdp_y_line", sa.Boolean(), server_default=sa.true(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("sdp_y_line")

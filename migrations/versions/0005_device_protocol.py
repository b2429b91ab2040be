"""Devices: the GB/T 28181 dialect (2016/2022) detected and set, and the I-frame element's spelling.

``gb_version`` is the edition the device announced in its last authenticated
REGISTER (GB/T 28181-2022 §9.1 ``X-GB-Ver``: 1.0 = 2011, 2.0 = 2016, 3.0 =
2022; none = before 2022); ``gb_version_setting`` is the operator's choice
("auto" follows the detection); ``iframe_element`` is how the device spells
the I-frame request (§A.2.3.1.7 ``IFameCmd``, or ``IFrameCmd``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("gb_version", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("gb_version_setting", sa.String(length=16), server_default="auto",
                                   nullable=False))
        batch.add_column(sa.Column("iframe_element", sa.String(length=16), server_default="IFameCmd",
                                   nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("iframe_element")
        batch.drop_column("gb_version_setting")
        batch.drop_column("gb_version")

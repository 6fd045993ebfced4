"""64-bit indices

OEIS indices go far beyond 32 bits (A241292 starts at 3,638,334,640,025): offsets, first
indices and factorization indices become bigint. ALTER ... TYPE converts every cached
row in place; nothing is downloaded again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 15:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("sequences", "offset"), ("sequence_values", "first_index"), ("factorizations", "n"))


def upgrade() -> None:
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())


def downgrade() -> None:
    # Fails (and changes nothing) if a cached index no longer fits 32 bits.
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())

"""refresh bookkeeping

Per sequence: the OEIS revision of what is cached and when that revision was made,
when the cached data was last checked against the OEIS, and the backoff of refreshes
that failed. Existing rows get NULLs: no revision known, never checked, so beat's
refresh sweep checks them first. Adding columns keeps the change triggers of migration
0004 (they fire for every row of `sequences`, whatever its columns).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 15:36:04

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sequences", sa.Column("revision", sa.Integer(), nullable=True))
    op.add_column("sequences", sa.Column("modified", sa.DateTime(timezone=True), nullable=True))
    op.add_column("sequences", sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "sequences",
        sa.Column("refresh_failures", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "sequences", sa.Column("refresh_retry_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    for column in ("refresh_retry_at", "refresh_failures", "checked_at", "modified", "revision"):
        op.drop_column("sequences", column)

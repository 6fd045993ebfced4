"""refresh sweep index

An index in the refresh sweep's order (never checked first, then the oldest check):
the hourly sweep reads the sequences due first instead of scanning and sorting every
cached sequence (shared/store/revisions.py: refresh_candidates).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 12:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_sequences_checked_at", "sequences", [sa.text("checked_at ASC NULLS FIRST"), "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_sequences_checked_at", table_name="sequences")

"""factorizations: one row per (sequence, index), deleted with the sequence

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 00:32:25.466295

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "factorizations",
        sa.Column("id", sa.String(length=7), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("factors", sa.Text(), nullable=False),
        sa.Column(
            "factored_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["id"],
            ["sequences.id"],
            name=op.f("fk_factorizations_id_sequences"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", "n", name=op.f("pk_factorizations")),
    )


def downgrade() -> None:
    op.drop_table("factorizations")

"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 00:15:50.852981

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fence_floors",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_fence_floors")),
    )
    op.create_table(
        "searches",
        sa.Column("term", sa.Text(), nullable=False),
        sa.Column("results", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "fetched_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("term", name=op.f("pk_searches")),
    )
    op.create_table(
        "sequences",
        sa.Column("id", sa.String(length=7), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("offset", sa.Integer(), nullable=True),
        sa.Column("xrefs", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("keywords", sa.Text(), nullable=True),
        sa.Column("author", sa.Text(), nullable=True),
        sa.Column("meta_fetched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("meta_token", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("backrefs", postgresql.ARRAY(sa.String(length=7)), nullable=True),
        sa.Column("backrefs_fetched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("backrefs_token", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("missing_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequences")),
    )
    op.create_table(
        "sequence_values",
        sa.Column("id", sa.String(length=7), nullable=False),
        sa.Column("first_index", sa.Integer(), nullable=False),
        sa.Column("terms", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column(
            "fetched_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["id"],
            ["sequences.id"],
            name=op.f("fk_sequence_values_id_sequences"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequence_values")),
    )


def downgrade() -> None:
    op.drop_table("sequence_values")
    op.drop_table("sequences")
    op.drop_table("searches")
    op.drop_table("fence_floors")

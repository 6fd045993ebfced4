"""search index

A local index of every OEIS entry (names, first terms; with an oeisdata checkout also
keywords, xrefs, author), so that searching and naming a sequence need no OEIS
request: `search_entries`, built by `backscope index` (shared/search/indexer.py), and
`search_index`, one row saying what the last completed build holds. GIN indexes serve
word and prefix matches of names (tsvector), runs of terms (the distinct terms) and
the entries that cite a given one.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 11:40:55

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

def upgrade() -> None:
    op.create_table(
        "search_entries",
        sa.Column("id", sa.String(length=7), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("words", postgresql.TSVECTOR(), nullable=False),
        sa.Column("head", postgresql.TSVECTOR(), nullable=False),
        sa.Column("head_words", sa.Integer(), nullable=False),
        sa.Column("terms", sa.Text(), nullable=False),
        sa.Column("term_pairs", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("keywords", sa.Text(), nullable=True),
        sa.Column("xrefs", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("author", sa.Text(), nullable=True),
        sa.Column("offset", sa.BigInteger(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=True),
        sa.Column("modified", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dead", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("cites", postgresql.ARRAY(sa.String(length=7)), nullable=False),
        sa.Column("cited", sa.Integer(), server_default="0", nullable=False),
        sa.Column("popularity", sa.Integer(), server_default="0", nullable=False),
        sa.Column("digest", sa.String(length=32), nullable=False),
        sa.Column("stamp", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_entries")),
    )
    for column in ("cites", "term_pairs", "words"):
        op.create_index(
            f"ix_search_entries_{column}", "search_entries", [column], postgresql_using="gin"
        )
    op.create_index(
        "ix_search_entries_popularity",
        "search_entries",
        [sa.text("popularity DESC"), "id"],
    )
    op.create_table(
        "search_index",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("validators", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_index")),
    )


def downgrade() -> None:
    op.drop_table("search_index")
    op.drop_table("search_entries")

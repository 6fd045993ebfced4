"""ready-made documents

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 01:10:42.409911

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sequence_values", sa.Column("term_count", sa.Integer(), nullable=True))
    op.add_column("sequence_values", sa.Column("document", sa.Text(), nullable=True))
    op.add_column("sequence_values", sa.Column("etag", sa.String(length=32), nullable=True))
    # Fill the new columns for sequences cached before this migration (the same document
    # shared/store/writes.py builds for new ones).
    op.execute(
        """
        UPDATE sequence_values AS v
        SET term_count = cardinality(v.terms), document = doc.body, etag = md5(doc.body)
        FROM (
            SELECT v.id, '{"id":"' || v.id || '","name":'
                || to_json(coalesce(s.name, v.id || ' [name not yet loaded]'))::text
                || ',"values":{'
                || coalesce(string_agg('"' || (v.first_index + t.ord - 1) || '":"' || t.term
                                       || '"', ',' ORDER BY t.ord), '')
                || '}}' AS body
            FROM sequence_values AS v
            JOIN sequences AS s ON s.id = v.id
            LEFT JOIN LATERAL unnest(v.terms) WITH ORDINALITY AS t(term, ord) ON true
            GROUP BY v.id, s.name
        ) AS doc
        WHERE v.id = doc.id
        """
    )
    for column in ("term_count", "document", "etag"):
        op.alter_column("sequence_values", column, nullable=False)


def downgrade() -> None:
    op.drop_column("sequence_values", "etag")
    op.drop_column("sequence_values", "document")
    op.drop_column("sequence_values", "term_count")

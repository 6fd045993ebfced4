"""factored-through mark

`sequence_values.factored_through`: the largest index up to which every term has a
stored factorization (NULL: not even the first). Completeness was read from the largest
factored index, which a refresh that drops the factorizations of changed terms leaves
in place: the holes it made were then never factored again, or read as complete. The
mark is lowered by such a refresh and raised by the factor task as it stores
(shared/store/writes.py), so it is exact. Existing rows get it computed here.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 21:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sequence_values", sa.Column("factored_through", sa.BigInteger()))
    # The end of the run of factored indices that starts at the first index.
    op.execute(
        """
        UPDATE sequence_values AS v SET factored_through = least(
            v.first_index + v.term_count - 1,
            (SELECT f.n FROM factorizations AS f
             WHERE f.id = v.id AND f.n >= v.first_index AND NOT EXISTS (
                 SELECT 1 FROM factorizations AS g WHERE g.id = f.id AND g.n = f.n + 1)
             ORDER BY f.n LIMIT 1))
        WHERE EXISTS (
            SELECT 1 FROM factorizations AS f WHERE f.id = v.id AND f.n = v.first_index)
        """
    )


def downgrade() -> None:
    op.drop_column("sequence_values", "factored_through")

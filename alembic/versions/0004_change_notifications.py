"""change notifications

Every change to a sequence's cached rows sends NOTIFY backscope_changes with the
sequence id as payload ('*' when a table is truncated), so API processes can keep their
hot-path answers in memory and drop them the moment the data changes
(api/readcache.py). PostgreSQL delivers them at commit, once per distinct payload.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 03:05:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("sequences", "sequence_values", "factorizations")


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION backscope_notify_row() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('backscope_changes',
                              CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION backscope_notify_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('backscope_changes', '*');
            RETURN NULL;
        END $$
        """
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION backscope_notify_row()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_truncated AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION backscope_notify_truncate()"
        )


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_truncated ON {table}")
        op.execute(f"DROP TRIGGER {table}_changed ON {table}")
    op.execute("DROP FUNCTION backscope_notify_truncate()")
    op.execute("DROP FUNCTION backscope_notify_row()")

"""The committed migrations build exactly the schema the models describe."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from shared.admin import database as database_admin
from tests.helpers import table_rows, wait_until


@pytest.fixture
def empty_database(scratch_url: str) -> str:
    database_admin.create_database(scratch_url)
    return scratch_url


def tables(url: str) -> set[str]:
    return set(table_rows(url))


def test_single_head() -> None:
    heads = ScriptDirectory.from_config(database_admin.alembic_config("")).get_heads()
    assert len(heads) == 1


def test_upgrade_matches_models_and_downgrade_works(empty_database: str) -> None:
    database_admin.upgrade(empty_database)
    assert database_admin.current_revision(empty_database) == database_admin.head_revision()
    expected = {"sequences", "sequence_values", "searches", "fence_floors", "factorizations"}
    assert expected <= tables(empty_database)
    # Raises if autogenerate sees a difference between the models and the migrations.
    command.check(database_admin.alembic_config(empty_database))
    database_admin.downgrade(empty_database, "base")
    assert tables(empty_database) == {"alembic_version"}
    database_admin.upgrade(empty_database)  # and back up again
    assert database_admin.current_revision(empty_database) == database_admin.head_revision()


def test_no_in_progress_state_in_the_schema() -> None:
    from shared.models import Base

    columns = [c.name for table in Base.metadata.tables.values() for c in table.columns]
    assert not [c for c in columns if "progress" in c or "requested" in c or "request_time" in c]


def _database_at(url: str, revision: str) -> Engine:
    """The database migrated to `revision`, holding A000045's name (no values yet)."""
    database_admin.upgrade(url, revision)
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(
            text(
                'INSERT INTO sequences (id, name, "offset", meta_fetched_at)'
                " VALUES ('A000045', 'Fibonacci numbers', 0, now())"
            )
        )
    return engine


def test_upgrade_to_64_bit_indices_keeps_cached_data(empty_database: str) -> None:
    """0004 -> 0005 converts a database holding sequences and factorizations in place."""
    engine = _database_at(empty_database, "0004")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO sequence_values (id, first_index, terms, term_count, document,"
                " etag, token) VALUES ('A000045', 0, '{0,1,1,2}', 4, '{}', 'e', 7)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO factorizations (id, n, factors, token)"
                " VALUES ('A000045', 3, '[2,1]', 7)"
            )
        )
    database_admin.upgrade(empty_database)
    with engine.begin() as connection:
        assert connection.execute(text('SELECT name, "offset" FROM sequences')).all() == [
            ("Fibonacci numbers", 0)
        ]
        assert connection.execute(
            text("SELECT first_index, terms, etag FROM sequence_values")
        ).all() == [(0, ["0", "1", "1", "2"], "e")]
        assert connection.execute(text("SELECT n, factors FROM factorizations")).all() == [
            (3, "[2,1]")
        ]
        # and it now holds an index beyond 32 bits
        connection.execute(text("UPDATE sequence_values SET first_index = 3638334640025"))
        assert connection.scalar(text("SELECT first_index FROM sequence_values")) == 3638334640025
    engine.dispose()


def test_upgrade_to_refresh_bookkeeping_counts_cached_rows_as_never_checked(
    empty_database: str,
) -> None:
    """0005 -> 0006: what was cached has no known revision and was never checked, so
    the first refresh sweeps check it; the change notifications still fire."""
    engine = _database_at(empty_database, "0005")
    database_admin.upgrade(empty_database)
    with engine.begin() as connection:
        assert connection.execute(
            text(
                "SELECT name, revision, modified, checked_at, refresh_failures, refresh_retry_at"
                " FROM sequences"
            )
        ).all() == [("Fibonacci numbers", None, None, None, 0, None)]
    notified = engine.raw_connection()
    try:
        with notified.cursor() as cursor:
            cursor.execute("LISTEN backscope_changes")
        notified.commit()
        with engine.begin() as connection:
            connection.execute(text("UPDATE sequences SET checked_at = now()"))
        listener = notified.driver_connection
        wait_until(lambda: listener.poll() or listener.notifies, 5, "the notification")
        assert [n.payload for n in listener.notifies] == ["A000045"]
    finally:
        notified.close()
    engine.dispose()


def test_upgrade_to_the_factored_mark_computes_it_from_the_stored_factorizations(
    empty_database: str,
) -> None:
    """0008 -> 0009: the mark is the end of the run of factored indices from the first
    index, so a hole that a refresh left is factored again."""
    engine = _database_at(empty_database, "0008")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO sequence_values (id, first_index, terms, term_count, document,"
                " etag, token) VALUES ('A000045', 0, '{0,1,1,2,3,5}', 6, '{}', 'e', 7)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO factorizations (id, n, factors, token)"
                " SELECT 'A000045', n, '[]', 7 FROM unnest('{0,1,2,4,5}'::bigint[]) AS n"
            )
        )
    database_admin.upgrade(empty_database)
    with engine.begin() as connection:
        assert connection.scalar(text("SELECT factored_through FROM sequence_values")) == 2
    engine.dispose()

"""The committed migrations build exactly the schema the models describe."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.script import ScriptDirectory

from shared import database_admin
from tests.helpers import table_rows


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

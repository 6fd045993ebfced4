"""Maintenance operations (shared/admin/cache.py) and their Celery tasks, against real
PostgreSQL, Redis and a worker. The command line is tested in tests/test_cli.py."""

from __future__ import annotations

import dataclasses
import re

import pytest
from celery.result import AsyncResult
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from cli.commands import main
from shared.admin import cache as cache_admin
from shared.admin import database as database_admin
from shared.admin import queue as queue_admin
from shared.admin.cache import MaintenanceError, NotConfirmed, parse_targets
from shared.db import session_scope
from shared.models import Base, SearchResult, Sequence, SequenceValues
from shared.oeis.parsing import BFile
from shared.redis_db import get_redis
from shared.store.writes import store_values
from shared.work.lock import WorkLock, list_locks, lock_key
from shared.work.queue import app
from shared.work.units import values_work
from tests.helpers import busy_locks, execute, stored_ids, table_rows, wait_until
from worker.tasks import maintenance as maintenance_tasks

DATA_TABLES = (Sequence, SequenceValues, SearchResult)


def row_counts() -> dict[str, int]:
    with session_scope() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in DATA_TABLES
        }


def work_queues() -> dict[str, int]:
    return {name: n for name, n in queue_admin.queue_lengths().items() if name != "maintenance"}


def download(seq_id: str) -> dict[str, str]:
    return AsyncResult(queue_admin.enqueue(values_work(seq_id)), app=app).get(timeout=60)


# ---------------------------------------------------------------- ids and ranges


def test_parse_targets_expands_ranges_in_order_without_repeats() -> None:
    assert parse_targets(["A000003-A000005", "a000001", "A000004"]) == [
        "A000003",
        "A000004",
        "A000005",
        "A000001",
    ]
    assert len(parse_targets(["A000001-A010000"])) == 10_000


@pytest.mark.parametrize(
    "targets, message",
    [
        (["A000005-A000003"], "runs backwards"),
        (["A12"], "not an OEIS id"),
        (["A000001-B000002"], "not an OEIS id"),
        (["A000001-A010001"], "names 10,001 sequences; at most 10,000"),
        (["A000001-A006000", "A100001-A105000"], "more than 10,000"),
    ],
)
def test_parse_targets_rejects(targets: list[str], message: str) -> None:
    with pytest.raises(MaintenanceError, match=message):
        parse_targets(targets)


# ---------------------------------------------------------------- clear


def test_clear_leaves_nothing_behind(workers, fake_oeis, settings) -> None:
    # Two worker processes; the OEIS answers nothing until the test says so, and they
    # wait for it as long as that takes.
    workers("clear", env={"BACKSCOPE_OEIS_READ_TIMEOUT": "120"}, concurrency=2)
    assert download("A000045") == {"outcome": "stored"}
    fake_oeis.hang = True
    ids = [f"A91000{n}" for n in range(6)]
    tasks = {seq_id: queue_admin.enqueue(values_work(seq_id)) for seq_id in ids}

    def requested() -> list[str]:
        return [seq_id for seq_id in ids if fake_oeis.bfile_downloads(seq_id)]

    wait_until(lambda: len(requested()) == 2, 60, "both worker processes to be downloading")
    in_flight = requested()

    result = CliRunner().invoke(main, ["clear-db"])
    assert result.exit_code == 0, result.output
    dropped = re.search(r"Dropped (\d+) queued tasks", result.output)
    assert dropped and int(dropped[1]) >= 4, result.output  # + factoring A000045, if any
    assert list_locks(get_redis("locks")) == []
    assert work_queues() == dict.fromkeys(work_queues(), 0)
    assert row_counts() == {"sequences": 0, "sequence_values": 0, "searches": 0}
    assert database_admin.current_revision(settings.database_url) == database_admin.head_revision()

    # The downloads that were running finish, and their stale writes are refused.
    fake_oeis.hang = False
    for seq_id in in_flight:
        assert AsyncResult(tasks[seq_id], app=app).get(timeout=60) == {"outcome": "refused"}
    assert stored_ids() == set()
    assert list_locks(get_redis("locks")) == []

    # None of the dropped downloads runs: a download queued now is the next one to run.
    assert download("A910009") == {"outcome": "stored"}
    wait_until(lambda: not busy_locks(), 60, "the workers to be idle")
    assert requested() == in_flight
    assert stored_ids() == {"A910009"}


# ---------------------------------------------------------------- reset


@pytest.mark.parametrize("exists", [True, False])
def test_reset_rebuilds_from_migrations_and_fences_stale_writes(
    scratch_url: str, exists: bool
) -> None:
    if exists:
        database_admin.create_database(scratch_url)
        database_admin.upgrade(scratch_url)
        execute(
            scratch_url,
            "INSERT INTO sequences (id, name) VALUES ('A000045', 'Fibonacci')",
            "CREATE TABLE stray (x int)",
            "INSERT INTO stray VALUES (1)",
            "UPDATE alembic_version SET version_num = 'f00dfeed1234'",
        )
    client = get_redis("locks")
    stale = WorkLock(client, "values", "A000045", 10)
    assert stale.take("stale-task")

    done = cache_admin.reset(scratch_url, client, lambda: 7)

    assert (done.dropped_tasks, done.released_locks) == (7, [stale.name])
    assert (
        done.revision
        == database_admin.head_revision()
        == database_admin.current_revision(scratch_url)
    )
    rows = table_rows(scratch_url)
    assert set(rows) == set(Base.metadata.tables) | {"alembic_version"}  # no stray table
    assert rows["alembic_version"] == 1
    assert [name for name in DATA_TABLES if rows[name.__tablename__]] == []
    # A download that held its lock before the reset cannot write into the new database.
    with cache_admin._session(scratch_url) as session:
        assert not store_values(session, "A000045", BFile(0, ["1"]), stale.fence or 0)


def test_status_of_a_database_with_a_foreign_schema(scratch_url: str) -> None:
    database_admin.create_database(scratch_url)
    execute(
        scratch_url,
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
        "INSERT INTO alembic_version VALUES ('f00dfeed1234')",
    )
    status = cache_admin.database_status(scratch_url)
    assert (status.revision, status.head, status.error) == (
        "f00dfeed1234",
        database_admin.head_revision(),
        None,
    )


def test_status_of_a_missing_database(scratch_url: str) -> None:
    status = cache_admin.database_status(scratch_url)
    assert status.revision is None and "does not exist" in (status.error or "")


# ---------------------------------------------------------------- forget


def test_forget_removes_exactly_the_named_sequences(client, fake_oeis, settings) -> None:
    for seq_id in ("A000045", "A000040", "A000142"):
        assert client.get(f"/api/get_oeis_name_and_values/{seq_id}").status_code == 200
    locks = get_redis("locks")
    wait_until(lambda: not busy_locks(), 60, "background metadata downloads")
    assert WorkLock(locks, "metadata", "A000045", 30).take("test-owner")
    assert WorkLock(locks, "values", "A000040", 30).take("test-owner")

    done = cache_admin.forget(settings.database_url, locks, ["A000045", "A000142", "A000027"])

    assert done.deleted == ["A000045", "A000142"]
    assert lock_key("metadata", "A000045") in done.released_locks
    assert stored_ids() == {"A000040"}
    with session_scope() as session:
        assert set(session.scalars(select(Sequence.id))) == {"A000040"}
    left = [info.key for info in list_locks(locks)]
    assert lock_key("values", "A000040") in left
    assert [key for key in left if key.endswith(("A000045", "A000142"))] == []
    assert lock_key("values", "A000040") in cache_admin.release_target(locks, "A000040")

    # Asked again (once the API has heard of the change: api/readcache.py), it downloads.
    wait_until(
        lambda: (
            client.get("/api/get_oeis_name_and_values/A000045").status_code == 200
            and fake_oeis.bfile_downloads("A000045") == 2
        ),
        60,
        "A000045 to be downloaded again",
    )
    assert fake_oeis.bfile_downloads("A000045") == 2
    assert fake_oeis.bfile_downloads("A000040") == 1


def test_release_target_needs_an_id_or_a_key(database: str) -> None:
    with pytest.raises(MaintenanceError, match="neither a sequence id"):
        cache_admin.release_target(get_redis("locks"), "values:A000045")
    with pytest.raises(MaintenanceError, match="no lock held"):
        cache_admin.release_target(get_redis("locks"), lock_key("values", "A000045"))


# ---------------------------------------------------------------- as Celery tasks


def run(task: str, *args: object, **kwargs: object) -> object:
    return app.send_task(task, args=args, kwargs=kwargs).get(timeout=60)


def test_maintenance_tasks_run_on_a_worker(worker, fake_oeis) -> None:
    queued = run("backscope.maintenance.prefetch", ["A910040-A910042"])
    assert isinstance(queued, dict) and list(queued) == ["A910040", "A910041", "A910042"]
    for task_id in queued.values():
        assert AsyncResult(task_id, app=app).get(timeout=60) == {"outcome": "stored"}

    assert WorkLock(get_redis("locks"), "values", "A910041", 30).take("test-owner")
    (held,) = [
        lock for lock in run("backscope.maintenance.list_locks") if lock["owner"] == "test-owner"
    ]
    assert held["key"] == lock_key("values", "A910041")
    assert held["key"] in run("backscope.maintenance.release_lock", "A910041")

    forgotten = run("backscope.maintenance.forget", ["a910040"])
    assert forgotten["deleted"] == ["A910040"]
    assert stored_ids() == {"A910041", "A910042"}

    cleared = run("backscope.maintenance.clear_db")
    assert isinstance(cleared["dropped_tasks"], int)
    assert stored_ids() == set() and list_locks(get_redis("locks")) == []


def test_destructive_tasks_need_the_database_name_in_production(
    worker, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert download("A000045") == {"outcome": "stored"}
    production = dataclasses.replace(settings, env="production")
    monkeypatch.setattr(maintenance_tasks, "get_settings", lambda: production)
    name = database_admin.database_name(settings.database_url)
    for task, args in [
        (maintenance_tasks.clear_db, ()),
        (maintenance_tasks.reset_db, ()),
        (maintenance_tasks.forget, (["A000045"],)),
    ]:
        with pytest.raises(NotConfirmed, match=name):
            task(*args)
        with pytest.raises(NotConfirmed):
            task(*args, confirm="not-the-name")
    assert stored_ids() == {"A000045"}
    assert maintenance_tasks.forget(["A000045"], confirm=name)["deleted"] == ["A000045"]


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda url, locks, drop: cache_admin.clear(url, locks, drop), id="clear"),
        pytest.param(lambda url, locks, drop: cache_admin.reset(url, locks, drop), id="reset"),
        pytest.param(
            lambda url, locks, drop: cache_admin.forget(url, locks, ["A000045"]), id="forget"
        ),
    ],
)
def test_nothing_is_touched_when_the_database_is_down(database: str, operation) -> None:
    locks = get_redis("locks")
    assert WorkLock(locks, "values", "A000045", 30).take("test-owner")
    down = "postgresql+psycopg2://root@127.0.0.1:1/backscope"  # nothing listens on port 1

    def drop_queued() -> int:
        raise AssertionError("queued work dropped although the database is down")

    with pytest.raises(OperationalError):
        operation(down, locks, drop_queued)
    assert [info.owner for info in list_locks(locks)] == ["test-owner"]

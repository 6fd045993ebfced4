"""The `backscope` command line, as an operator uses it: click's CliRunner in-process,
and the installed console script in a subprocess where a real process matters (no
terminal, another database)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from cli import common
from cli.commands import main
from shared.admin import cache as cache_admin
from shared.admin import database as database_admin
from shared.admin import queue as queue_admin
from shared.db import session_scope
from shared.models import Base, SequenceValues
from shared.oeis.parsing import BFile
from shared.redis_db import get_redis
from shared.store.writes import store_values
from shared.work import queue
from shared.work.lock import WorkLock, list_locks, lock_key
from shared.work.units import DOWNLOADS_QUEUE
from tests.helpers import execute, stored_ids, table_rows, wait_until
from worker.tasks import maintenance as maintenance_tasks

BACKSCOPE = str(Path(sys.executable).with_name("backscope"))
COMMANDS = [
    [],
    ["migrate"],
    ["status"],
    ["clear-db"],
    ["reset-db"],
    ["forget"],
    ["locks"],
    ["locks", "release"],
    ["prefetch"],
    ["refresh"],
    ["services"],
]


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, prog_name="backscope")


def seed(*seq_ids: str) -> None:
    with session_scope() as session:
        for seq_id in seq_ids:
            assert store_values(session, seq_id, BFile(0, ["1", "2"]), 1)


def backscope(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, with stdin not a terminal."""
    return subprocess.run(
        [BACKSCOPE, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------- help


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "backscope")
def test_help_reads_well(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: backscope {' '.join(command)}".rstrip())
    summary = " ".join(result.output.split("\n\n")[1].split())
    assert summary.endswith(".") and len(summary) < 80


def test_command_list_is_not_truncated() -> None:
    listing = invoke("--help").output.split("Commands:")[1]
    lines = [line for line in listing.splitlines() if line.strip()]
    assert len(lines) == len(main.commands)
    assert not [line for line in lines if line.endswith("...")]


# ---------------------------------------------------------------- production guard


@pytest.fixture
def production(settings, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(
        common, "get_settings", lambda: dataclasses.replace(settings, env="production")
    )
    return database_admin.database_name(settings.database_url)


DESTRUCTIVE = [["clear-db"], ["reset-db"], ["forget", "A000045"]]


@pytest.mark.parametrize("command", DESTRUCTIVE, ids=" ".join)
def test_production_refuses_without_a_terminal(database: str, production: str, command) -> None:
    seed("A000045")
    result = invoke(*command, input=f"{production}\n")  # CliRunner's stdin is no terminal
    assert result.exit_code == 1
    assert f"database {production!r} on " in result.output
    assert "refusing: BACKSCOPE_ENV=production and no terminal" in result.output
    assert stored_ids() == {"A000045"}


@pytest.mark.parametrize("command", DESTRUCTIVE, ids=" ".join)
def test_production_refuses_a_wrong_name_at_the_prompt(
    database: str, production: str, command, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "has_terminal", lambda: True)
    seed("A000045")
    result = invoke(*command, input="backscope_something_else\n")
    assert result.exit_code == 1
    assert f"Type the database name ({production})" in result.output
    assert "not confirmed; nothing was changed" in result.output
    assert stored_ids() == {"A000045"}


def test_production_goes_ahead_with_the_typed_name_or_yes(
    worker, production: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "has_terminal", lambda: True)
    seed("A000045", "A000040")
    typed = invoke("forget", "A000045", input=f"{production}\n")
    assert typed.exit_code == 0, typed.output
    assert stored_ids() == {"A000040"}
    monkeypatch.setattr(common, "has_terminal", lambda: False)
    assert invoke("clear-db", "--yes").exit_code == 0
    assert stored_ids() == set()


@pytest.mark.parametrize("command", DESTRUCTIVE, ids=" ".join)
def test_production_refuses_in_a_process_without_a_terminal(database: str, command) -> None:
    seed("A000045")
    process = backscope(*command, BACKSCOPE_ENV="production")
    assert process.returncode == 1
    assert "About to " in process.stdout and database in process.stdout
    assert "refusing" in process.stderr and "--yes" in process.stderr
    assert stored_ids() == {"A000045"}


# ---------------------------------------------------------------- clear, reset, forget


def test_clear_db(worker, settings) -> None:
    seed("A000045")
    assert WorkLock(get_redis("locks"), "values", "A000040", 30).take("test-owner")
    result = invoke("clear-db")
    assert result.exit_code == 0, result.output
    about, done = result.output.splitlines()
    assert about == (
        f"About to delete all cached data in {database_admin.describe(settings.database_url)} "
        "(the schema stays)."
    )
    assert re.fullmatch(
        r"Dropped \d+ queued tasks?, released 1 lock and deleted all cached data\.", done
    )
    assert stored_ids() == set() and list_locks(get_redis("locks")) == []
    assert database_admin.current_revision(settings.database_url) == database_admin.head_revision()


@pytest.fixture
def old_database(scratch_url: str) -> str:
    """A database built by the old Backscope: its own tables, and an alembic_version
    naming a revision from a migrations folder that was deleted."""
    database_admin.create_database(scratch_url)
    execute(
        scratch_url,
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
        "INSERT INTO alembic_version VALUES ('5f2e1a9b7c3d')",
        "CREATE TABLE sequence (id varchar(7) PRIMARY KEY, values_requested boolean)",
        "INSERT INTO sequence VALUES ('A000045', true)",
    )
    return scratch_url


def test_reset_db_rebuilds_an_old_database(old_database: str) -> None:
    assert database_admin.current_revision(old_database) == "5f2e1a9b7c3d"
    process = backscope("reset-db", BACKSCOPE_DATABASE_URL=old_database)
    assert process.returncode == 0, process.stderr
    assert f"About to drop {database_admin.describe(old_database)}" in process.stdout
    assert f"rebuilt the database at revision {database_admin.head_revision()}." in process.stdout
    assert database_admin.current_revision(old_database) == database_admin.head_revision()
    rows = table_rows(old_database)
    assert set(rows) == set(Base.metadata.tables) | {"alembic_version"}
    counts = {
        table: n for table, n in rows.items() if table not in ("alembic_version", "fence_floors")
    }
    assert counts == dict.fromkeys(counts, 0)


def test_forget(worker) -> None:
    seed("A000045", "A000040")
    result = invoke("forget", "a000045", "A000027")
    assert result.exit_code == 0, result.output
    assert "Deleted: A000045. Released 0 locks." in result.output
    assert stored_ids() == {"A000040"}


@pytest.mark.parametrize("raw", ["A45", "B000045", "A0000450", "A000045;DROP"])
def test_forget_rejects_a_bad_id_before_changing_anything(database: str, raw: str) -> None:
    seed("A000045")
    result = invoke("forget", "A000045", raw)
    assert result.exit_code == 2
    assert "is not an OEIS id: expected A followed by six digits" in result.output
    assert stored_ids() == {"A000045"}


# ---------------------------------------------------------------- locks and status


@pytest.mark.parametrize(
    "seconds, shown",
    [
        (None, "never"),
        (0.0, "0s"),
        (0.4, "0s"),
        (59.4, "59s"),
        (59.6, "1m00s"),
        (61, "1m01s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (90061, "25h01m"),
    ],
)
def test_durations_read_well(seconds: float | None, shown: str) -> None:
    assert common.duration(seconds) == shown


def shown_seconds(shown: str) -> int:
    """Seconds from a duration as `backscope locks` shows one below an hour ("1m05s")."""
    match = re.fullmatch(r"(?:(\d+)m)?(\d+)s", shown)
    assert match, shown
    return int(match[1] or 0) * 60 + int(match[2])


def test_locks_list_and_release(database: str) -> None:
    client = get_redis("locks")
    taken = [
        WorkLock(client, kind, seq_id, 60)
        for kind, seq_id in [("values", "A000045"), ("metadata", "A000045"), ("values", "A000040")]
    ]
    started = time.monotonic()
    for n, lock in enumerate(taken):
        assert lock.take(f"owner-{n}")

    header, *lines = invoke("locks").output.splitlines()
    elapsed = time.monotonic() - started
    assert re.split(r"\s{2,}", header) == ["KEY", "OWNER TASK", "AGE", "TTL LEFT", "FENCING TOKEN"]
    rows = {key: rest for key, *rest in (re.split(r"\s{2,}", line) for line in lines)}
    assert set(rows) == {lock.name for lock in taken}
    for n, lock in enumerate(taken):
        owner, age, ttl, fence = rows[lock.name]
        assert (owner, fence) == (f"owner-{n}", str(lock.fence))
        # No older than the time since they were taken, with what is left of a 60 s TTL
        # (shown in whole seconds, rounded).
        assert 0 <= shown_seconds(age) <= math.ceil(elapsed)
        assert math.floor(60 - elapsed) <= shown_seconds(ttl) <= 60

    released = invoke("locks", "release", "A000045")
    assert released.exit_code == 0
    assert released.output.splitlines() == [
        f"released {lock_key('metadata', 'A000045')}",
        f"released {lock_key('values', 'A000045')}",
    ]
    assert invoke("locks", "release", lock_key("values", "A000040")).exit_code == 0
    assert invoke("locks").output == "No locks held.\n"

    again = invoke("locks", "release", "A000045")
    assert again.exit_code == 1 and "no lock held for 'A000045'" in again.output
    nonsense = invoke("locks", "release", "values:A000045")
    assert nonsense.exit_code == 1 and "neither a sequence id" in nonsense.output


def test_status(worker, settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker must answer the status's ping in time, however busy the machine is.
    monkeypatch.setattr(queue_admin, "PING_TIMEOUT", 3.0)
    seed("A000045")
    assert WorkLock(get_redis("locks"), "values", "A000040", 30).take("test-owner")
    result = invoke("status")
    assert result.exit_code == 0, result.output
    lines = dict(re.split(r"\s+", line, maxsplit=1) for line in result.output.splitlines())
    assert lines["postgres"] == database_admin.describe(settings.database_url)
    assert lines["revision"] == f"{database_admin.head_revision()} (the head: up to date)"
    assert lines["cached"] == "1 sequence, 1 with values"
    assert lines["refresh"] == "0 not checked for over 7d (BACKSCOPE_REFRESH_AFTER)"
    assert lines["queues"].startswith(f"{DOWNLOADS_QUEUE} 0, maintenance 0")
    assert worker.name in lines["workers"]
    assert lines["locks"] == "1 held (`backscope locks` lists them)"
    cache_admin.release_target(get_redis("locks"), "A000040")
    with session_scope() as session:  # as after migration 0006: never checked
        session.execute(text("UPDATE sequences SET checked_at = NULL, refresh_failures = 2"))
    output = invoke("status").output
    lines = dict(re.split(r"\s+", line, maxsplit=1) for line in output.splitlines())
    assert lines["refresh"] == (
        "1 not checked for over 7d (BACKSCOPE_REFRESH_AFTER), 1 failing; "
        "`backscope refresh --older-than 7d` checks them now"
    )


# ---------------------------------------------------------------- prefetch


def test_prefetch_thirty_sequences(worker, fake_oeis) -> None:
    ids = {f"A9100{n:02d}" for n in range(30)}
    result = invoke("prefetch", "A910000-A910029")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Queued downloads of 30 sequences."
    assert "30/30  done 30 · failed 0 · pending 0 (0 running)" in lines[-2]
    assert re.fullmatch(r"Prefetched 30 sequences in \d+s: 30 downloaded\.", lines[-1])
    assert stored_ids() == ids
    assert all(fake_oeis.bfile_downloads(seq_id) == 1 for seq_id in ids)

    again = invoke("prefetch", "A910000-A910009", "a910003")
    assert again.exit_code == 0, again.output
    assert again.output.splitlines()[-1].endswith(": 10 already cached.")
    assert all(fake_oeis.bfile_downloads(seq_id) == 1 for seq_id in ids)


def test_prefetch_reports_failures(worker, fake_oeis) -> None:
    fake_oeis.malformed.add("A910031")
    result = invoke("prefetch", "A910030-A910032", "A000000")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[-2].endswith(": 2 downloaded, 1 not in the OEIS, 1 failed.")
    assert lines[-1].startswith("  A910031: b-file for A910031 has a malformed line")


def test_prefetch_ctrl_c_leaves_the_work_queued(
    worker, fake_oeis, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(task_ids: list[str]) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(queue, "task_states", interrupted)
    result = invoke("prefetch", "A910050-A910052")
    assert result.exit_code == 130
    assert "Stopped watching; 3 downloads are not finished yet. They stay queued" in result.output
    wanted = {"A910050", "A910051", "A910052"}
    wait_until(lambda: stored_ids() == wanted, 60, "the downloads to run all the same")


@pytest.mark.parametrize(
    "target, message",
    [
        ("A000001-A010001", "names 10,001 sequences; at most 10,000 at a time"),
        ("A000100-A000001", "runs backwards"),
        ("A12", "is not an OEIS id"),
    ],
)
def test_prefetch_rejects_bad_targets(database: str, target: str, message: str) -> None:
    result = invoke("prefetch", "A000045", target)
    assert result.exit_code == 2
    assert message in result.output
    assert queue_admin.queue_lengths()[DOWNLOADS_QUEUE] == 0
    assert list_locks(get_redis("locks")) == []


def test_migrate_on_a_revision_the_migrations_do_not_know_is_one_line(database: str) -> None:
    with session_scope() as session:
        (revision,) = session.execute(text("SELECT version_num FROM alembic_version")).one()
        session.execute(text("UPDATE alembic_version SET version_num = 'not_ours'"))
    try:
        result = invoke("migrate")
        assert result.exit_code == 1
        assert result.output.startswith("Error: migrations: ")
        assert "not_ours" in result.output and "Traceback" not in result.output
    finally:
        with session_scope() as session:
            session.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def test_forget_task_refuses_a_bare_string(database: str) -> None:
    with pytest.raises(cache_admin.MaintenanceError, match="must be a list"):
        maintenance_tasks.forget("A000045")


# ---------------------------------------------------------------- refresh


def summary(output: str) -> tuple[str, set[str]]:
    """The summary line's start ("Checked 3 sequences") and its parts, in any order."""
    head, _, parts = output.splitlines()[-1].partition(": ")
    return re.sub(r" in \d+s$", "", head), set(parts.rstrip(".").split(", "))


def test_refresh_by_hand(worker, fake_oeis) -> None:
    assert invoke("prefetch", "A910001-A910003").exit_code == 0
    fake_oeis.publish("A910002", append=[3000])
    result = invoke("refresh", "A910001-A910003", "A000045")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == [
        "Leaving 1 named sequence alone (not cached).",
        "Queued checks of 3 sequences.",
    ]
    assert "3/3  done 3 · failed 0 · pending 0 (0 running)" in lines[-2]
    # Prefetching loads no names: the checks bring them (and A910002's new term).
    assert summary(result.output) == (
        "Checked 3 sequences",
        {"2 with new metadata (same terms)", "1 with new or corrected terms"},
    )
    with session_scope() as session:
        assert session.get(SequenceValues, "A910002").terms[-1] == "3000"
    assert fake_oeis.bfile_downloads("A910002") == 2
    assert fake_oeis.bfile_downloads("A910001") == 1

    assert invoke("refresh", "--older-than", "1h").output == "Nothing to check.\n"
    again = invoke("refresh", "--all")
    assert summary(again.output) == ("Checked 3 sequences", {"3 unchanged"})

    fake_oeis.throttle_always = True
    failed = invoke("refresh", "A910001")
    assert failed.exit_code == 1
    assert failed.output.splitlines()[-2].endswith(": 1 failed (their cached data is kept).")
    assert failed.output.splitlines()[-1] == "  A910001: the OEIS answered 503 for /search"
    assert stored_ids() == {"A910001", "A910002", "A910003"}


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "name sequences, or pass --all or --older-than"),
        (["--all", "A000045"], "--all checks every cached sequence: name none with it"),
        (["--older-than", "soon"], "'soon' is not a duration such as 90s, 30m, 12h, 7d or 2w"),
        (["A45"], "is not an OEIS id"),
    ],
)
def test_refresh_rejects_what_it_cannot_do(database: str, args: list[str], message: str) -> None:
    result = invoke("refresh", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert queue_admin.queue_lengths()[DOWNLOADS_QUEUE] == 0

"""Cached sequences follow the OEIS: beat's refresh sweep checks them against the fake
OEIS, which publishes new revisions at run time (FakeOEIS.publish).

The first tests call shared/store/revisions.py directly; the rest run real worker subprocesses
(the `workers` fixture: only they take downloads, and so the sweeps) with short
BACKSCOPE_REFRESH_AFTER, and serve requests through the API in this process.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

import api.jobs
from shared.admin import cache as cache_admin
from shared.admin.queue import drop_queued_work
from shared.db import session_scope
from shared.models import Factorization, Sequence, SequenceValues
from shared.oeis.parsing import BFile, Entry
from shared.redis_db import get_redis
from shared.store.revisions import (
    RefreshBacklog,
    RefreshState,
    refresh_backlog,
    refresh_candidates,
    store_refresh_failure,
)
from shared.store.writes import REVISION_MARGIN, forget, store_metadata, store_missing, store_values
from shared.work.lock import current_fence
from shared.work.queue import app as celery
from tests.conftest import ROOT
from tests.helpers import get_until_200, get_until_complete, wait_until

SEQ = "A900005"  # a(n) = Fibonacci(n) + 5, n = 0..19: quick to download and to factor
PATH = f"/api/get_oeis_name_and_values/{SEQ}"
# Every sweep checks every cached sequence (each check still runs once: see max_age).
EVERY_SWEEP = {"BACKSCOPE_REFRESH_AFTER": "0"}

_last_token = 0


def token() -> int:
    """A fencing token newer than any handed out so far (here or by the lock)."""
    global _last_token
    _last_token = max(_last_token, current_fence(get_redis("locks"))) + 1
    return _last_token


def sequence(seq_id: str) -> Sequence | None:
    with session_scope() as session:
        return session.get(Sequence, seq_id)


def factor_tokens(seq_id: str) -> dict[int, int]:
    """index -> the token its factorization was stored under"""
    with session_scope() as session:
        rows = session.execute(
            select(Factorization.n, Factorization.token).where(Factorization.id == seq_id)
        )
        return {n: stored for n, stored in rows}


def served(client) -> dict[str, Any]:
    """What the API answers for SEQ. Right after a refresh stored, that is the new data
    as soon as the database's change notification reaches this process (a moment
    later: see api/readcache.py)."""
    response = client.get(PATH)
    assert response.status_code == 200
    return response.get_json()


def sweep(timeout: float = 60) -> dict[str, dict[str, Any]]:
    """Run one refresh sweep on a worker and wait for the checks it queued: sequence id
    -> the check's result."""
    queued = celery.send_task("backscope.refresh_sweep").get(timeout=timeout)
    return {
        seq_id: celery.AsyncResult(task_id).get(timeout=timeout)
        for seq_id, task_id in queued.items()
    }


@pytest.fixture
def beat(tmp_path: Path) -> Iterator:
    """Start celery beat with extra settings; stopped at the end of the test."""
    processes: list[subprocess.Popen] = []

    def start(**env: str) -> None:
        schedule = tmp_path / "beat-schedule"
        command = ["celery", "-A", "worker.app", "beat", "-l", "INFO", "--schedule", schedule]
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", *map(str, command)],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


# ------------------------------------------------------------------ the store


def test_a_revision_is_recorded_only_when_the_values_include_it(database) -> None:
    """Values downloaded before an edit must not pass for that revision's (say the
    name was loaded only after the edit): then the revision stays unknown, and the
    next check downloads the b-file."""
    now = datetime.now(UTC)
    old = Entry(SEQ, "Old name", 0, [], "nonn", "", revision=7, modified=now - 2 * REVISION_MARGIN)
    with session_scope() as session:
        assert store_values(session, SEQ, BFile(0, ["5", "6"]), token())
        assert store_metadata(session, old, token())
    assert (sequence(SEQ).revision, sequence(SEQ).modified) == (7, old.modified)
    edited = dataclasses.replace(old, revision=8, modified=now - timedelta(minutes=1))
    with session_scope() as session:
        assert store_metadata(session, edited, token())
    assert (sequence(SEQ).revision, sequence(SEQ).modified) == (None, edited.modified)
    # Without values: any downloaded from now on include a revision made long enough ago.
    with session_scope() as session:
        session.execute(text("DELETE FROM sequence_values"))
        assert store_metadata(session, old, token())
    assert sequence(SEQ).revision == 7
    with session_scope() as session:
        assert store_metadata(session, edited, token())
    assert sequence(SEQ).revision is None


def test_values_are_current_when_the_revision_is_known_or_made_before_the_download() -> None:
    now = datetime.now(UTC)
    entry = Entry(SEQ, "F", 0, [], "", "", revision=8, modified=now - timedelta(days=30))
    recent = dataclasses.replace(entry, modified=now - timedelta(minutes=1))
    assert RefreshState(8, now - timedelta(days=2), None).values_current(recent)
    assert RefreshState(7, now - timedelta(days=2), None).values_current(entry)
    assert not RefreshState(7, now - timedelta(days=2), None).values_current(recent)
    assert not RefreshState(None, now, None).values_current(recent)
    assert not RefreshState(None, now, None).values_current(
        dataclasses.replace(entry, revision=None, modified=None)
    )
    assert RefreshState(None, None, None).values_current(recent)  # no values cached


def test_sweep_candidates_are_the_oldest_checks_due(database) -> None:
    week = 7 * 86400
    ages = {"A000001": None, "A000002": 10, "A000003": 0, "A000006": 8}  # days, None: never
    with session_scope() as session:
        for seq_id in ages:
            assert store_values(session, seq_id, BFile(0, ["1"]), token())
        for seq_id, days in ages.items():
            checked = None if days is None else datetime.now(UTC) - timedelta(days=days)
            session.execute(
                text("UPDATE sequences SET checked_at = :at WHERE id = :id"),
                {"at": checked, "id": seq_id},
            )
        entry = Entry("A000004", "Metadata only", 0, [], "", "")
        assert store_metadata(session, entry, token())  # never checked either
        assert store_missing(session, "A000005", token())  # not cached: never checked
        assert store_refresh_failure(session, "A000006", token(), step=3600, cap=week)
        assert store_refresh_failure(session, "A000006", token(), step=3600, cap=week)

        due = refresh_candidates(session, week, backoff=True)
        assert due == ["A000001", "A000004", "A000002"]  # A000006 waits out its backoff
        assert refresh_candidates(session, week, limit=2, backoff=True) == due[:2]
        assert refresh_candidates(session, week) == [*due, "A000006"]
        assert refresh_candidates(session, None) == [*due, "A000006", "A000003"]
        assert refresh_candidates(session, None, seq_ids=["A000003", "A000005"]) == ["A000003"]
        assert refresh_backlog(session, week) == RefreshBacklog(unchecked=4, failing=1)


def test_failed_refreshes_back_off(database) -> None:
    """After n failures in a row the next try waits step * (2^(n-1) - 1): the next
    sweep, then every other sweep, every fourth..., at most `cap`."""
    with session_scope() as session:
        assert store_values(session, SEQ, BFile(0, ["1"]), token())
    waits = []
    for _ in range(4):
        with session_scope() as session:
            assert store_refresh_failure(session, SEQ, token(), step=3600, cap=5 * 3600)
            waits.append(
                session.scalar(
                    text("SELECT extract(epoch FROM refresh_retry_at - now()) FROM sequences")
                )
            )
    assert [round(wait) for wait in waits] == [0, 3600, 3 * 3600, 5 * 3600]
    assert sequence(SEQ).refresh_failures == 4
    # A forgotten sequence is not brought back by a late failure.
    with session_scope() as session:
        forget(session, [SEQ], token())
    with session_scope() as session:
        assert not store_refresh_failure(session, SEQ, 1, step=3600, cap=3600)
    assert sequence(SEQ) is None


# ------------------------------------------------------------------ through the workers


def test_a_new_revision_is_served_within_one_sweep_and_the_old_one_until_then(
    app, fake_oeis, workers, beat, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A request that ever had to wait for the refresh would be answered 202 at once.
    quick = dataclasses.replace(settings, sync_wait=0.1)
    monkeypatch.setattr(api.jobs, "get_settings", lambda: quick)
    workers("refresher", queues="downloads,factors", env={"BACKSCOPE_REFRESH_AFTER": "2"})
    client = app.test_client()
    before = get_until_200(client, PATH)
    old = before.get_json()
    factors = f"/api/get_oeis_factors/{SEQ}/0"
    assert get_until_complete(client, factors).get_json()["factors"]["3"] == "[7,1]"
    factored = factor_tokens(SEQ)

    name = "Test fixture 5, corrected: a(n) = Fibonacci(n) + 5."
    fake_oeis.publish(SEQ, append=[6770, 10951], change={3: 12}, name=name)
    published = time.time()
    new = {"id": SEQ, "name": name, "values": {**old["values"], "3": "12"}}
    new["values"].update({"20": "6770", "21": "10951"})
    fake_oeis.latency = 0.5  # each OEIS request of the refresh takes a while
    answers: list[tuple[float, int, Any, str | None]] = []
    stop = threading.Event()

    def ask_again_and_again() -> None:
        while not stop.is_set():
            response = client.get(PATH)
            etag = response.headers.get("ETag")
            answers.append((time.time(), response.status_code, response.get_json(), etag))
            time.sleep(0.01)

    asking = threading.Thread(target=ask_again_and_again)
    asking.start()
    try:
        beat(BACKSCOPE_REFRESH_INTERVAL="1")
        wait_until(lambda: answers and answers[-1][2] == new, 60, "the new revision to be served")
    finally:
        stop.set()
        asking.join()

    assert {status for _, status, _, _ in answers} == {200}
    bodies = [body for _, _, body, _ in answers]
    switched = bodies.index(new)
    assert bodies[:switched] == [old] * switched  # complete old answers, then new ones
    assert bodies[switched:] == [new] * (len(bodies) - switched)
    # Old answers kept coming while the refresh was asking the OEIS.
    checking = [r.time for r in fake_oeis.requests if r.path == "/search" and r.time > published]
    assert any(at > min(checking) for at, *_ in answers[:switched])
    assert answers[0][3] == before.headers["ETag"] != answers[-1][3]
    assert fake_oeis.bfile_downloads(SEQ) == 2

    factors_now = get_until_complete(client, factors).get_json()["factors"]
    assert (factors_now["3"], factors_now["20"], factors_now["21"]) == (
        "[2,2;3,1]",
        "[2,1;5,1;677,1]",
        "[47,1;233,1]",
    )
    unchanged = {n: stored for n, stored in factored.items() if n != 3}
    assert {n: factor_tokens(SEQ)[n] for n in unchanged} == unchanged  # not computed again
    # The new revision is recorded: later checks need no b-file.
    checked = sequence(SEQ).checked_at
    wait_until(lambda: sequence(SEQ).checked_at > checked, 30, "another check")
    assert fake_oeis.bfile_downloads(SEQ) == 2
    assert sequence(SEQ).revision == 2


def test_an_unchanged_sequence_costs_one_small_request_and_no_bfile(
    app, fake_oeis, workers
) -> None:
    workers("refresher", env=EVERY_SWEEP)
    client = app.test_client()
    body = get_until_200(client, PATH).get_json()
    searches = fake_oeis.count("/search")
    assert sweep() == {SEQ: {"outcome": "unchanged"}}
    assert fake_oeis.count("/search") == searches + 1
    assert fake_oeis.bfile_downloads(SEQ) == 1
    # A row from before refreshing existed (no revision known, never checked): the
    # entry's time, long before the download, says the values are current.
    with session_scope() as session:
        session.execute(text("UPDATE sequences SET revision = NULL, checked_at = NULL"))
    assert sweep() == {SEQ: {"outcome": "unchanged"}}
    assert fake_oeis.bfile_downloads(SEQ) == 1
    assert sequence(SEQ).revision == 1 and sequence(SEQ).checked_at is not None
    assert client.get(PATH).get_json() == body


FAULTS = {
    "503": lambda oeis: setattr(oeis, "throttle_always", True),
    "malformed": lambda oeis: oeis.malformed.add(SEQ),
    "hang": lambda oeis: setattr(oeis, "hang", True),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_refresh_meeting_an_upstream_fault_keeps_the_old_data(
    app, fake_oeis, workers, fault: str
) -> None:
    refresher = workers("refresher", env=EVERY_SWEEP)
    client = app.test_client()
    before = get_until_200(client, PATH)
    fake_oeis.publish(SEQ, change={3: 12}, name="Renamed")
    FAULTS[fault](fake_oeis)

    result = sweep()[SEQ]
    assert result["outcome"] == "failed" and result["error"]
    after = client.get(PATH)
    assert after.status_code == 200
    assert (after.get_json(), after.headers["ETag"]) == (before.get_json(), before.headers["ETag"])
    assert sequence(SEQ).refresh_failures == 1
    assert "refresh.failed" in refresher.output()

    fake_oeis.configure(**fake_oeis.DEFAULTS)  # the fault is over
    assert sweep() == {SEQ: {"outcome": "new_terms"}}  # tried again at the next sweep
    wait_until(lambda: served(client)["values"]["3"] == "12", 5, "the new terms")
    assert sequence(SEQ).refresh_failures == 0


@pytest.mark.parametrize("operation", ["forget", "clear-db"])
def test_a_refresh_racing_forget_or_clear_cannot_bring_the_data_back(
    app, fake_oeis, workers, settings, operation: str
) -> None:
    workers("refresher", env=EVERY_SWEEP)
    client = app.test_client()
    get_until_200(client, PATH)
    fake_oeis.publish(SEQ, change={3: 12})
    fake_oeis.latency = 1.0
    searches = fake_oeis.count("/search")
    queued = celery.send_task("backscope.refresh_sweep").get(timeout=30)
    wait_until(lambda: fake_oeis.count("/search") > searches, 30, "the refresh to start")
    if operation == "forget":
        cache_admin.forget(settings.database_url, get_redis("locks"), [SEQ])
    else:
        cache_admin.clear(settings.database_url, get_redis("locks"), drop_queued_work)

    assert celery.AsyncResult(queued[SEQ]).get(timeout=30) == {"outcome": "refused"}
    assert fake_oeis.bfile_downloads(SEQ) == 2  # it downloaded the new b-file, in vain
    assert sequence(SEQ) is None
    with session_scope() as session:
        assert session.get(SequenceValues, SEQ) is None


def write_seq(root: Path, revision: int, when: datetime, name: str) -> None:
    """A900005's entry in an oeisdata checkout (as `git pull` would update it)."""
    path = root / "seq" / "A900" / f"{SEQ}.seq"
    path.parent.mkdir(parents=True, exist_ok=True)
    eastern = when.astimezone(timezone(timedelta(hours=-5)))
    path.write_text(
        f"%I {SEQ} #{revision} {eastern:%b %d %Y %H:%M:%S}\n"
        f"%N {SEQ} {name}\n%O {SEQ} 0,1\n%Y {SEQ} Cf. A000045.\n%K {SEQ} nonn,easy\n"
    )


def test_a_local_oeisdata_checkout_is_used_the_same_way(
    app, fake_oeis, workers, tmp_path: Path
) -> None:
    write_seq(tmp_path, 1, datetime(2024, 1, 15, tzinfo=UTC), "Fibonacci(n) + 5.")
    workers("refresher", env={**EVERY_SWEEP, "BACKSCOPE_OEISDATA_DIR": str(tmp_path)})
    client = app.test_client()
    assert get_until_200(client, PATH).get_json()["name"] == "Fibonacci(n) + 5."
    assert sweep() == {SEQ: {"outcome": "unchanged"}}

    fake_oeis.publish(SEQ, change={3: 12})  # the b-file on the web...
    write_seq(tmp_path, 2, datetime.now(UTC), "Fibonacci(n) + 5, corrected.")  # ...the entry
    assert sweep() == {SEQ: {"outcome": "new_terms"}}
    wait_until(lambda: served(client)["values"]["3"] == "12", 5, "the new terms")
    assert served(client)["name"] == "Fibonacci(n) + 5, corrected."
    assert fake_oeis.count("/search") == 0  # every check read the checkout
    assert fake_oeis.bfile_downloads(SEQ) == 2

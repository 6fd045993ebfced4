"""Factorizations: stored per index, computed once, on their own queue and workers.

The first tests call the store and the task body directly; the rest go through the API,
a download worker (the session's) and factor workers each test starts for itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sympy
from sqlalchemy import func, select

import api.jobs
import api.routes.factors
from shared.db import session_scope
from shared.factors import batches
from shared.factors.batches import Limits, factor_sequence, factor_term
from shared.factors.factorize import NO_FAC
from shared.models import Factorization, Sequence, SequenceValues
from shared.oeis.parsing import BFile
from shared.redis_db import get_redis
from shared.store.writes import clear_all, forget, store_factors, store_values
from shared.work.lock import list_locks, lock_key, read_lock, release_value
from shared.work.queue import app as celery
from shared.work.units import FACTORS_QUEUE, factors_work
from tests.conftest import WorkerProcess
from tests.helpers import get_until_200, get_until_complete, wait_until

LIMITS = Limits(budget=2.0, max_bits=512)


def rows(seq_id: str) -> dict[int, tuple[str, int, object]]:
    """index -> (factorization, token, factored_at)"""
    with session_scope() as session:
        found = session.execute(
            select(
                Factorization.n,
                Factorization.factors,
                Factorization.token,
                Factorization.factored_at,
            )
            .where(Factorization.id == seq_id)
            .order_by(Factorization.n)
        )
        return {n: (text, token, at) for n, text, token, at in found}


def product(text: str) -> int:
    """The value a factorization string stands for (checking that the primes ascend)."""
    if text == "[0,1]":
        return 0
    pairs = [tuple(map(int, pair.split(","))) for pair in text[1:-1].split(";") if pair]
    sign = 1
    if pairs and pairs[0] == (-1, 1):
        sign, pairs = -1, pairs[1:]
    primes = [p for p, _ in pairs]
    assert primes == sorted(set(primes)) and all(sympy.isprime(p) for p in primes), text
    return sign * math.prod(p**e for p, e in pairs)


def queued_factor_tasks() -> int:
    with celery.connection_for_read() as connection:
        queue = celery.amqp.queues[FACTORS_QUEUE].bind(connection.default_channel)
        return queue.queue_declare().message_count


def process_tree(pid: int) -> dict[int, tuple[int, int]]:
    """pid -> (depth below `pid`, niceness) for `pid` and every process under it."""
    parents: dict[int, tuple[int, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            parents[int(stat.parent.name)] = (int(fields[1]), int(fields[16]))
    tree = {pid: (0, parents.get(pid, (0, 0))[1])}
    while added := {
        child: (tree[parent][0] + 1, nice)
        for child, (parent, nice) in parents.items()
        if parent in tree and child not in tree
    }:
        tree.update(added)
    return tree


def purge_factor_queue() -> None:
    """Drop queued factor work and its locks, as clear-db drops queued work and locks:
    waiters then start the work again (a queued task's lock is kept while it is
    waited for)."""
    with celery.connection_for_write() as connection:
        celery.amqp.queues[FACTORS_QUEUE].bind(connection.default_channel).purge()
    for info in list_locks(get_redis("locks")):
        if info.key.startswith(lock_key("factors", "")):
            release_value(get_redis("locks"), info)


# ------------------------------------------------------------------ store and body


@pytest.fixture
def stored_naturals(database):
    """A000027's first 100 terms stored directly (no download, so no background factoring)."""
    with session_scope() as session:
        store_values(session, "A000027", BFile(1, [str(n) for n in range(1, 101)]), token=5)
    return 5


def test_factor_term_checks_the_length_before_converting() -> None:
    assert factor_term("-12", LIMITS, None) == "[-1,1;2,2;3,1]"
    assert factor_term("0", LIMITS, None) == "[0,1]"
    assert factor_term(str(2**512), LIMITS, None) == "[2,512]"  # exactly the limit: tried
    assert factor_term(str(2**512 + 1), LIMITS, None) == NO_FAC  # above it: not tried
    assert factor_term("1" + "0" * 200, LIMITS, None) == NO_FAC
    # int("9" * 5000) would raise ValueError (CPython's 4300-digit limit): never converted.
    assert factor_term("9" * 5000, Limits(2.0, 14000), None) == NO_FAC
    assert factor_term("-" + "7" * 100_000, LIMITS, None) == NO_FAC


def test_body_factors_only_missing_terms_in_batches(stored_naturals) -> None:
    assert factor_sequence("A000027", 10, token=100, limits=LIMITS) == "stored"
    first = rows("A000027")
    assert list(first) == list(range(1, 11))
    assert first[1][0] == "[]" and first[6][0] == "[2,1;3,1]" and first[8][0] == "[2,3]"
    assert factor_sequence("A000027", 10, token=101, limits=LIMITS) == "cached"
    assert factor_sequence("A000027", 0, token=102, limits=LIMITS) == "stored"
    everything = rows("A000027")
    assert len(everything) == 100
    assert all(everything[n] == first[n] for n in first)  # not computed again
    assert {everything[n][1] for n in range(11, 101)} == {102}
    assert factor_sequence("A000045", 0, token=103, limits=LIMITS) == "no_values"


def test_body_reads_the_terms_a_page_at_a_time(stored_naturals, monkeypatch) -> None:
    monkeypatch.setattr(batches, "PAGE_TERMS", 7)  # pages end at 7, 14, ... 98, 100
    assert factor_sequence("A000027", 10, token=100, limits=LIMITS) == "stored"  # in page 2
    assert list(rows("A000027")) == list(range(1, 11))
    assert factor_sequence("A000027", 0, token=101, limits=LIMITS) == "stored"
    everything = rows("A000027")
    assert list(everything) == list(range(1, 101))
    assert {everything[n][1] for n in range(1, 11)} == {100}  # the first ten kept
    assert all(product(everything[n][0]) == n for n in everything)


def test_body_stops_at_the_end_of_its_slice_with_progress_stored(stored_naturals) -> None:
    assert factor_sequence("A000027", 0, token=100, limits=LIMITS, slice_seconds=0) == "partial"
    assert len(rows("A000027")) == 1
    assert factor_sequence("A000027", 0, token=101, limits=LIMITS) == "stored"
    assert len(rows("A000027")) == 100


def test_factor_writes_are_fenced(stored_naturals) -> None:
    values_token = stored_naturals
    with session_scope() as session:
        assert store_factors(session, "A000027", values_token, [(1, "[]"), (2, "[2,1]")], 50)
    # An older task's write neither overwrites a newer row nor is lost where none exists.
    with session_scope() as session:
        assert store_factors(session, "A000027", values_token, [(2, "x"), (3, "[3,1]")], 40)
    assert {n: row[:2] for n, row in rows("A000027").items()} == {
        1: ("[]", 50),
        2: ("[2,1]", 50),
        3: ("[3,1]", 40),
    }
    # Factors of values that have since been replaced are refused.
    with session_scope() as session:
        assert not store_factors(session, "A000027", values_token - 1, [(4, "[2,2]")], 60)
    # Forgetting the sequence deletes its factors and refuses writes started before.
    with session_scope() as session:
        forget(session, ["A000027"], token=70)
    assert rows("A000027") == {}
    with session_scope() as session:
        store_values(session, "A000027", BFile(1, ["1", "2"]), token=80)
    with session_scope() as session:
        assert not store_factors(session, "A000027", 80, [(1, "[]")], 65)
    with session_scope() as session:
        assert store_factors(session, "A000027", 80, [(1, "[]")], 81)
    with session_scope() as session:
        clear_all(session, token=90)
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Factorization)) == 0
        assert session.scalar(select(func.count()).select_from(Sequence)) == 0


def test_new_values_drop_old_factors_only_when_the_terms_changed(stored_naturals) -> None:
    assert factor_sequence("A000027", 5, token=100, limits=LIMITS) == "stored"
    same = BFile(1, [str(n) for n in range(1, 101)])
    with session_scope() as session:
        assert store_values(session, "A000027", same, token=200)
    assert len(rows("A000027")) == 5
    with session_scope() as session:
        assert store_values(session, "A000027", BFile(0, ["7", "8"]), token=300)
    assert rows("A000027") == {}
    # A factor task that read the old values cannot store their factors now.
    with session_scope() as session:
        assert not store_factors(session, "A000027", 200, [(0, "[]")], token=350)
    assert factor_sequence("A000027", 0, token=400, limits=LIMITS) == "stored"
    assert {n: row[0] for n, row in rows("A000027").items()} == {0: "[7,1]", 1: "[2,3]"}


def test_new_values_drop_only_the_factors_of_changed_indices(stored_naturals) -> None:
    assert factor_sequence("A000027", 10, token=100, limits=LIMITS) == "stored"
    corrected = [str(n) for n in range(1, 101)]
    corrected[4] = "25"  # a(5) corrected, and two terms appended
    with session_scope() as session:
        assert store_values(session, "A000027", BFile(1, [*corrected, "101", "102"]), token=200)
    kept = rows("A000027")
    assert list(kept) == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert {row[1] for row in kept.values()} == {100}  # not computed again
    assert factor_sequence("A000027", 0, token=300, limits=LIMITS) == "stored"
    everything = rows("A000027")
    assert everything[5][0] == "[5,2]" and everything[102][0] == "[2,1;3,1;17,1]"
    assert {everything[n][1] for n in kept} == {100}
    # Compared index by index, whatever the first index: a b-file that now starts at
    # a(0) = 0 (and has a(5) = 5 again) keeps all but a(5)'s, one shifted keeps none.
    with session_scope() as session:
        assert store_values(session, "A000027", BFile(0, [str(n) for n in range(103)]), 400)
    assert sorted(rows("A000027")) == sorted(set(everything) - {5})
    with session_scope() as session:
        assert store_values(session, "A000027", BFile(2, [str(n) for n in range(1, 50)]), 500)
    assert rows("A000027") == {}


# ------------------------------------------------------------------ through the API


@pytest.fixture
def factor_workers(database, tmp_path: Path):
    """Start factor workers (queue `factors` only) for this test; downloads stay with the
    session worker. Factor work queued by earlier tests is dropped first.

    They are killed at the end rather than asked to finish what they run (a whole
    sequence's factoring can take minutes), together with the gp children they started
    (in sessions of their own, so the worker's process group does not include them).
    """
    started: list[WorkerProcess] = []

    def start(name: str = "factors", concurrency: int = 2, **env: str) -> WorkerProcess:
        purge_factor_queue()
        process = WorkerProcess(
            name, tmp_path / f"{name}.log", queues=FACTORS_QUEUE, concurrency=concurrency, env=env
        )
        started.append(process)
        return process.wait_ready()

    yield start
    purge_factor_queue()
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            process.signal(signal.SIGSTOP)  # no new children from here on
        for pid in process_tree(process.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.stop()


@pytest.mark.parametrize(
    "path, status",
    [
        ("/api/get_oeis_factors/A000000/5", 404),
        ("/api/get_oeis_factors/A0000/5", 400),
        ("/api/get_oeis_factors/A000045/-1", 400),
        ("/api/get_oeis_factors/A000045/ten", 400),
    ],
)
def test_factors_errors_are_those_of_values(client, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert isinstance(response.get_json()["error"], str)


@pytest.mark.slow
def test_factors_shape_and_format(client, factor_workers) -> None:
    factor_workers()
    response = get_until_complete(client, "/api/get_oeis_factors/A000027/12")
    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == ["id", "name", "factors", "complete"]
    assert body["id"] == "A000027" and isinstance(body["name"], str)
    assert body["factors"] == {
        "1": "[]",
        "2": "[2,1]",
        "3": "[3,1]",
        "4": "[2,2]",
        "5": "[5,1]",
        "6": "[2,1;3,1]",
        "7": "[7,1]",
        "8": "[2,3]",
        "9": "[3,2]",
        "10": "[2,1;5,1]",
        "11": "[11,1]",
        "12": "[2,2;3,1]",
    }
    assert list(body["factors"]) == [str(n) for n in range(1, 13)]  # index order

    fib = get_until_complete(client, "/api/get_oeis_factors/a000045/6").get_json()
    assert fib["id"] == "A000045"
    assert fib["factors"] == {
        "0": "[0,1]",
        "1": "[]",
        "2": "[]",
        "3": "[2,1]",
        "4": "[3,1]",
        "5": "[5,1]",
    }

    # Negative indices and values; every string multiplies out to its value.
    factors = get_until_complete(client, "/api/get_oeis_factors/A078302/0").get_json()["factors"]
    values = client.get("/api/get_oeis_values/A078302/0").get_json()["values"]
    assert list(factors) == list(values) and len(factors) == 244
    assert factors["-43"] == "[-1,1;2,1;3,1;43,1;307,1]"  # -79206
    assert all(product(factors[n]) == int(values[n]) for n in values)


@pytest.mark.slow
def test_more_terms_compute_only_the_missing_ones(client, factor_workers, stored_naturals) -> None:
    factor_workers()
    assert get_until_complete(client, "/api/get_oeis_factors/A000027/10").status_code == 200
    first = rows("A000027")
    assert list(first) == list(range(1, 11))

    body = get_until_complete(client, "/api/get_oeis_factors/A000027/25").get_json()
    assert list(body["factors"]) == [str(n) for n in range(1, 26)]
    after = rows("A000027")
    assert list(after) == list(range(1, 26))
    assert all(after[n] == first[n] for n in first)  # same token and time: not recomputed
    assert len({after[n][1] for n in range(11, 26)} - {first[1][1]}) == 1  # one newer task

    # Fewer terms than are stored: answered at once, and no factor work is started.
    response = client.get("/api/get_oeis_factors/A000027/5")
    assert response.status_code == 200
    assert read_lock(get_redis("locks"), lock_key("factors", "A000027")) is None
    assert rows("A000027") == after

    everything = get_until_complete(client, "/api/get_oeis_factors/A000027/0").get_json()
    assert len(everything["factors"]) == 100


@pytest.mark.slow
def test_identical_requests_waiting_for_factoring_build_the_answer_once(
    client, factor_workers, monkeypatch
) -> None:
    # Values and name stored, factoring queued; no factor worker yet.
    assert client.get("/api/get_oeis_name_and_values/A153080").status_code == 200
    reads = []
    real = api.routes.factors.read_factors

    def counted(*args):
        reads.append(args)
        return real(*args)

    monkeypatch.setattr(api.routes.factors, "read_factors", counted)
    factor_workers()
    path = "/api/get_oeis_factors/A153080/0"
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: client.get(path), range(20)))
    assert {a.status_code for a in answers} == {200}
    assert all(a.get_json()["complete"] for a in answers)
    assert len({a.data for a in answers}) == 1
    # Waiting, they only looked the sequence up; then one of them read the factors and
    # built the answer, which the others were given.
    assert len(reads) == 1


@pytest.mark.slow
def test_downloads_schedule_factoring_and_values_requests_fill_gaps(client, factor_workers) -> None:
    factor_workers()
    assert client.get("/api/get_oeis_values/A153080/3").status_code == 200  # 1001 terms
    wait_until(lambda: len(rows("A153080")) == 1001, 120, "background factoring of the download")
    response = client.get("/api/get_oeis_factors/A153080/0")
    assert response.status_code == 200
    assert response.get_json()["factors"]["1000"] == "[2,1;3,1;11,1;197,1]"  # 13 * 1000 + 2

    # Everything factored: a values request starts no work (nothing but two reads).
    get_redis("locks").flushdb()
    assert client.get("/api/get_oeis_values/A153080/50").status_code == 200
    assert read_lock(get_redis("locks"), lock_key("factors", "A153080")) is None
    assert queued_factor_tasks() == 0

    # Factoring stopped after 40 terms (say the background task died): a values request
    # schedules the rest.
    with session_scope() as session:
        session.execute(Factorization.__table__.delete().where(Factorization.n >= 40))
        session.execute(SequenceValues.__table__.update().values(factored_through=39))

    def requested_and_factored() -> bool:
        # (The API hears of the deletion a moment after it commits: api/readcache.py.)
        assert client.get("/api/get_oeis_values/A153080/50").status_code == 200
        return len(rows("A153080")) == 50

    wait_until(requested_and_factored, 60, "the values request's factoring")


@pytest.mark.slow
def test_value_out_of_time_is_no_fac_the_rest_factored_worker_keeps_serving(
    client, factor_workers
) -> None:
    # A budget that the hard values below cannot be factored in, and value 8 (through a
    # gp child, at the factor worker's low priority) always can, however busy the machine.
    factors = factor_workers(concurrency=1, BACKSCOPE_FACTOR_BUDGET="2")
    body = get_until_complete(client, "/api/get_oeis_factors/A900100/0", timeout=120).get_json()
    values = client.get("/api/get_oeis_values/A900100/0").get_json()["values"]
    hard = {"3", "6", "9"}  # products of two ~150-bit primes
    assert list(body["factors"]) == list(values) == [str(n) for n in range(1, 13)]
    assert {n for n, text in body["factors"].items() if text == NO_FAC} == hard
    for n, text in body["factors"].items():
        if n not in hard:
            assert product(text) == int(values[n]), (n, text)
    assert body["factors"]["8"] == "[274177,1;67280421310721,1]"  # needed a gp child
    assert body["factors"]["12"] == "[-1,1;2147483647,1]"

    # The same worker process goes on serving.
    naturals = get_until_complete(client, "/api/get_oeis_factors/A000027/20").get_json()["factors"]
    assert naturals["20"] == "[2,2;5,1]"
    assert factors.process.poll() is None


@pytest.mark.slow
def test_download_is_not_delayed_by_a_saturated_factor_queue(
    client, worker, factor_workers
) -> None:
    # A 30 s budget: the factor worker spends 90 s on A900100's three hard values, so it
    # is still at it when the download below is done (the test kills it then).
    factors = factor_workers(concurrency=1, BACKSCOPE_FACTOR_BUDGET="30")
    assert get_until_200(client, "/api/get_oeis_values/A900100/0").status_code == 200
    lock = lock_key("factors", "A900100")

    def factoring_started() -> bool:
        holder = read_lock(get_redis("locks"), lock)
        return holder is not None and celery.AsyncResult(holder.owner).state == "STARTED"

    wait_until(factoring_started, 60, "the factor worker to start on A900100")
    busy_task = read_lock(get_redis("locks"), lock).owner
    # It factors at a lower CPU priority (BACKSCOPE_FACTOR_NICE, default 10), down to the
    # child process that factors a hard value; the download worker keeps the normal one.
    wait_until(
        lambda: any(depth == 2 for depth, _ in process_tree(factors.process.pid).values()),
        60,
        "a child process factoring a hard value",
    )
    niceness = {depth: nice for depth, nice in process_tree(factors.process.pid).values()}
    assert niceness[1] == niceness[2] == 10
    assert {nice for _, nice in process_tree(worker.process.pid).values()} == {0}
    celery.send_task(factors_work("A000040").task, args=["A000040", 0])  # queued behind it

    # A download of an uncached sequence goes through while the factor worker is busy.
    response = get_until_200(client, "/api/get_oeis_values/A000045/10")

    assert response.status_code == 200
    assert response.get_json()["values"]["9"] == "34"
    assert celery.AsyncResult(busy_task).state == "STARTED"  # still factoring
    assert queued_factor_tasks() >= 1  # and more factor work waiting
    # The download worker (the session's) has never run a factor task.
    assert "backscope.factor_values[" not in worker.output()


@pytest.mark.slow
def test_factors_answer_partially_then_completely(
    client, factor_workers, monkeypatch, settings
) -> None:
    quick = dataclasses.replace(settings, sync_wait=0.5)
    monkeypatch.setattr(api.jobs, "get_settings", lambda: quick)
    # A 3 s budget: the factor worker spends seconds on A900100's three hard values.
    factor_workers(concurrency=1, BACKSCOPE_FACTOR_BUDGET="3")
    get_until_200(client, "/api/get_oeis_values/A900100/1")
    early = client.get("/api/get_oeis_factors/A900100/0")
    assert early.status_code == 200
    body = early.get_json()
    assert body["complete"] is False
    assert int(early.headers["Retry-After"]) > 0
    assert list(body["factors"]) == [str(n) for n in range(1, 13)]  # every index
    assert "no_fac_yet" in body["factors"].values()
    done = get_until_complete(client, "/api/get_oeis_factors/A900100/0", timeout=120).get_json()
    assert done["complete"] is True and "no_fac_yet" not in done["factors"].values()
    assert "Retry-After" not in client.get("/api/get_oeis_factors/A900100/0").headers
    with session_scope() as session:  # the placeholder is an answer, never stored
        stored = session.scalar(
            select(func.count()).where(Factorization.factors.like("no_fac_yet%"))
        )
    assert stored == 0

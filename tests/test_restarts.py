"""The stack as `make run` runs it (supervisord), against a redis-server and a PostgreSQL
cluster of the test's own: a process that exits is started again while the others run
on, and the stack survives its services restarting while work is in flight and clients
read."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import requests
import sympy
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from shared.admin import database as database_admin
from shared.db import session_scope
from shared.models import Factorization, SequenceValues
from shared.oeis.parsing import BFile
from shared.store.writes import store_values
from shared.work.lock import FENCE_KEY, lock_key
from tests.fake_oeis import FakeOEIS
from tests.helpers import wait_until
from tests.services import (
    PostgresServer,
    RedisServer,
    Stack,
    free_port,
    process_alive,
    wait_gone,
)

pytestmark = pytest.mark.slow

PROGRAMS = {"api", "worker", "factors", "beat"}
SEQ = "A910006"  # made up by the fake OEIS: a(n) = 7n, n = 0..999
HARD = "A654321"  # stored by the test, never downloaded
# Redis database numbers of the stack's BACKSCOPE_REDIS_URL (shared/config.py).
RESULTS, LOCKS = 1, 2


class Client:
    """HTTP to the stack's API, as the front end would."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session = requests.Session()

    def get(self, path: str, **headers: str) -> requests.Response:
        return self.session.get(f"{self.base}{path}", headers=headers, timeout=30)

    def get_until_200(self, path: str, timeout: float = 60) -> requests.Response:
        answers: list[requests.Response] = []

        def answered() -> bool:
            answers.append(self.get(path))
            return answers[-1].status_code == 200

        wait_until(answered, timeout, f"200 for {path} (last: {answers[-1:]})")
        return answers[-1]


@pytest.fixture
def start_stack(database: str, tmp_path: Path) -> Iterator:
    """Start the stack of supervisord.conf with `redis` and a database; one API process."""
    stacks: list[Stack] = []

    def start(redis: RedisServer, database_url: str, **env: str) -> tuple[Stack, Client]:
        port = free_port()
        stack = Stack(
            "supervisord.conf",
            {
                "BACKSCOPE_DATABASE_URL": database_url,
                "BACKSCOPE_REDIS_URL": redis.url(0),
                "BACKSCOPE_BIND": f"127.0.0.1:{port}",
                "BACKSCOPE_API_WORKERS": "1",
                "BACKSCOPE_API_THREADS": "4",
                "BACKSCOPE_SYNC_WAIT": "2",
                "TMPDIR": str(tmp_path),
                **env,
            },
            tmp_path / f"stack{len(stacks)}.log",
        )
        stacks.append(stack)
        stack.wait_running(PROGRAMS)
        client = Client(port)
        client.get_until_200("/api/get_commit")
        return stack, client

    yield start
    for stack in stacks:
        stack.stop()


def hard_terms(count: int) -> list[str]:
    """Products of two 190-bit primes: each takes a factor worker its whole budget."""
    return [
        str(sympy.nextprime(2**190 + 977 * i) * sympy.nextprime(2**191 + 991 * i))
        for i in range(count)
    ]


def task_state(redis: RedisServer, task_id: str) -> str | None:
    raw = redis.client(RESULTS).get(f"celery-task-meta-{task_id}")
    return json.loads(raw)["status"] if raw else None


def lock_fence(redis: RedisServer, kind: str, subject: str) -> int | None:
    raw = redis.client(LOCKS).get(lock_key(kind, subject))
    return json.loads(raw)["fence"] if raw else None


def lock_owner(redis: RedisServer, kind: str, subject: str) -> str:
    raw = redis.client(LOCKS).get(lock_key(kind, subject))
    assert raw, f"no {kind} lock for {subject}"
    return json.loads(raw)["owner"]


def stored(seq_id: str) -> tuple[list[str], int] | None:
    with session_scope() as session:
        rows = session.execute(
            select(SequenceValues.terms, SequenceValues.token).where(SequenceValues.id == seq_id)
        ).all()
    assert len(rows) <= 1
    return (list(rows[0][0]), rows[0][1]) if rows else None


def test_a_redis_restart_under_a_factoring_and_a_downloading_worker(
    start_stack, redis_server: RedisServer, fake_oeis: FakeOEIS, settings
) -> None:
    """Redis restarted empty while a factor task runs, a download hangs on the OEIS and
    clients read: no process exits, both workers take new tasks, the download's data is
    stored once, and the fence keeps growing across the restart."""
    redis = redis_server
    stack, client = start_stack(redis, settings.database_url, BACKSCOPE_FACTOR_BUDGET="1")
    pids = stack.pids()

    # A cached sequence, read from memory.
    cached = client.get_until_200("/api/get_oeis_name_and_values/A910001")
    # A factor task that runs for several seconds.
    with session_scope() as session:
        store_values(session, HARD, BFile(0, hard_terms(6)), token=1)
    factoring = client.get(f"/api/get_oeis_factors/{HARD}/0")
    assert factoring.status_code == 200 and factoring.json()["complete"] is False
    factor_task = lock_owner(redis, "factors", HARD)
    wait_until(lambda: task_state(redis, factor_task) == "STARTED", 30, "factoring to start")
    # A download in flight: the OEIS does not answer yet.
    fake_oeis.hang = True
    waiting = threading.Thread(target=client.get, args=(f"/api/get_oeis_values/{SEQ}/5",))
    waiting.start()
    wait_until(lambda: fake_oeis.bfile_downloads(SEQ) == 1, 30, "the download to start")
    fence_before = lock_fence(redis, "values", SEQ)
    assert fence_before is not None

    redis.stop()
    down = client.get("/api/get_oeis_name_and_values/A910001")
    assert down.status_code == 200 and down.content == cached.content
    redis.start()  # empty
    waiting.join()

    # Asked again, the download starts afresh under a new lock, with a newer fence.
    assert client.get(f"/api/get_oeis_values/{SEQ}/5").status_code == 202
    fence_after = lock_fence(redis, "values", SEQ)
    assert fence_after is not None and fence_after > fence_before
    # The download worker, still busy with the first, takes it.
    wait_until(lambda: fake_oeis.bfile_downloads(SEQ) == 2, 60, "the second download")
    fake_oeis.hang = False
    values = client.get_until_200(f"/api/get_oeis_values/{SEQ}/5").json()["values"]
    assert values == {"0": "0", "1": "7", "2": "14", "3": "21", "4": "28"}
    # Both downloads end; the data is stored once, under the newer fence (or a newer
    # one still, had the lock expired before the worker took the task).
    wait_until(lambda: lock_fence(redis, "values", SEQ) is None, 30, "the lock's release")
    terms, token = stored(SEQ)
    assert terms == [str(7 * n) for n in range(1000)] and token >= fence_after

    # The factor task that ran across the restart finishes, and both workers take new work.
    wait_until(lambda: task_state(redis, factor_task) == "SUCCESS", 60, "the factor task")
    with session_scope() as session:
        factored = session.scalar(
            select(func.count()).select_from(Factorization).where(Factorization.id == HARD)
        )
    assert factored == 6
    client.get_until_200("/api/get_oeis_name_and_values/A910002")
    factors = client.get_until_200(f"/api/get_oeis_factors/{SEQ}/10").json()["factors"]
    assert factors["3"] == "[3,1;7,1]"  # a(3) = 21

    output = stack.output()
    assert "Unrecoverable error" not in output
    assert stack.exits() == []
    assert stack.pids() == pids and all(process_alive(pid) for pid in pids.values())


def test_a_process_that_exits_is_started_again_and_the_others_keep_running(
    start_stack, redis_server: RedisServer, settings
) -> None:
    stack, client = start_stack(redis_server, settings.database_url)
    pids = stack.pids()
    os.killpg(pids["factors"], signal.SIGKILL)  # the worker and its pool processes

    wait_until(
        lambda: stack.pids()["factors"] != pids["factors"], 60, "the factor worker to restart"
    )
    assert [line.split(" exited: ")[1] for line in stack.exits()] == [
        "factors (terminated by SIGKILL; not expected)"
    ]
    others = {name: pid for name, pid in stack.pids().items() if name != "factors"}
    assert others == {name: pid for name, pid in pids.items() if name != "factors"}
    assert all(process_alive(pid) for pid in others.values())
    # The new factor worker takes work.
    with session_scope() as session:
        store_values(session, HARD, BFile(0, ["4", "6", "8"]), token=1)
    path = f"/api/get_oeis_factors/{HARD}/0"
    wait_until(lambda: client.get_until_200(path).json()["complete"], 60, "the factors")
    factors = client.get(path).json()["factors"]
    assert factors == {"0": "[2,2]", "1": "[2,1;3,1]", "2": "[2,3]"}

    # Ctrl-C stops everything, and only that.
    running = list(stack.pids().values())
    assert stack.stop() == 0
    wait_gone(running)


def listening(postgres: PostgresServer) -> bool:
    """Whether the API's read cache listens for changes on `postgres` again."""
    try:
        connection = psycopg2.connect(postgres.url("postgres").replace("+psycopg2", ""))
    except psycopg2.OperationalError:
        return False
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'backscope-api-listener'"
            )
            return cursor.fetchone()[0] > 0
    finally:
        connection.close()


def replace_values(
    postgres: PostgresServer, redis: RedisServer, seq_id: str, terms: list[str]
) -> None:
    """Store new values for `seq_id` as a worker would, under a fence newer than any."""
    engine = create_engine(postgres.url("backscope"), poolclass=NullPool)
    try:
        with Session(engine) as session, session.begin():
            fence = int(redis.client(LOCKS).get(FENCE_KEY) or 0) + 1
            assert store_values(session, seq_id, BFile(0, terms), token=fence)
    finally:
        engine.dispose()


def stored_in(url: str, seq_id: str) -> list[str] | None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with Session(engine) as session:
            row = session.get(SequenceValues, seq_id)
            return None if row is None else list(row.terms)
    finally:
        engine.dispose()


def test_cached_reads_go_on_through_a_database_outage(
    start_stack, redis_server: RedisServer, postgres_server: PostgresServer, fake_oeis: FakeOEIS
) -> None:
    """PostgreSQL stopped abruptly, then started again: what the API holds in memory is
    answered throughout, the rest is 503 with Retry-After, a change made while the API
    was not listening is not missed, and a download in flight is stored once it can."""
    url = postgres_server.url("backscope")
    database_admin.create_database(url)
    database_admin.upgrade(url)
    # Factoring stays quick, so that no write is still going on when the database stops;
    # a download retries for long enough to outlast the outage.
    stack, client = start_stack(
        redis_server,
        url,
        BACKSCOPE_FACTOR_MAX_BITS="64",
        BACKSCOPE_OEIS_MAX_ATTEMPTS="6",
        BACKSCOPE_OEIS_BACKOFF="1",
    )
    pids = stack.pids()
    client.get_until_200("/api/get_oeis_name_and_values/A910001")
    client.get_until_200("/api/get_oeis_values/A910002/10")
    wait_until(lambda: not redis_server.client(LOCKS).keys("backscope:lock:*"), 60, "idle")
    wait_until(lambda: listening(postgres_server), 30, "the API to listen")
    # Read while listening: kept in memory from now on.
    named = client.get_until_200("/api/get_oeis_name_and_values/A910001")
    ten = client.get_until_200("/api/get_oeis_values/A910002/10")
    seven = client.get_until_200("/api/get_oeis_values/A910002/7")  # cut from the same

    # A download in flight: it reaches the database only once that is down.
    fake_oeis.hang = True
    assert client.get("/api/get_oeis_values/A910004/10").status_code == 202
    wait_until(lambda: fake_oeis.bfile_downloads("A910004") == 1, 30, "the download")

    postgres_server.stop()
    fake_oeis.hang = False
    wait_until(lambda: "readcache.not_listening" in stack.output(), 30, "the API to notice")
    for _ in range(20):
        for before, path in (
            (named, "/api/get_oeis_name_and_values/A910001"),
            (ten, "/api/get_oeis_values/A910002/10"),
            (seven, "/api/get_oeis_values/A910002/7"),
        ):
            during = client.get(path)
            assert during.status_code == 200, during.text
            assert during.content == before.content
            assert during.headers["ETag"] == before.headers["ETag"]
            assert client.get(path, **{"If-None-Match": before.headers["ETag"]}).status_code == 304
    for path in (
        "/api/get_oeis_values/A910003/10",  # never read
        "/api/health",
    ):
        refused = client.get(path)
        assert refused.status_code == 503, path
        assert refused.headers["Retry-After"]

    postgres_server.start()
    # A change made as soon as the database is back, likely before the API listens
    # again (tests/test_readcache.py makes sure of that), is answered at once ...
    replace_values(postgres_server, redis_server, "A910002", ["0", "3", "6"])
    assert client.get("/api/get_oeis_values/A910002/10").json()["values"] == {
        "0": "0",
        "1": "3",
        "2": "6",
    }
    # ... and after the API listens again; so is a change made after that.
    wait_until(lambda: listening(postgres_server), 30, "the API to listen again")
    assert client.get("/api/get_oeis_values/A910002/10").json()["values"]["2"] == "6"
    assert client.get("/api/get_oeis_name_and_values/A910001").content == named.content
    replace_values(postgres_server, redis_server, "A910001", ["1"])
    wait_until(
        lambda: client.get("/api/get_oeis_values/A910001/0").json()["values"] == {"0": "1"},
        10,
        "the change to be heard",
    )
    # The download retried until it could store its data, with nobody asking again.
    wait_until(lambda: stored_in(url, "A910004") is not None, 60, "the download to be stored")
    assert stored_in(url, "A910004") == [str(5 * n) for n in range(1000)]
    assert client.get("/api/get_oeis_values/A910004/3").json()["values"] == {
        "0": "0",
        "1": "5",
        "2": "10",
    }
    assert stack.exits() == [] and stack.pids() == pids

"""Each process keeps to its PostgreSQL connections (docs/deploy.md, "PostgreSQL
connections"), and a database that refuses connections ("too many clients") is a 503,
never a 500.

Against a PostgreSQL cluster of the test's own, so that every connection to it is the
API's (or its worker's) and its max_connections can be small, and gunicorn with one
process, as in production.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from shared.admin import database as database_admin
from shared.oeis.parsing import BFile, Entry
from shared.store.writes import store_backrefs, store_metadata, store_search, store_values
from tests.conftest import ROOT
from tests.helpers import wait_until
from tests.services import PostgresServer, RedisServer, free_port

pytestmark = pytest.mark.slow

# BACKSCOPE_DB_POOL_SIZE of the API under test: with its listener, POOL + 1 connections.
POOL = 3
MAX_CONNECTIONS = 20
GUNICORN = [sys.executable, "-m", "gunicorn"]


# Requests that each use one of the API process's three caches.
WARM_UP = [
    "/api/get_oeis_values/A000045/1",
    "/api/get_oeis_metadata/A000045",
    "/api/search_oeis/some%20numbers",
]


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A cluster of the test's own with the database migrated; every connection slot
    counts (the tests connect as a superuser, for whom PostgreSQL keeps 3 by default)."""
    server = PostgresServer(
        max_connections=str(MAX_CONNECTIONS), superuser_reserved_connections="0"
    )
    try:
        database_admin.create_database(server.url("backscope"))
        database_admin.upgrade(server.url("backscope"))
        yield server
    finally:
        server.destroy()


def dsn(server: PostgresServer) -> str:
    return server.url("backscope").replace("+psycopg2", "")


def store(server: PostgresServer, seq_ids: list[str]) -> None:
    """Store ten terms of each sequence and its metadata, and a search that finds the
    first, as the workers would."""
    engine = create_engine(server.url("backscope"), poolclass=NullPool)
    try:
        with Session(engine) as session, session.begin():
            for seq_id in seq_ids:
                assert store_values(session, seq_id, BFile(0, [str(n) for n in range(10)]), 1)
                entry = Entry(seq_id, "Some numbers.", 0, [], "nonn", "")
                assert store_metadata(session, entry, 1)
                assert store_backrefs(session, seq_id, [], 1)
            assert store_search(session, "some numbers", [[seq_ids[0], "Some numbers."]], 1)
    finally:
        engine.dispose()


def take_every_slot(server: PostgresServer) -> list:
    """Connections holding every slot the server has left: the next is refused with
    "too many clients"."""
    held = []
    for _ in range(MAX_CONNECTIONS + 1):
        try:
            held.append(psycopg2.connect(dsn(server)))
        except psycopg2.OperationalError as exc:
            assert "too many clients" in str(exc)
            return held
    raise AssertionError("the server took more connections than max_connections")


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: dict


@dataclass
class API:
    port: int

    def get(self, path: str, timeout: float = 60) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return Answer(response.status, response.headers, json.loads(response.read() or b"{}"))
        finally:
            connection.close()


@pytest.fixture
def start_api(database: str, tmp_path: Path) -> Iterator[Callable[..., API]]:
    """Start gunicorn, one process of 32 threads, on `postgres` (and on this session's
    Redis unless `redis` is given)."""
    processes: list[subprocess.Popen] = []

    def start(postgres: PostgresServer, redis: RedisServer | None = None) -> API:
        port = free_port()
        env = {
            **os.environ,
            "BACKSCOPE_DATABASE_URL": postgres.url("backscope"),
            "BACKSCOPE_BIND": f"127.0.0.1:{port}",
            "BACKSCOPE_API_WORKERS": "1",
            "BACKSCOPE_API_THREADS": "32",
            "BACKSCOPE_DB_POOL_SIZE": str(POOL),
        }
        if redis is not None:
            env["BACKSCOPE_REDIS_URL"] = redis.url(0)
        with open(tmp_path / f"gunicorn{len(processes)}.log", "w") as log:
            processes.append(
                subprocess.Popen(
                    [*GUNICORN, "--config", "python:api.gunicorn_conf", "api:create_app()"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        api = API(port)

        def answers() -> bool:
            try:
                return api.get("/api/get_commit", timeout=2).status == 200
            except OSError:
                return False

        wait_until(answers, 60, "gunicorn to answer")
        return api

    yield start
    for process in processes:
        process.terminate()
        process.wait(30)


def assert_unavailable(answer: Answer) -> None:
    """A 503 saying so in JSON, with a time to try again: never a 500."""
    assert answer.status == 503, (answer.status, answer.body)
    assert int(answer.headers["Retry-After"]) > 0
    assert "database" in answer.body["error"], answer.body


def test_one_api_process_keeps_to_its_connections_however_many_requests_wait(
    postgres: PostgresServer, start_api, redis_server: RedisServer
) -> None:
    """Requests for 40 sequences at once while the database stalls (a table locked):
    the process opens BACKSCOPE_DB_POOL_SIZE connections and one listening for changes
    (its three caches share it), and the requests that find no connection free answer
    503."""
    store(postgres, ["A000045", *(f"A{number:06}" for number in range(1, 41))])
    api = start_api(postgres, redis_server)
    for path in WARM_UP:  # one request to each cache
        assert api.get(path).status == 200, path
    observer = psycopg2.connect(dsn(postgres))
    observer.autocommit = True
    locker = psycopg2.connect(dsn(postgres))

    def backends() -> dict[str, int]:
        """The API's connections by application_name (every one but the test's)."""
        with observer.cursor() as cursor:
            cursor.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity"
                " WHERE datname = 'backscope' AND backend_type = 'client backend'"
                " AND pid <> ALL(%s) GROUP BY 1",
                ([observer.get_backend_pid(), locker.get_backend_pid()],),
            )
            return dict(cursor.fetchall())

    wait_until(lambda: backends().get("backscope-api-listener"), 30, "the API to listen")
    with locker.cursor() as cursor:  # every read of the values waits for the lock
        cursor.execute("LOCK TABLE sequence_values IN ACCESS EXCLUSIVE MODE")
    answers: list[Answer] = []

    def request(number: int) -> None:  # a sequence of its own: a query of its own
        answers.append(api.get(f"/api/get_oeis_values/A{number:06}/3"))

    clients = [threading.Thread(target=request, args=(number,)) for number in range(1, 41)]
    for client in clients:
        client.start()
    most: dict[str, int] = {}
    until = time.monotonic() + 5
    while time.monotonic() < until:
        for name, count in backends().items():
            most[name] = max(most.get(name, 0), count)
        time.sleep(0.05)
    locker.close()  # the lock goes with it
    observer.close()
    for client in clients:
        client.join(120)

    assert most.get("backscope-api-listener") == 1, most
    assert sum(most.values()) <= POOL + 1, most
    assert len(answers) == 40
    busy = [answer for answer in answers if answer.status != 200]
    assert busy, "the pool held more requests than it has connections"
    for answer in busy:
        assert_unavailable(answer)
    assert api.get("/api/get_oeis_values/A000001/3").status == 200


PATHS = [
    "/api/get_oeis_values/A000045/3",
    "/api/get_oeis_name_and_values/A000045",
    "/api/get_oeis_header/A000045",
    "/api/get_oeis_factors/A000045/3",
    "/api/get_oeis_metadata/A000045",
    "/api/search_oeis/some%20numbers",
]


def test_too_many_clients_is_a_503(
    postgres: PostgresServer, start_api, redis_server: RedisServer
) -> None:
    store(postgres, ["A000045"])
    api = start_api(postgres, redis_server)
    held = take_every_slot(postgres)
    try:
        for path in PATHS:
            assert_unavailable(api.get(path))
    finally:
        for connection in held:
            connection.close()
    wait_until(lambda: api.get(PATHS[0]).status == 200, 30, "the API to read again")


def test_too_many_clients_in_the_task_a_request_waits_for_is_a_503(
    postgres: PostgresServer, start_api, workers, fake_oeis
) -> None:
    """The API has its connection; the worker's download finds none to open (nothing
    else gave it work before, so it has none yet). Once there are, the worker's pool
    process takes one: the API's and the worker's add up as docs/deploy.md counts."""
    workers("starved", concurrency=1, env={"BACKSCOPE_DATABASE_URL": postgres.url("backscope")})
    store(postgres, ["A000045"])
    api = start_api(postgres)
    assert api.get(PATHS[0]).status == 200
    held = take_every_slot(postgres)
    try:
        assert_unavailable(api.get("/api/get_oeis_values/A000027/3"))
    finally:
        for connection in held:
            connection.close()
    assert fake_oeis.bfile_downloads("A000027") == 0  # it never got that far

    assert api.get("/api/get_oeis_values/A000027/3").status == 200
    connections = psycopg2.connect(dsn(postgres))
    try:
        with connections.cursor() as cursor:
            cursor.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1"
            )
            by_name = dict(cursor.fetchall())
    finally:
        connections.close()
    assert by_name.pop("backscope-worker") == 1
    assert by_name.pop("backscope-api-listener") == 1
    assert by_name.pop("backscope-api") <= POOL
    assert by_name == {}

"""Test fixtures: a throwaway PostgreSQL database built by the migrations on a private
PostgreSQL cluster, Redis databases 12-15 of a private redis-server, a fake OEIS on
127.0.0.1 and real Celery worker subprocesses.

Nothing here touches the database or Redis databases that `make run` uses, and two
test runs on one machine (say, a developer's and CI's) cannot take each other's tasks,
connections or connection slots. On a machine without PostgreSQL programs or a running
server, the test database lives on the project's own PostgreSQL, and the private Redis
is the packaged Valkey when redis-server is not installed (cli/local_valkey.py).

`make test` runs the tests in several processes (pytest-xdist): the run's PostgreSQL
cluster is one for them all, each process has a database of its own (a copy of a
template the migrations built once), and its own Redis, fake OEIS and metrics
directory (tests/testrun.py). Each server is started by the first test that needs it:
`pytest tests/test_parsing.py` starts none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import redacted
from tests.fake_oeis import FakeOEIS
from tests.services import PostgresServer, RedisServer
from tests.testrun import Run, redis_binary, start_redis

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_DB = 12  # uses 12..15 (see shared/config.py)

RUN = Run.join()
# The server the test database is created on: BACKSCOPE_TEST_SERVER_URL if set (say,
# postgresql+psycopg2://root@127.0.0.1:5432 for the machine's own), else the run's own.
SERVER_URL = RUN.server_url()
DB_NAME = RUN.database()
REDIS_ADDRESS = f"127.0.0.1:{RUN.reserve_port()}"
OEIS_PORT = RUN.reserve_port()
# This process's own Prometheus files, shared with the workers and stacks it starts
# (they inherit the environment), never with another process or run.
METRICS_DIR = RUN.process_folder() / "metrics"
METRICS_DIR.mkdir(exist_ok=True)


def pytest_report_header() -> list[str]:
    server = redacted(SERVER_URL)  # the project's own PostgreSQL's has a password
    where = "the run's own, started when first needed" if RUN.postgres == "private" else server
    return [
        f"test database server: {where} ({server}); each process's own Redis "
        f"({redis_binary()}) and fake OEIS; run folder {RUN.folder}"
    ]


# Fixtures that start processes of a test's own: such tests take seconds to a minute.
_HEAVY_FIXTURES = {
    "workers",
    "factor_workers",
    "serve",
    "gunicorn",
    "start_stack",
    "redis_server",
    "postgres_server",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first (slow ones, and those starting processes of their own): spread
    over several processes, the run then ends with short tests filling the gaps rather
    than with one process finishing a long test while the others wait."""
    items.sort(
        key=lambda item: (
            not (item.get_closest_marker("slow") or _HEAVY_FIXTURES & set(item.fixturenames))
        )
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    if RUN.is_owner:  # every other process of the run has ended
        RUN.finish()


os.environ.update(
    {
        "BACKSCOPE_ENV": "testing",
        "BACKSCOPE_DATABASE_URL": f"{SERVER_URL}/{DB_NAME}",
        "BACKSCOPE_REDIS_URL": f"redis://{REDIS_ADDRESS}/{TEST_REDIS_DB}",
        "BACKSCOPE_OEIS_URL": f"http://127.0.0.1:{OEIS_PORT}",
        "BACKSCOPE_SYNC_WAIT": "30",  # ample for a download on a busy machine: 200, not 202
        "BACKSCOPE_LOCK_TTL": "10",
        "BACKSCOPE_OEIS_RATE": "1000",
        "BACKSCOPE_OEIS_BACKOFF": "0.2",
        "BACKSCOPE_OEIS_READ_TIMEOUT": "3",
        "BACKSCOPE_OEIS_MAX_ATTEMPTS": "3",
        "BACKSCOPE_METRICS_DIR": str(METRICS_DIR),
    }
)


from sqlalchemy import text  # noqa: E402

# Before any test module imports prometheus_client (its parser): the library picks
# multiprocess mode when first imported (shared/metrics.py).
import shared.metrics  # noqa: E402, F401
from shared.admin import database as database_admin  # noqa: E402
from shared.config import get_settings  # noqa: E402
from shared.db import dispose_engine  # noqa: E402
from shared.models import Base  # noqa: E402
from shared.redis_db import get_redis  # noqa: E402
from tests.helpers import busy_locks, control, ping  # noqa: E402


@pytest.fixture(scope="session")
def redis_databases() -> Iterator[str]:
    """This process's Redis (the tests use its databases 12-15), started on first use;
    its address."""
    process = start_redis(int(REDIS_ADDRESS.rsplit(":", 1)[1]), RUN.process_folder())
    yield REDIS_ADDRESS
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def database(redis_databases: str) -> Iterator[str]:
    """This process's database, migrated (and, through `clean`, emptied before each
    test, with the Redis databases)."""
    RUN.create_database()
    yield DB_NAME
    # The API's change listeners (api/readcache.py) would go on trying to connect to
    # the dropped database until the interpreter exits, after pytest has closed stderr.
    logging.getLogger("api.readcache").disabled = True
    dispose_engine()
    database_admin.drop_database(get_settings().database_url)


@pytest.fixture(scope="session")
def fake_oeis() -> Iterator[FakeOEIS]:
    fake = FakeOEIS(port=OEIS_PORT).start()
    yield fake
    fake.stop()


def _flush_state() -> None:
    for use in ("results", "locks", "ratelimit"):
        get_redis(use).flushdb()


@pytest.fixture(autouse=True)
def clean(request: pytest.FixtureRequest, fake_oeis: FakeOEIS) -> Iterator[None]:
    """Every test starts with an empty cache, no locks and a healthy fake OEIS."""
    fake_oeis.reset()
    if "database" in request.fixturenames:
        from shared.db import session_scope

        with session_scope() as session:
            session.execute(text(f"TRUNCATE {', '.join(Base.metadata.tables)}"))
        # The TRUNCATE's notification empties the API's cache a moment later; a test
        # must not race it.
        from api.caches import cached_reads, metadata_reads, search_reads
        from api.jobs import scheduled_recently
        from shared.db import EVERYTHING

        for reads in (cached_reads, metadata_reads, search_reads):
            reads.changed(EVERYTHING)
        scheduled_recently.clear()  # what the API scheduled was for the data just deleted
    if request.node.get_closest_marker("redis") or "database" in request.fixturenames:
        request.getfixturevalue("redis_databases")
        _flush_state()
    yield
    if "worker" in request.fixturenames or "client" in request.fixturenames:
        _wait_for_idle()
    fake_oeis.reset()


def _wait_for_idle(timeout: float = 60) -> None:
    """Let work a test started in the background (e.g. metadata) finish before the next test.

    Not factoring: every download schedules it, but only tests that start a factor worker
    run it (tests/test_factors.py); elsewhere its lock would just sit out its TTL.
    """
    deadline = time.monotonic() + timeout
    while _unfinished_work() and time.monotonic() < deadline:
        time.sleep(0.05)


def _unfinished_work() -> list[str]:
    """The locks (busy_locks) of work that will still run: its task runs on a worker of
    this process's that still runs, or waits in the broker (queued, or delivered to a
    worker). Not the lock of a task that ended, was revoked, died with its worker or
    was purged from its queue: that lock only waits out its TTL (10 s), and the next
    test flushes it anyway."""
    held = busy_locks()
    if not held:
        return []
    from celery import states

    from shared.work.lock import read_lock
    from shared.work.queue import app as celery

    live = {process.name for process in _running if process.process.poll() is None}
    broker = get_redis("broker")
    # (Tests' brokers hold a few messages at most: reading them all is cheap.)
    messages = [*broker.hvals("unacked")]
    for key in broker.scan_iter():
        if broker.type(key) == b"list":
            messages += broker.lrange(key, 0, -1)
    unfinished = []
    for key in held:
        info = read_lock(get_redis("locks"), key)
        if info is None:
            continue
        task = celery.AsyncResult(info.owner)
        if task.state in states.READY_STATES:
            continue
        if task.state == states.STARTED:
            if task.worker in live:
                unfinished.append(key)
        elif any(info.owner.encode() in message for message in messages):
            unfinished.append(key)
    return unfinished


# The worker processes this test session has started and not stopped yet. Only they can
# take this session's tasks: the broker is this session's own redis-server.
_running: list[WorkerProcess] = []


class WorkerProcess:
    """A real `celery worker` subprocess, in its own process group so tests can kill it."""

    def __init__(
        self,
        name: str,
        log_path: Path,
        queues: str = "downloads,maintenance",
        concurrency: int = 2,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = f"{name}@{uuid.uuid4().hex[:6]}"
        self.queues = queues.split(",")
        self.log_path = log_path
        self.log = open(log_path, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.app",
                "worker",
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "-n",
                self.name,
                "-l",
                "INFO",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _running.append(self)

    def wait_ready(self, timeout: float = 120) -> WorkerProcess:
        """Return once the worker consumes its queues and answers remote control.

        Readiness is its own log line ("<name> ready.", logged once it consumes); then a
        ping, bounded by a thread (tests/helpers.py), because a ping once stayed blocked
        for ever in kombu's reply collection although it has a timeout of its own.
        """
        deadline = time.monotonic() + timeout
        ready = f"{self.name} ready."
        while ready not in self.output() or not ping(self.name):
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.output()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready: {self.output()[-2000:]}")
            time.sleep(0.05)
        return self

    def signal(self, sig: int) -> None:
        os.killpg(self.process.pid, sig)

    def begin_stop(self) -> None:
        """Start the warm shutdown (see stop) without waiting for it."""
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        """Warm shutdown: SIGTERM to the main process only, which then takes no new
        task and lets the tasks running finish. (SIGTERM to the pool processes would
        kill them mid-task while the main process lives on, and it would deliver their
        tasks again, to the next test's workers.) Once none of its tasks runs, or after
        10 s, SIGKILL for them all, rather than waiting the 3 s Celery then takes to
        close its pool: a dead main process delivers nothing again (what it had taken
        and not started is dropped, as the workers fixture drops what is queued)."""
        if self.process.poll() is None:
            self.begin_stop()
            deadline = time.monotonic() + 10
            while self.process.poll() is None and time.monotonic() < deadline:
                if not self.running_tasks():
                    break
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGKILL)
            self.process.wait(10)
        self.log.close()
        if self in _running:
            _running.remove(self)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def running_tasks(self) -> list[str]:
        """The ids of the tasks this worker has started and not finished, from their
        states in the result backend (task_track_started: every task records STARTED
        and the worker's name; the tests' result databases hold a few dozen at most).
        ["?"] if the backend does not answer: then nothing is known to be finished."""
        import json

        from redis.exceptions import RedisError

        results = get_redis("results")
        running = []
        try:
            for key in results.scan_iter("celery-task-meta-*"):
                meta = json.loads(results.get(key) or "{}")
                if meta.get("status") == "STARTED" and meta.get("worker") == self.name:
                    running.append(meta.get("task_id", "?"))
        except RedisError:
            return ["?"]
        return running


def stop_all(processes: list[WorkerProcess]) -> None:
    """Stop workers together: each shutdown mostly waits."""
    for process in processes:
        process.begin_stop()
    for process in processes:
        process.stop()


@pytest.fixture(scope="session")
def worker(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker for the whole session (tests that kill workers start their own)."""
    process = WorkerProcess("session", tmp_path_factory.mktemp("worker") / "worker.log")
    try:
        yield process.wait_ready()
    finally:
        process.stop()


@pytest.fixture
def app(database: str):
    from api import create_app
    from tests.conformance import ConformingClient

    application = create_app()
    application.testing = True
    application.test_client_class = ConformingClient  # every answer checked (#19)
    return application


@pytest.fixture
def client(app, worker: WorkerProcess):
    return app.test_client()


@pytest.fixture
def settings():
    return get_settings()


@pytest.fixture
def short_wait(monkeypatch: pytest.MonkeyPatch, settings) -> None:
    """The API in this process waits 0.5 s for work rather than BACKSCOPE_SYNC_WAIT (30 s
    here): for tests of what it answers after the wait (202, or the partial factors when
    no factor worker runs), which would otherwise wait it out."""
    import dataclasses

    import api.jobs

    quick = dataclasses.replace(settings, sync_wait=0.5)
    monkeypatch.setattr(api.jobs, "get_settings", lambda: quick)


@pytest.fixture
def workers(database: str, fake_oeis: FakeOEIS, tmp_path: Path) -> Iterator:
    """Start this test's own workers; the session worker stops taking downloads meanwhile,
    so the test knows which process runs each task."""
    from shared.work.queue import app as celery
    from shared.work.units import DOWNLOADS_QUEUE

    others = [process for process in _running if DOWNLOADS_QUEUE in process.queues]
    for process in others:
        control(process.name, "cancel_consumer", queue=DOWNLOADS_QUEUE)
    started: list[WorkerProcess] = []

    def start(name: str, **options) -> WorkerProcess:
        process = WorkerProcess(name, tmp_path / f"{name}.log", **options)
        started.append(process)
        return process.wait_ready()

    yield start
    fake_oeis.reset()  # a download the test left hanging must not hold up a warm shutdown
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            process.signal(signal.SIGCONT)
    stop_all(started)
    # What the test left queued (say, metadata its requests scheduled) dies with its
    # workers rather than running during the next test.
    with celery.connection_for_write() as connection:
        celery.amqp.queues[DOWNLOADS_QUEUE].bind(connection.default_channel).purge()
    for process in others:
        control(process.name, "add_consumer", queue=DOWNLOADS_QUEUE)


@pytest.fixture
def scratch_url(database: str) -> Iterator[str]:
    """The URL of a database of a test's own (not the session's, which other tests and the
    worker use), on the same server; dropped afterwards if the test created it. (Through
    `database`, the test also starts with empty Redis databases.)"""
    server = get_settings().database_url.rsplit("/", 1)[0]
    url = f"{server}/backscope_scratch_{uuid.uuid4().hex[:8]}"
    yield url
    database_admin.drop_database(url)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to stop and start again."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of the test's own, to stop and start again."""
    server = PostgresServer()
    yield server
    server.destroy()

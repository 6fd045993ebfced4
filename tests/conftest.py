"""Test fixtures: a throwaway PostgreSQL database built by the migrations, Redis
databases 12-15 of a private redis-server, a fake OEIS on 127.0.0.1 and real Celery
worker subprocesses.

Nothing here touches the database or Redis databases that `make run` uses, and two
test runs on one machine (say, a developer's and CI's) cannot take each other's tasks.
On a machine with no PostgreSQL or Redis running, the test database lives on the
project's own PostgreSQL and the private Redis is the packaged Valkey (shared/embedded.py).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import embedded
from shared.config import DEFAULT_DATABASE_URL, load_settings
from tests.fake_oeis import FakeOEIS

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_DB = 12  # uses 12..15 (see shared/config.py)
DB_NAME = f"backscope_test_{uuid.uuid4().hex[:8]}"


def _test_server() -> str:
    """The PostgreSQL server the test database is created on: BACKSCOPE_TEST_SERVER_URL,
    else the default one, else (when nothing answers there) the project's own, joined or
    started for the session like `make run` would (BACKSCOPE_EMBEDDED applies)."""
    if url := os.environ.get("BACKSCOPE_TEST_SERVER_URL"):
        return url
    default = DEFAULT_DATABASE_URL.rsplit("/", 1)[0]
    settings = load_settings()
    if not embedded.needs_local(default, DEFAULT_DATABASE_URL, settings.embedded):
        return default
    servers = embedded.LocalServers(settings.data_dir)
    port = servers.acquire(redis=False)["postgres"].port
    atexit.register(servers.release)
    return embedded.local_url(default, port)


SERVER_URL = _test_server()
# redis-server from PATH (Redis, as in production), else the packaged valkey-server.
REDIS_BINARY = shutil.which("redis-server") or str(embedded.redis_server_binary())

_fake = FakeOEIS().start()


def _private_redis() -> str:
    """Start a throwaway Redis server on a free port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = ["--port", str(port), "--bind", "127.0.0.1"]
    process = subprocess.Popen(
        [REDIS_BINARY, *address, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    atexit.register(process.terminate)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return f"127.0.0.1:{port}"
        time.sleep(0.05)
    raise RuntimeError(f"{REDIS_BINARY} did not start")


REDIS_ADDRESS = _private_redis()


def pytest_report_header() -> list[str]:
    return [f"test database server: {SERVER_URL}; Redis: {REDIS_ADDRESS} ({REDIS_BINARY})"]


os.environ.update(
    {
        "BACKSCOPE_ENV": "testing",
        "BACKSCOPE_DATABASE_URL": f"{SERVER_URL}/{DB_NAME}",
        "BACKSCOPE_REDIS_URL": f"redis://{REDIS_ADDRESS}/{TEST_REDIS_DB}",
        "BACKSCOPE_OEIS_URL": _fake.url,
        "BACKSCOPE_SYNC_WAIT": "10",
        "BACKSCOPE_LOCK_TTL": "10",
        "BACKSCOPE_OEIS_RATE": "1000",
        "BACKSCOPE_OEIS_BACKOFF": "0.2",
        "BACKSCOPE_OEIS_READ_TIMEOUT": "3",
        "BACKSCOPE_OEIS_MAX_ATTEMPTS": "3",
    }
)

from sqlalchemy import text  # noqa: E402

from shared import database_admin  # noqa: E402
from shared.config import get_settings  # noqa: E402
from shared.db import dispose_engine  # noqa: E402
from shared.models import Base  # noqa: E402
from shared.redis_db import get_redis  # noqa: E402


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    url = get_settings().database_url
    database_admin.create_database(url)
    database_admin.upgrade(url)
    yield DB_NAME
    dispose_engine()
    database_admin.drop_database(url)
    # The API's change listeners now find their database gone, as they should; they
    # need not say so while the session ends (stopping the project's own PostgreSQL,
    # when it ran one, gives them the time).
    logging.getLogger("shared.readcache").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def fake_oeis() -> Iterator[FakeOEIS]:
    yield _fake
    _fake.stop()


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
        from api.jobs import scheduled_recently
        from api.routes import cached_reads
        from shared.readcache import EVERYTHING

        cached_reads.changed(EVERYTHING)
        scheduled_recently.clear()  # what the API scheduled was for the data just deleted
    if request.node.get_closest_marker("redis") or "database" in request.fixturenames:
        _flush_state()
    yield
    if "worker" in request.fixturenames or "client" in request.fixturenames:
        _wait_for_idle()
    fake_oeis.reset()


def _wait_for_idle(timeout: float = 20) -> None:
    """Let work a test started in the background (e.g. metadata) finish before the next test.

    Not factoring: every download schedules it, but only tests that start a factor worker
    run it (tests/test_factors.py); elsewhere its lock would just sit out its TTL.
    """
    from shared.lock import list_locks, lock_key

    factors = lock_key("factors", "")

    def busy() -> bool:
        return any(not info.key.startswith(factors) for info in list_locks(get_redis("locks")))

    deadline = time.monotonic() + timeout
    while busy() and time.monotonic() < deadline:
        time.sleep(0.05)


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

    def wait_ready(self, timeout: float = 30) -> WorkerProcess:
        from shared.queue import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-2000:]}")
            replies = app.control.ping(destination=[self.name], timeout=0.5)
            if replies:
                return self
        raise RuntimeError(f"worker not ready: {self.log_path.read_text()[-2000:]}")

    def signal(self, sig: int) -> None:
        os.killpg(self.process.pid, sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(5)
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()


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

    application = create_app()
    application.testing = True
    return application


@pytest.fixture
def client(app, worker: WorkerProcess):
    return app.test_client()


@pytest.fixture
def settings():
    return get_settings()


@pytest.fixture
def workers(database: str, tmp_path: Path) -> Iterator:
    """Start this test's own workers; the session worker stops taking downloads meanwhile,
    so the test knows which process runs each task."""
    from shared.queue import app as celery
    from shared.work import DOWNLOADS_QUEUE

    others = [host for reply in celery.control.ping(timeout=0.5) or [] for host in reply]
    for host in others:
        celery.control.cancel_consumer(DOWNLOADS_QUEUE, destination=[host], reply=True)
    started: list[WorkerProcess] = []

    def start(name: str, **options) -> WorkerProcess:
        process = WorkerProcess(name, tmp_path / f"{name}.log", **options)
        started.append(process)
        return process.wait_ready()

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            process.signal(signal.SIGCONT)
        process.stop()
    for host in others:
        celery.control.add_consumer(DOWNLOADS_QUEUE, destination=[host], reply=True)

"""Test fixtures: a throwaway PostgreSQL database built by the migrations on a private
PostgreSQL cluster, Redis databases 12-15 of a private redis-server, a fake OEIS on
127.0.0.1 and real Celery worker subprocesses.

Nothing here touches the database or Redis databases that `make run` uses, and two
test runs on one machine (say, a developer's and CI's) cannot take each other's tasks,
connections or connection slots. On a machine without PostgreSQL programs or a running
server, the test database lives on the project's own PostgreSQL, and the private Redis
is the packaged Valkey when redis-server is not installed (cli/embedded.py).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import embedded
from shared.config import DEFAULT_DATABASE_URL, load_settings, redacted
from tests.fake_oeis import FakeOEIS
from tests.services import PostgresServer, RedisServer

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_DB = 12  # uses 12..15 (see shared/config.py)
DB_NAME = f"backscope_test_{uuid.uuid4().hex[:8]}"


def _machine_or_embedded() -> str:
    """Without PostgreSQL's programs: the machine's server at the default address, else
    (when nothing answers there) the project's own, joined or started for the session
    like `make run` would (BACKSCOPE_EMBEDDED applies)."""
    default = DEFAULT_DATABASE_URL.rsplit("/", 1)[0]
    settings = load_settings()
    if not embedded.needs_local(default, DEFAULT_DATABASE_URL, settings.embedded):
        return default
    servers = embedded.LocalServers(settings.data_dir)
    port = servers.acquire(redis=False)["postgres"].port
    atexit.register(servers.release)
    return embedded.local_url(default, port, servers.password())


# redis-server from PATH (Redis, as in production), else the packaged valkey-server.
REDIS_BINARY = shutil.which("redis-server") or str(embedded.redis_server_binary())

_fake = FakeOEIS().start()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _after_this_process(command: str) -> None:
    """Run shell `command` once this process has ended, however it ends: SIGTERM (say,
    from `timeout`) and SIGKILL skip atexit, and must not leave servers running."""
    subprocess.Popen(
        ["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; {command}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _private_redis() -> str:
    """Start a throwaway Redis server on a free port."""
    port = _free_port()
    address = ["--port", str(port), "--bind", "127.0.0.1"]
    process = subprocess.Popen(
        [REDIS_BINARY, *address, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    atexit.register(process.terminate)
    # (Only if the pid is still this redis-server's: after atexit it may be another's.)
    _after_this_process(
        f"tr '\\0' ' ' < /proc/{process.pid}/cmdline 2>/dev/null"
        f" | grep -q -- '-server 127.0.0.1:{port}' && kill {process.pid}"
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return f"127.0.0.1:{port}"
        time.sleep(0.05)
    raise RuntimeError(f"{REDIS_BINARY} did not start")


def _postgres_program(name: str) -> str | None:
    found = shutil.which(name)
    if found is None:  # Debian and Ubuntu keep the server's programs off PATH
        candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
        found = str(candidates[-1]) if candidates else None
    return found


def _private_postgres() -> str:
    """Start a throwaway PostgreSQL cluster (user root, trust, no fsync) on a free port
    and return its URL; without initdb and pg_ctl, see _machine_or_embedded.

    A cluster of its own, because a server is shared in more than data: other test runs
    on the machine used up its connection slots ("too many clients already"), and older
    versions of the tests ended every run's API connections by application_name.
    PostgreSQL refuses to run as root: then the cluster belongs to the `postgres` user.
    """
    initdb, pg_ctl = _postgres_program("initdb"), _postgres_program("pg_ctl")
    if initdb is None or pg_ctl is None:
        return _machine_or_embedded()
    directory = Path(tempfile.mkdtemp(prefix="backscope-test-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data = directory / "data"

    def run(*command: str) -> None:
        subprocess.run([*as_owner, *command], check=True, capture_output=True, timeout=120)

    def remove() -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(directory, ignore_errors=True)

    atexit.register(remove)
    stop = shlex.join([*as_owner, pg_ctl, "-D", str(data), "-m", "immediate", "stop"])
    _after_this_process(f"{stop}; rm -rf {shlex.quote(str(directory))}")
    run(initdb, "-D", str(data), "-U", "root", "--auth=trust", "--no-sync")
    port = _free_port()
    options = (
        f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    log = str(directory / "log")
    run(pg_ctl, "-D", str(data), "-w", "-t", "120", "-l", log, "-o", options, "start")
    return f"postgresql+psycopg2://root@127.0.0.1:{port}"


# The server the test database is created on: BACKSCOPE_TEST_SERVER_URL if set (say,
# postgresql+psycopg2://root@127.0.0.1:5432 for the machine's own), else a private one.
SERVER_URL = os.environ.get("BACKSCOPE_TEST_SERVER_URL") or _private_postgres()
REDIS_ADDRESS = _private_redis()
# This test run's own Prometheus files, shared with the workers and stacks it starts
# (they inherit the environment), never with another run.
METRICS_DIR = tempfile.mkdtemp(prefix="backscope-metrics-")
atexit.register(shutil.rmtree, METRICS_DIR, ignore_errors=True)


def pytest_report_header() -> list[str]:
    server = redacted(SERVER_URL)  # the project's own PostgreSQL's has a password
    return [f"test database server: {server}; Redis: {REDIS_ADDRESS} ({REDIS_BINARY})"]


os.environ.update(
    {
        "BACKSCOPE_ENV": "testing",
        "BACKSCOPE_DATABASE_URL": f"{SERVER_URL}/{DB_NAME}",
        "BACKSCOPE_REDIS_URL": f"redis://{REDIS_ADDRESS}/{TEST_REDIS_DB}",
        "BACKSCOPE_OEIS_URL": _fake.url,
        "BACKSCOPE_SYNC_WAIT": "30",  # ample for a download on a busy machine: 200, not 202
        "BACKSCOPE_LOCK_TTL": "10",
        "BACKSCOPE_OEIS_RATE": "1000",
        "BACKSCOPE_OEIS_BACKOFF": "0.2",
        "BACKSCOPE_OEIS_READ_TIMEOUT": "3",
        "BACKSCOPE_OEIS_MAX_ATTEMPTS": "3",
        "BACKSCOPE_METRICS_DIR": METRICS_DIR,
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
def database() -> Iterator[str]:
    url = get_settings().database_url
    database_admin.create_database(url)
    database_admin.upgrade(url)
    yield DB_NAME
    # The API's change listeners (api/readcache.py) would go on trying to connect to
    # the dropped database until the interpreter exits, after pytest has closed stderr.
    logging.getLogger("api.readcache").disabled = True
    dispose_engine()
    database_admin.drop_database(url)


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
        from api.caches import cached_reads, metadata_reads, search_reads
        from api.jobs import scheduled_recently
        from shared.db import EVERYTHING

        for reads in (cached_reads, metadata_reads, search_reads):
            reads.changed(EVERYTHING)
        scheduled_recently.clear()  # what the API scheduled was for the data just deleted
    if request.node.get_closest_marker("redis") or "database" in request.fixturenames:
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
    while busy_locks() and time.monotonic() < deadline:
        time.sleep(0.05)


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

    def stop(self) -> None:
        """Warm shutdown: SIGTERM to the main process only, which lets the tasks running
        finish. (SIGTERM to the pool processes would kill them mid-task while the main
        process lives on, and it would deliver their tasks again, to the next test's
        workers.) If that takes more than 10 s, SIGKILL for them all: a dead main
        process delivers nothing again."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.signal(signal.SIGKILL)
                self.process.wait(10)
        self.log.close()
        if self in _running:
            _running.remove(self)

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
        process.stop()
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

"""What the processes of one test run share, and the servers each starts for itself.

`make test` runs the tests in several processes (pytest-xdist workers, started by a
controller process that runs no test itself); a plain `pytest` runs them in one. Either
way, the run's first process (the controller, or the only one: the run's *owner*) makes
a folder for the run and tells the others of it in BACKSCOPE_TEST_RUN. In it:

- one PostgreSQL cluster for the whole run, started by the first test that needs a
  database, whichever process runs it (initdb costs seconds: one per run, not one per
  process), and stopped by the owner when the run ends;
- a template database the migrations built once; each process's database is a copy
  (CREATE DATABASE ... TEMPLATE), so no process migrates its own;
- the ports the run's processes took for their own servers: each process has its own
  Redis (its databases 12-15 are flushed by the tests, and its Celery broker must reach
  its own workers only) and its own fake OEIS (whose counts the tests read), both started
  by the first test that needs them.

Ports are chosen before the servers start (the URLs must be in the environment before
the first test module imports the Celery app), from 20000-32767 like cli/local_ports.py:
below the kernel's ephemeral range, so that no outgoing connection takes one meanwhile.

A process killed with SIGKILL runs no cleanup: a small shell process started with each
server waits for the process that owns it to end, then stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import random
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from cli import embedded, local_valkey
from cli.local_ports import PORTS, port_free
from shared.config import DEFAULT_DATABASE_URL, load_settings

RUN_VARIABLE = "BACKSCOPE_TEST_RUN"
# Every process of a run keeps connections to the one cluster (its API's pool and
# change listeners, its workers, the stacks some tests start).
MAX_CONNECTIONS = 400


def worker_id() -> str:
    """This process's name in the run: pytest-xdist's gw0, gw1, ..., or `main`."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def after(pid: int, command: str) -> None:
    """Run shell `command` once process `pid` has ended, however it ends: SIGTERM (say,
    from `timeout`) and SIGKILL skip atexit and pytest's own cleanup, and must not leave
    servers running."""
    # In the background of a shell that exits at once: no child of this process, so
    # nothing for it to reap or to count among its children.
    watch = f"while kill -0 {pid} 2>/dev/null; do sleep 1; done; {command}"
    subprocess.run(
        ["sh", "-c", f"({watch}) </dev/null >/dev/null 2>&1 &"],
        check=True,
        start_new_session=True,
    )


def _postgres_program(name: str) -> str | None:
    found = shutil.which(name)
    if found is None:  # Debian and Ubuntu keep the server's programs off PATH
        candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
        found = str(candidates[-1]) if candidates else None
    return found


@functools.cache
def _machine_or_embedded() -> str:
    """Without PostgreSQL's programs: the machine's server at the default address, else
    (when nothing answers there) the project's own, joined or started for this process
    like `make run` would (BACKSCOPE_EMBEDDED applies). Every process of the run joins
    it: the last one to leave stops it."""
    import atexit

    default = DEFAULT_DATABASE_URL.rsplit("/", 1)[0]
    settings = load_settings()
    if not embedded.needs_local(default, DEFAULT_DATABASE_URL, settings.embedded):
        return default
    servers = embedded.LocalServers(settings.data_dir)
    port = servers.acquire(redis=False)["postgres"].port
    atexit.register(servers.release)
    return embedded.local_url(default, port, servers.password())


@dataclass(frozen=True)
class Run:
    folder: Path
    owner: int  # the pid of the run's first process
    uid: str  # in the names of the run's databases, unique on a shared server
    # "private": a cluster of the run's own, in `folder`, on `port`, started on demand;
    # "given": BACKSCOPE_TEST_SERVER_URL; "local": the machine's or the project's own.
    postgres: str
    port: int | None
    given_url: str | None

    # -------------------------------------------------------- the run itself

    @classmethod
    def join(cls) -> Run:
        """The run this process belongs to: made here unless this is an xdist worker."""
        if "PYTEST_XDIST_WORKER" in os.environ and RUN_VARIABLE in os.environ:
            fields = json.loads(os.environ[RUN_VARIABLE])
            return cls(**{**fields, "folder": Path(fields["folder"])})
        folder = Path(tempfile.mkdtemp(prefix="backscope-test-run-"))
        given = os.environ.get("BACKSCOPE_TEST_SERVER_URL")
        if given:
            kind, port = "given", None
        elif _postgres_program("initdb") and _postgres_program("pg_ctl"):
            kind, port = "private", None
        else:
            kind, port = "local", None
        run = cls(folder, os.getpid(), uuid.uuid4().hex[:8], kind, port, given)
        if kind == "private":
            run = cls(folder, run.owner, run.uid, kind, run.reserve_port(), None)
        # However this process ends: the run's PostgreSQL stopped, its folder removed.
        after(run.owner, f"{run._stop_postgres_command()}; rm -rf {shlex.quote(str(folder))}")
        fields = {**asdict(run), "folder": str(folder)}
        os.environ[RUN_VARIABLE] = json.dumps(fields)
        return run

    @property
    def is_owner(self) -> bool:
        return os.getpid() == self.owner

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """One process of the run at a time."""
        descriptor = os.open(self.folder / "run.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def reserve_port(self) -> int:
        """A port free now that no other process of the run has reserved."""
        with self.exclusive():
            taken_file = self.folder / "ports"
            taken = set(map(int, taken_file.read_text().split())) if taken_file.exists() else set()
            for _ in range(200):
                port = random.choice(PORTS)
                if port not in taken and port_free(port):
                    with taken_file.open("a") as file:
                        file.write(f"{port}\n")
                    return port
        raise RuntimeError(f"no free port between {PORTS.start} and {PORTS.stop - 1}")

    def process_folder(self) -> Path:
        """A folder of this process's own inside the run's (removed with it)."""
        folder = self.folder / worker_id()
        folder.mkdir(exist_ok=True)
        return folder

    # -------------------------------------------------------- PostgreSQL

    def server_url(self) -> str:
        """The URL of the run's PostgreSQL server (no database), which need not be
        started yet: see start_postgres."""
        if self.postgres == "given":
            return self.given_url
        if self.postgres == "private":
            return f"postgresql+psycopg2://root@127.0.0.1:{self.port}"
        return _machine_or_embedded()

    @property
    def template(self) -> str:
        return f"backscope_test_{self.uid}_template"

    def database(self) -> str:
        """This process's database."""
        return f"backscope_test_{self.uid}_{worker_id()}"

    def create_database(self) -> None:
        """Create this process's database as a copy of the run's migrated template,
        starting the run's PostgreSQL and building the template first if no process of
        the run has yet."""
        from shared.admin import database as database_admin

        server_url = self.server_url()
        with self.exclusive():
            self._start_postgres()
            done = self.folder / "template.done"
            if not done.exists():
                url = f"{server_url}/{self.template}"
                database_admin.drop_database(url)  # half-built by a run killed here
                database_admin.create_database(url)
                database_admin.upgrade(url)
                done.touch()
            # (Under the lock: no other process is connected to the template meanwhile,
            # which CREATE DATABASE ... TEMPLATE requires.)
            _execute(
                server_url,
                f'DROP DATABASE IF EXISTS "{self.database()}" WITH (FORCE)',
                f'CREATE DATABASE "{self.database()}" TEMPLATE "{self.template}"',
            )

    def _start_postgres(self) -> None:
        """Start the run's private cluster unless it runs (called under the lock).

        Its own cluster, because a server is shared in more than data: other test runs
        on the machine used up its connection slots ("too many clients already"), and
        older versions of the tests ended every run's API connections by
        application_name. User root, trust, no fsync. PostgreSQL refuses to run as root:
        then the cluster belongs to the `postgres` user.
        """
        if self.postgres != "private" or (self.folder / "postgres.started").exists():
            return
        directory = self.folder / "postgres"
        directory.mkdir()
        if os.geteuid() == 0:
            self.folder.chmod(0o711)  # (only) through to the cluster's own folder
            shutil.chown(directory, "postgres")

        def run(*command: str) -> None:
            subprocess.run(
                [*self._as_cluster_owner(), *command], check=True, capture_output=True, timeout=120
            )

        data = directory / "data"
        run(_postgres_program("initdb"), "-D", str(data), "-U", "root", "--auth=trust", "--no-sync")
        options = (
            f"-p {self.port} -k {directory} -c listen_addresses=127.0.0.1 "
            f"-c max_connections={MAX_CONNECTIONS} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(directory / "log")
        try:
            pg_ctl = _postgres_program("pg_ctl")
            run(pg_ctl, "-D", str(data), "-w", "-t", "120", "-l", log, "-o", options, "start")
        except subprocess.CalledProcessError as error:
            tail = Path(log).read_text(errors="replace")[-1000:] if Path(log).exists() else ""
            raise RuntimeError(f"the run's PostgreSQL did not start: {tail}") from error
        (self.folder / "postgres.started").touch()

    @staticmethod
    def _as_cluster_owner() -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _stop_postgres_command(self) -> str:
        """A shell command stopping the run's private cluster if it runs."""
        if self.postgres != "private":
            return "true"
        data = self.folder / "postgres" / "data"
        pid_file = shlex.quote(str(data / "postmaster.pid"))
        pg_ctl = [*self._as_cluster_owner(), _postgres_program("pg_ctl"), "-D", str(data)]
        return f"[ ! -e {pid_file} ] || {shlex.join(pg_ctl)} -m immediate stop"

    def finish(self) -> None:
        """The owner, once every process of the run is done: stop the run's PostgreSQL
        (or drop the template from the server it was given), remove the folder."""
        if self.postgres == "private":
            subprocess.run(
                self._stop_postgres_command(), shell=True, capture_output=True, timeout=120
            )
        elif (self.folder / "template.done").exists():
            from shared.admin import database as database_admin

            with contextlib.suppress(Exception):  # the run's result matters more
                database_admin.drop_database(f"{self.server_url()}/{self.template}")
        shutil.rmtree(self.folder, ignore_errors=True)


def _execute(server_url: str, *statements: str) -> None:
    engine = create_engine(
        f"{server_url}/postgres", poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


# ------------------------------------------------------------ a process's own servers


def redis_binary() -> str:
    """redis-server from PATH (Redis, as in production), else the packaged valkey-server."""
    return shutil.which("redis-server") or str(local_valkey.redis_server_binary())


def start_redis(port: int, folder: Path) -> subprocess.Popen:
    """A throwaway Redis server on `port`, stopped when this process ends."""
    binary = redis_binary()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        cwd=folder,
    )
    # (Only if the pid is still this redis-server's: by then it may be another's.)
    after(
        os.getpid(),
        f"tr '\\0' ' ' < /proc/{process.pid}/cmdline 2>/dev/null"
        f" | grep -q -- '-server 127.0.0.1:{port}' && kill {process.pid}",
    )
    deadline = time.monotonic() + 10
    while not _serves(port, process.pid):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{binary} did not start on port {port}")
        time.sleep(0.01)
    return process


def _serves(port: int, pid: int) -> bool:
    """Whether the Redis answering on `port` is process `pid`: another test run's
    server on the same port must not pass for this one's (its databases would be
    flushed and its broker shared)."""
    try:
        with Redis("127.0.0.1", port, socket_connect_timeout=0.5, socket_timeout=2) as client:
            return client.info("server")["process_id"] == pid
    except RedisError:
        return False

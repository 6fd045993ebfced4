"""The stack as `make run` runs it (supervisord), against a redis-server and a PostgreSQL
cluster of the test's own: a process that exits is started again while the others run
on, and the stack survives its services restarting while work is in flight and clients
read."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shared.db import session_scope
from shared.parsing import BFile
from shared.store import store_values
from tests.helpers import wait_until
from tests.services import (
    RedisServer,
    Stack,
    free_port,
    process_alive,
    wait_gone,
)

pytestmark = pytest.mark.slow

PROGRAMS = {"api", "worker", "factors", "beat"}
HARD = "A654321"  # stored by the test, never downloaded


class Client:
    """HTTP to the stack's API, as the front end would."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session = requests.Session()

    def get(self, path: str, **headers: str) -> requests.Response:
        return self.session.get(f"{self.base}{path}", headers=headers, timeout=30)

    def get_until_200(self, path: str, timeout: float = 60) -> requests.Response:
        answers: list[requests.Response] = []

        def answered() -> bool:
            answers.append(self.get(path))
            return answers[-1].status_code == 200

        wait_until(answered, timeout, f"200 for {path} (last: {answers[-1:]})")
        return answers[-1]


@pytest.fixture
def start_stack(database: str, tmp_path: Path) -> Iterator:
    """Start the stack of supervisord.conf with `redis` and a database; one API process."""
    stacks: list[Stack] = []

    def start(redis: RedisServer, database_url: str, **env: str) -> tuple[Stack, Client]:
        port = free_port()
        stack = Stack(
            "supervisord.conf",
            {
                "BACKSCOPE_DATABASE_URL": database_url,
                "BACKSCOPE_REDIS_URL": redis.url(0),
                "BACKSCOPE_BIND": f"127.0.0.1:{port}",
                "BACKSCOPE_API_WORKERS": "1",
                "BACKSCOPE_API_THREADS": "4",
                "BACKSCOPE_SYNC_WAIT": "2",
                "TMPDIR": str(tmp_path),
                **env,
            },
            tmp_path / f"stack{len(stacks)}.log",
        )
        stacks.append(stack)
        stack.wait_running(PROGRAMS)
        client = Client(port)
        client.get_until_200("/api/get_commit")
        return stack, client

    yield start
    for stack in stacks:
        stack.stop()


def test_a_process_that_exits_is_started_again_and_the_others_keep_running(
    start_stack, redis_server: RedisServer, settings
) -> None:
    stack, client = start_stack(redis_server, settings.database_url)
    pids = stack.pids()
    os.killpg(pids["factors"], signal.SIGKILL)  # the worker and its pool processes

    wait_until(
        lambda: stack.pids()["factors"] != pids["factors"], 60, "the factor worker to restart"
    )
    assert [line.split(" exited: ")[1] for line in stack.exits()] == [
        "factors (terminated by SIGKILL; not expected)"
    ]
    others = {name: pid for name, pid in stack.pids().items() if name != "factors"}
    assert others == {name: pid for name, pid in pids.items() if name != "factors"}
    assert all(process_alive(pid) for pid in others.values())
    # The new factor worker takes work.
    with session_scope() as session:
        store_values(session, HARD, BFile(0, ["4", "6", "8"]), token=1)
    factors = client.get_until_200(f"/api/get_oeis_factors/{HARD}/0").json()["factors"]
    assert factors == {"0": "[2,2]", "1": "[2,1;3,1]", "2": "[2,3]"}

    # Ctrl-C stops everything, and only that.
    running = list(stack.pids().values())
    assert stack.stop() == 0
    wait_gone(running)

"""Small helpers shared by the tests: waiting on conditions, and reading what is stored.

Tests wait on a condition (with a timeout generous enough for a loaded 2-core machine)
rather than sleep for a fixed time, and assert on what happened rather than on how long
it took: timings belong to `make bench`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.pool import NullPool

T = TypeVar("T")


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Return once `condition()` is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def get_until_200(client, path: str, timeout: float = 120):
    """GET `path`, repeating while the answer is 202 (as the front end does)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(path)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        assert response.status_code == 202, response.get_json()
        time.sleep(0.1)


def get_until_complete(client, path: str, timeout: float = 60):
    """GET a factors `path`, repeating while the answer is 202 or "complete": false."""
    deadline = time.monotonic() + timeout
    while True:
        response = get_until_200(client, path, timeout)
        if response.status_code != 200 or response.get_json()["complete"]:
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} still incomplete after {timeout} s")
        time.sleep(0.1)


def bounded(call: Callable[[], T], timeout: float) -> T | None:
    """`call()` in a daemon thread; None if it has not returned after `timeout` seconds.

    For Celery remote-control calls: once in a while one stays blocked in kombu's reply
    collection (Mailbox._collect) far beyond its own timeout, and a test must not hang
    with it. The blocked thread is left behind; it holds only its own connection.
    """
    outcome: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="bounded-call", daemon=True)
    thread.start()
    thread.join(timeout)
    if errors:
        raise errors[0]
    return outcome[0] if outcome else None


def ping(name: str, timeout: float = 1.0) -> bool:
    """Whether worker `name` answers a remote-control ping (never blocks much longer
    than `timeout`; a fresh broker connection each time)."""
    from shared.work.queue import app

    def call() -> list:
        with app.connection_for_write() as connection:
            return app.control.ping(destination=[name], timeout=timeout, connection=connection)

    return bool(bounded(call, timeout + 5))


def control(name: str, command: str, timeout: float = 1.0, **arguments: object) -> None:
    """Send a remote-control command to worker `name` and wait for its reply, repeating
    it (they are idempotent) until one arrives."""
    from shared.work.queue import app

    def call() -> list:
        with app.connection_for_write() as connection:
            return app.control.broadcast(
                command,
                arguments=arguments,
                destination=[name],
                reply=True,
                timeout=timeout,
                connection=connection,
            )

    wait_until(lambda: bounded(call, timeout + 5), 60, f"{name} to answer {command}")


# ------------------------------------------------------------------ what is stored


def stored_ids() -> set[str]:
    """The ids of the sequences whose values are stored."""
    from shared.db import session_scope
    from shared.models import SequenceValues

    with session_scope() as session:
        return set(session.scalars(select(SequenceValues.id)))


def busy_locks() -> list[str]:
    """Held locks, but not factoring's: every download schedules factoring, and only
    tests that start a factor worker run it, so elsewhere those locks sit out their TTL."""
    from shared.redis_db import get_redis
    from shared.work.lock import list_locks, lock_key

    factors = lock_key("factors", "")
    return [info.key for info in list_locks(get_redis("locks")) if not info.key.startswith(factors)]


def execute(url: str, *statements: str) -> None:
    """Run SQL statements in one transaction on the database at `url`."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


def table_rows(url: str) -> dict[str, int]:
    """Every table of the database at `url`, with its number of rows."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            names = inspect(connection).get_table_names()
            return {
                name: connection.scalar(text(f'SELECT count(*) FROM "{name}"')) for name in names
            }
    finally:
        engine.dispose()


def json_events(log: str, event: str) -> list[dict]:
    """The records of `event` in a worker's JSON-lines log (other lines are skipped)."""
    import json

    found = []
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
    return found

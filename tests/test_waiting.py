"""People still waiting go first (issue #25): work nobody waits for yields to work
someone waits for, one client's burst starts no more than its budget, a long queue
never lets waiters start work twice, and maintenance that drops work answers 503."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

import api.caches
import api.clients
import api.jobs
import api.routes
from api import budget
from api.clients import budget_client
from shared.db import session_scope
from shared.redis_db import get_redis
from shared.work import queue, waiting
from shared.work.lock import read_lock
from shared.work.queue import INTERACTIVE, start
from shared.work.queue import app as celery
from shared.work.units import values_work
from tests.helpers import wait_until


@pytest.fixture
def tuned(monkeypatch: pytest.MonkeyPatch, settings):
    """Settings for the API in this process; the wait slots are made afresh."""

    def configure(**changes) -> None:
        tuned_settings = dataclasses.replace(settings, **changes)
        routes = (api.routes.sequences, api.routes.factors, api.routes.search, api.routes.status)
        for module in (api.jobs, api.clients, api.caches, *routes):
            monkeypatch.setattr(module, "get_settings", lambda: tuned_settings)
        api.jobs.wait_slots.cache_clear()

    yield configure
    api.jobs.wait_slots.cache_clear()


def fetched_order() -> list[str]:
    with session_scope() as session:
        rows = session.execute(text("SELECT id FROM sequence_values ORDER BY fetched_at, id"))
        return [seq_id for (seq_id,) in rows]


def test_a_fresh_request_goes_before_abandoned_work(client, fake_oeis, workers) -> None:
    """Twenty downloads whose requesters left (as after 202s) are queued at the
    interactive priority; a person who then asks for another sequence is served next,
    and the abandoned downloads are still done, afterwards."""
    fake_oeis.latency = 0.3
    abandoned = [f"A{910200 + n}" for n in range(20)]
    for seq_id in abandoned:
        start(values_work(seq_id), INTERACTIVE)  # as the API does; nobody waits
    time.sleep(waiting.GRACE + 0.5)
    lane = workers("lane", concurrency=1)
    wait_until(lambda: fake_oeis.count("/A9102"), 30, "the first abandoned download")
    answer = client.get("/api/get_oeis_values/A910300/3")
    assert answer.status_code == 200
    wait_until(lambda: len(fetched_order()) == 21, 60, "the abandoned downloads")
    order = fetched_order()
    assert order.index("A910300") <= 1, order  # only what was already running went first
    assert "task.deferred" in lane.output()


def test_work_joined_again_gets_its_priority_back(client, fake_oeis, workers) -> None:
    fake_oeis.latency = 0.3
    queued = [f"A{910400 + n}" for n in range(8)]
    for seq_id in queued:
        start(values_work(seq_id), INTERACTIVE)
    time.sleep(waiting.GRACE + 0.5)
    workers("lane", concurrency=1)  # defers them all, one after another
    wait_until(
        lambda: get_redis("locks").keys(f"{waiting.DEFERRED_PREFIX}*"), 30, "a deferred task"
    )
    last = queued[-1]
    assert client.get(f"/api/get_oeis_values/{last}/3").status_code == 200
    order = fetched_order()
    assert order.index(last) <= 3, order  # not behind the seven others


def test_a_burst_starts_exactly_the_budget(client, fake_oeis, tuned) -> None:
    tuned(client_work_limit=12, sync_wait=1)
    fake_oeis.hang = True  # nothing finishes, so nothing frees a unit
    ids = [f"A{910500 + n}" for n in range(64)]

    def ask(seq_id: str) -> int:
        return client.get(
            f"/api/get_oeis_values/{seq_id}/3", environ_base={"REMOTE_ADDR": "127.0.1.9"}
        ).status_code

    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(ask, ids))
    fake_oeis.hang = False
    assert statuses.count(429) == 52, statuses
    assert len(get_redis("locks").zrange(budget.KEY_PREFIX + "127.0.1.9", 0, -1)) == 12


def test_identical_requests_arriving_together_share_one_unit(client, fake_oeis, tuned) -> None:
    """The ~80 identical requests of one FactorStacks page are one unit of work, even
    when they all arrive before any of them has started it."""
    tuned(client_work_limit=2, sync_wait=0.5)
    fake_oeis.hang = True
    with ThreadPoolExecutor(40) as pool:
        statuses = list(
            pool.map(lambda _: client.get("/api/get_oeis_values/A910650/3").status_code, range(40))
        )
    fake_oeis.hang = False
    assert set(statuses) == {202}, statuses


def test_an_ipv6_64_is_one_client(client, fake_oeis, tuned) -> None:
    assert budget_client("2001:db8:1:2::5") == budget_client("2001:db8:1:2:ffff::9")
    assert budget_client("2001:db8:1:2::5") == "2001:db8:1:2::/64"
    assert budget_client("2001:db8:1:3::5") != budget_client("2001:db8:1:2::5")
    assert budget_client("127.0.1.1") == "127.0.1.1" != budget_client("127.0.1.2")
    assert budget_client("::ffff:127.0.1.1") == "127.0.1.1"
    tuned(client_work_limit=3, sync_wait=0.2)
    fake_oeis.hang = True
    statuses = [
        client.get(
            f"/api/get_oeis_values/A{910600 + n}/3",
            environ_base={"REMOTE_ADDR": f"2001:db8:1:2::{n + 1:x}"},
        ).status_code
        for n in range(4)
    ]
    other = client.get(
        "/api/get_oeis_values/A910610/3", environ_base={"REMOTE_ADDR": "2001:db8::1"}
    )
    fake_oeis.hang = False
    assert statuses == [202, 202, 202, 429]
    assert other.status_code == 202


def test_a_queue_wait_longer_than_the_lock_ttl_starts_one_download(
    client, fake_oeis, workers, settings, caplog, monkeypatch
) -> None:
    """The worker is busy for longer than BACKSCOPE_LOCK_TTL while a request waits for
    work queued behind: its lock must not expire in the queue."""
    ttl = 5  # (for the API in this process and the worker: half the tests' 10 s)
    short = dataclasses.replace(settings, lock_ttl=ttl)
    for module in (api.jobs, queue):
        monkeypatch.setattr(module, "get_settings", lambda: short)
    lane = workers("lane", concurrency=1, env={"BACKSCOPE_LOCK_TTL": str(ttl)})
    lane.signal(signal.SIGSTOP)  # busy elsewhere, for longer than a TTL
    threading.Timer(ttl + 3.0, lane.signal, (signal.SIGCONT,)).start()
    with caplog.at_level(logging.INFO, logger="shared.work.queue"):
        waited = client.get("/api/get_oeis_values/A910701/3")
    assert waited.status_code == 200
    started = [
        r
        for r in caplog.records
        if r.getMessage() == "work.enqueued" and getattr(r, "seq_id", "") == "A910701"
    ]
    assert len(started) == 2  # its values, then its name: never the values twice
    assert fake_oeis.bfile_downloads("A910701") == 1


def test_a_request_waiting_for_revoked_work_gets_503(client, fake_oeis, workers) -> None:
    """As when clear-db or reset-db drops work a worker holds: 503, not a 500."""
    workers("lane", concurrency=1)
    fake_oeis.hang = True
    busy = threading.Thread(target=lambda: client.get("/api/get_oeis_values/A910800/3"))
    busy.start()
    wait_until(lambda: fake_oeis.count("/A910800/"), 20, "the worker to be busy")
    answers: dict[str, object] = {}

    def ask() -> None:
        response = client.get("/api/get_oeis_values/A910801/3")
        answers.update(
            status=response.status_code, body=response.get_json(), headers=response.headers
        )

    waiter = threading.Thread(target=ask)
    waiter.start()
    key = "backscope:lock:values:A910801"
    wait_until(lambda: read_lock(get_redis("locks"), key), 20, "the work to be queued")
    celery.control.revoke(read_lock(get_redis("locks"), key).owner)
    fake_oeis.hang = False
    waiter.join(60)
    busy.join(60)
    assert answers["status"] == 503, answers
    assert "cancelled" in answers["body"]["error"]
    assert int(answers["headers"]["Retry-After"]) > 0

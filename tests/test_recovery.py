"""The lock under real failures: worker processes killed, stopped and raced.

Each test starts its own worker subprocesses (see the `workers` fixture) against the
real PostgreSQL, Redis and the fake OEIS, and breaks them with real signals.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

import api.jobs
from shared.admin import queue as queue_admin
from shared.db import session_scope
from shared.errors import UpstreamBadData
from shared.models import SequenceValues
from shared.redis_db import get_redis
from shared.work import queue
from shared.work.lock import WorkLock, lock_key, read_lock
from shared.work.queue import BACKGROUND
from shared.work.queue import app as celery
from shared.work.units import values_work
from tests.conftest import ROOT
from tests.helpers import get_until_200, json_events, ping, wait_until

pytestmark = pytest.mark.slow

SEQ = "A000027"  # the positive integers: a(n) = n
# For workers whose download the test holds up (fake_oeis.hang) for as long as it needs:
# they wait for the OEIS far longer than that, so no timeout or retry muddles the story.
PATIENT = {"BACKSCOPE_OEIS_READ_TIMEOUT": "120"}


def stored_token(seq_id: str) -> int | None:
    with session_scope() as session:
        row = session.get(SequenceValues, seq_id)
        return row.token if row else None


@pytest.fixture
def short_lock(monkeypatch, settings):
    """API and workers with a short lock TTL and a short synchronous wait."""

    def configure(ttl: int, sync_wait: float = 1.0) -> dict[str, str]:
        quick = dataclasses.replace(settings, lock_ttl=ttl, sync_wait=sync_wait)
        monkeypatch.setattr(api.jobs, "get_settings", lambda: quick)
        monkeypatch.setattr(queue, "get_settings", lambda: quick)
        return {"BACKSCOPE_LOCK_TTL": str(ttl)}

    return configure


@pytest.fixture
def beat(tmp_path):
    """A celery beat process purging stale locks every `interval` seconds."""
    processes = []

    def start(interval: int) -> subprocess.Popen:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.app",
                "beat",
                "-l",
                "INFO",
                "--schedule",
                str(tmp_path / "beat-schedule"),
            ],
            cwd=ROOT,
            env={**os.environ, "BACKSCOPE_PURGE_INTERVAL": str(interval)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("mode", ["ttl", "purge"])
def test_kill_9_mid_download_recovers(
    app, fake_oeis, worker, workers, short_lock, beat, mode
) -> None:
    # "ttl": nothing but the lock's expiry frees the sequence (TTL 5 s, no beat).
    # "purge": a long TTL (60 s, the default) and beat purging every 2 s.
    ttl, purge_interval = (5, None) if mode == "ttl" else (60, 2)
    env = short_lock(ttl)
    client = app.test_client()
    earlier = len(worker.output())  # the session worker's log before this test
    doomed = workers("doomed", env={**env, **PATIENT}, concurrency=1)
    fake_oeis.hang = True  # the download is in flight when the worker dies
    assert client.get(f"/api/get_oeis_values/{SEQ}/5").status_code == 202
    wait_until(lambda: fake_oeis.bfile_downloads(SEQ) == 1, 60, "the download to start")

    doomed.signal(signal.SIGKILL)
    doomed.process.wait(10)
    killed = time.monotonic()
    before = time.time()
    left = read_lock(get_redis("locks"), lock_key("values", SEQ))
    expires = before + (left.ttl if left else 0)  # or later: nobody renews it any more
    fake_oeis.hang = False
    rescuer = workers("rescuer", env={**env, "BACKSCOPE_PURGE_INTERVAL": "2"})
    if purge_interval:
        beat(purge_interval)

    response = get_until_200(client, f"/api/get_oeis_values/{SEQ}/5", timeout=ttl + 60)
    print(
        f"\nrecovery after kill -9 ({mode}: lock TTL {ttl} s, purge every "
        f"{purge_interval or '-'} s): {time.monotonic() - killed:.1f} s"
    )
    assert response.status_code == 200
    assert response.get_json()["values"] == {str(n): str(n) for n in range(1, 6)}
    assert fake_oeis.bfile_downloads(SEQ) == 2
    again = [r for r in fake_oeis.requests if r.path.startswith(f"/{SEQ}/")][-1]
    purged = [
        record
        for record in json_events(worker.output()[earlier:] + rescuer.output(), "lock.purged")
        if record["key"] == lock_key("values", SEQ)
    ]
    if purge_interval is None:
        # The dead worker's lock held the sequence until it expired, and no longer.
        assert again.time >= expires - 0.01
        assert purged == []
    else:
        # A purge freed it, long before its TTL would have.
        assert [record["reason"] for record in purged] == [f"owner worker {doomed.name} is gone"]
        assert again.time < expires


def test_stalled_worker_cannot_overwrite_newer_data(app, fake_oeis, workers, short_lock) -> None:
    env = short_lock(ttl=3)
    client = app.test_client()
    sleeper = workers("sleeper", env={**env, **PATIENT}, concurrency=1)
    fake_oeis.hang = True
    assert client.get(f"/api/get_oeis_values/{SEQ}/5").status_code == 202
    wait_until(lambda: fake_oeis.bfile_downloads(SEQ) == 1, 60, "the download to start")
    first_fence = read_lock(get_redis("locks"), lock_key("values", SEQ)).fence
    sleeper.signal(signal.SIGSTOP)  # a long GC pause, a stopped VM...

    fake_oeis.hang = False  # its download is answered, but it cannot read the answer yet
    workers("second", env=env, concurrency=1)
    response = get_until_200(client, f"/api/get_oeis_values/{SEQ}/5", timeout=60)
    assert response.status_code == 200
    second_token = stored_token(SEQ)
    assert second_token > first_fence
    assert fake_oeis.bfile_downloads(SEQ) == 2

    sleeper.signal(signal.SIGCONT)  # it wakes up with its old download in hand
    wait_until(lambda: "store.write_refused" in sleeper.output(), 60, "the refusal")
    assert stored_token(SEQ) == second_token
    (refusal,) = json_events(sleeper.output(), "store.write_refused")
    assert refusal["seq_id"] == SEQ and refusal["token"] == first_fence
    assert "lock.lost" in sleeper.output() or "lock.release_not_owned" in sleeper.output()


def test_purges_remove_exactly_the_stale_locks(
    app, fake_oeis, workers, short_lock, caplog, monkeypatch
) -> None:
    from worker.tasks.purge import purge_stale_locks

    # A worker that is up must answer each purge's ping in time, however busy the machine,
    # and the live task's lock must outlast its worker being stopped for a purge.
    monkeypatch.setattr(queue_admin, "PING_TIMEOUT", 3.0)
    env = short_lock(ttl=60)
    redis = get_redis("locks")
    live = workers("live", env={**env, **PATIENT}, concurrency=1)
    # 1. A lock whose owner task has finished.
    finished = celery.send_task("backscope.fetch_values", args=["A000045"])
    finished.get(timeout=60)
    assert WorkLock(redis, "values", "A000001", ttl=60).take(finished.id)
    # 2. A lock planted with no TTL.
    redis.set(lock_key("values", "A000002"), json.dumps({"fence": 1, "owner": "x", "taken": 0}))
    # 3. A lock owned by a task running on a worker that is then killed.
    dead = workers("dead", queues="dead", env=PATIENT, concurrency=1)
    fake_oeis.hang = True  # downloads stay in flight until the end of the test
    dead_lock = WorkLock(redis, "values", SEQ, ttl=60)
    assert dead_lock.take("dead-task")
    celery.send_task("backscope.fetch_values", args=[SEQ], task_id="dead-task", queue="dead")
    wait_until(lambda: fake_oeis.bfile_downloads(SEQ) == 1, 60, "the doomed download")
    dead.signal(signal.SIGKILL)
    dead.process.wait(10)
    # 4. A live task's lock (running on `live`).
    # Work these tests wait for themselves is queued at BACKGROUND: no request marks it as
    # waited for, and interactive work nobody waits for is re-queued (shared/work/waiting.py).
    task_id = queue.start(values_work("A000040"), BACKGROUND)
    wait_until(lambda: fake_oeis.bfile_downloads("A000040") == 1, 60, "the live download")

    with caplog.at_level(logging.WARNING):
        # One missed ping proves nothing: the dead worker is judged gone only when it
        # stays silent for a second purge.
        wait_until(lambda: ping(live.name), 60, "the live worker to answer")
        first = purge_stale_locks()
        # The live worker misses this purge's ping (stopped), answers the next one.
        live.signal(signal.SIGSTOP)
        second = purge_stale_locks()
        live.signal(signal.SIGCONT)
        wait_until(lambda: ping(live.name), 60, "the live worker to answer again")
        third = purge_stale_locks()

    assert sorted(first) == [lock_key("values", "A000001"), lock_key("values", "A000002")]
    assert second == [lock_key("values", SEQ)]
    assert third == []
    assert read_lock(redis, lock_key("values", "A000040")).owner == task_id
    reasons = {
        record.key: record.reason
        for record in caplog.records
        if record.getMessage() == "lock.purged"
    }
    assert reasons == {
        lock_key("values", "A000001"): "owner task success",
        lock_key("values", "A000002"): "no TTL",
        lock_key("values", SEQ): f"owner worker {dead.name} is gone",
    }
    fake_oeis.hang = False
    assert live.process.poll() is None


def test_work_that_keeps_killing_its_worker_is_given_up(app, fake_oeis, workers) -> None:
    """A download whose worker dies under it (say, killed for memory) is delivered again
    a few times, then given up with a clear error instead of killing workers for ever."""
    from worker.tasks.locked import MAX_DELIVERIES

    doomed = workers("doomed", env=PATIENT, concurrency=1)
    fake_oeis.hang = True  # every delivery blocks in the download, where it is killed
    task_id = queue.start(values_work(SEQ))
    for delivery in range(1, MAX_DELIVERIES + 1):
        wait_until(
            lambda n=delivery: fake_oeis.bfile_downloads(SEQ) == n, 60, f"delivery {delivery}"
        )
        children = subprocess.run(
            ["pgrep", "-P", str(doomed.process.pid)], capture_output=True, text=True
        ).stdout.split()
        for child in children:
            os.kill(int(child), signal.SIGKILL)
    result = celery.AsyncResult(task_id)
    wait_until(lambda: result.state == "FAILURE", 60, "the task to be given up")
    assert isinstance(result.result, UpstreamBadData), repr(result.result)
    assert "stopped its worker 3 times" in str(result.result)
    assert fake_oeis.bfile_downloads(SEQ) == MAX_DELIVERIES
    assert doomed.process.poll() is None  # the worker itself lives on
    fake_oeis.hang = False

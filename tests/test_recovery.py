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
from concurrent.futures import ThreadPoolExecutor

import pytest

import api.jobs
from shared import queue
from shared.db import session_scope
from shared.errors import UpstreamBadData
from shared.lock import WorkLock, lock_key, read_lock
from shared.models import SequenceValues
from shared.queue import app as celery
from shared.redis_db import get_redis
from shared.work import values_work
from tests.conftest import ROOT
from tests.helpers import get_until_200, wait_until

pytestmark = pytest.mark.slow

SEQ = "A000027"  # the positive integers: a(n) = n


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
def test_kill_9_mid_download_recovers(app, fake_oeis, workers, short_lock, beat, mode) -> None:
    # "ttl": nothing but the lock's expiry frees the sequence (TTL 5 s, no beat).
    # "purge": a long TTL (60 s, the default) and beat purging every 2 s.
    ttl, purge_interval = (5, None) if mode == "ttl" else (60, 2)
    env = short_lock(ttl)
    client = app.test_client()
    doomed = workers("doomed", env=env, concurrency=1)
    fake_oeis.latency = 30  # the download is in flight when the worker dies
    assert client.get(f"/api/get_oeis_values/{SEQ}/5").status_code == 202
    wait_until(lambda: fake_oeis.bfile_downloads(SEQ) == 1, 10, "the download to start")

    doomed.signal(signal.SIGKILL)
    doomed.process.wait(10)
    killed = time.monotonic()
    fake_oeis.latency = 0
    workers("rescuer", env={**env, "BACKSCOPE_PURGE_INTERVAL": "2"})
    if purge_interval:
        beat(purge_interval)

    response = get_until_200(client, f"/api/get_oeis_values/{SEQ}/5", timeout=ttl + 30)
    recovery = time.monotonic() - killed
    print(
        f"\nrecovery after kill -9 ({mode}: lock TTL {ttl} s, purge every "
        f"{purge_interval or '-'} s): {recovery:.1f} s"
    )
    assert response.status_code == 200
    assert response.get_json()["values"] == {str(n): str(n) for n in range(1, 6)}
    assert fake_oeis.bfile_downloads(SEQ) == 2
    bound = ttl if purge_interval is None else purge_interval + 2  # + ping and request
    assert recovery <= bound + 5  # + starting the rescuer worker


def test_stalled_worker_cannot_overwrite_newer_data(app, fake_oeis, workers, short_lock) -> None:
    env = short_lock(ttl=3)
    client = app.test_client()
    sleeper = workers("sleeper", env=env, concurrency=1)
    fake_oeis.latency = 2
    assert client.get(f"/api/get_oeis_values/{SEQ}/5").status_code == 202
    wait_until(lambda: fake_oeis.bfile_downloads(SEQ) == 1, 10, "the download to start")
    first_fence = read_lock(get_redis("locks"), lock_key("values", SEQ)).fence
    sleeper.signal(signal.SIGSTOP)  # a long GC pause, a stopped VM...

    fake_oeis.latency = 0
    workers("second", env=env, concurrency=1)
    response = get_until_200(client, f"/api/get_oeis_values/{SEQ}/5", timeout=30)
    assert response.status_code == 200
    second_token = stored_token(SEQ)
    assert second_token > first_fence
    assert fake_oeis.bfile_downloads(SEQ) == 2

    sleeper.signal(signal.SIGCONT)  # it wakes up with its old download in hand
    wait_until(lambda: "store.write_refused" in sleeper.output(), 20, "the refusal")
    assert stored_token(SEQ) == second_token
    refusal = next(
        json.loads(line) for line in sleeper.output().splitlines() if "store.write_refused" in line
    )
    assert refusal["seq_id"] == SEQ and refusal["token"] == first_fence
    assert "lock.lost" in sleeper.output() or "lock.release_not_owned" in sleeper.output()


def test_purges_remove_exactly_the_stale_locks(app, fake_oeis, workers, caplog) -> None:
    from worker.tasks.purge import purge_stale_locks

    redis = get_redis("locks")
    live = workers("live", concurrency=1)
    # 1. A lock whose owner task has finished.
    finished = celery.send_task("backscope.fetch_values", args=["A000045"])
    finished.get(timeout=20)
    assert WorkLock(redis, "values", "A000001", ttl=60).take(finished.id)
    # 2. A lock planted with no TTL.
    redis.set(lock_key("values", "A000002"), json.dumps({"fence": 1, "owner": "x", "taken": 0}))
    # 3. A lock owned by a task running on a worker that is then killed.
    dead = workers("dead", queues="dead", concurrency=1)
    fake_oeis.latency = 30
    dead_lock = WorkLock(redis, "values", SEQ, ttl=60)
    assert dead_lock.take("dead-task")
    celery.send_task("backscope.fetch_values", args=[SEQ], task_id="dead-task", queue="dead")
    wait_until(lambda: fake_oeis.bfile_downloads(SEQ) == 1, 10, "the doomed download")
    dead.signal(signal.SIGKILL)
    dead.process.wait(10)
    # 4. A live task's lock (running on `live`).
    task_id = queue.start(values_work("A000040"))
    wait_until(lambda: fake_oeis.bfile_downloads("A000040") == 1, 10, "the live download")

    with caplog.at_level(logging.WARNING):
        # One missed ping proves nothing: the dead worker is judged gone only when it
        # stays silent for a second purge.
        first = purge_stale_locks()
        # The live worker misses this purge's ping (stopped), answers the next one.
        live.signal(signal.SIGSTOP)
        second = purge_stale_locks()
        live.signal(signal.SIGCONT)
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
    fake_oeis.latency = 0
    assert live.process.poll() is None


def test_fifty_concurrent_requests_one_download(app, fake_oeis, workers) -> None:
    workers("burst", concurrency=2)
    fake_oeis.latency = 1.0
    client = app.test_client()
    with ThreadPoolExecutor(50) as pool:
        responses = list(
            pool.map(
                lambda _: get_until_200(client, "/api/get_oeis_name_and_values/A000040", 30),
                range(50),
            )
        )
    assert [r.status_code for r in responses] == [200] * 50
    assert all(len(r.get_json()["values"]) == 10000 for r in responses)
    assert fake_oeis.bfile_downloads("A000040") == 1


def test_work_that_keeps_killing_its_worker_is_given_up(app, fake_oeis, workers) -> None:
    """A download whose worker dies under it (say, killed for memory) is delivered again
    a few times, then given up with a clear error instead of killing workers for ever."""
    from worker.tasks.locked import MAX_DELIVERIES

    doomed = workers("doomed", concurrency=1)
    fake_oeis.hang = True  # every delivery blocks in the download, where it is killed
    task_id = queue.start(values_work(SEQ))
    for delivery in range(1, MAX_DELIVERIES + 1):
        wait_until(
            lambda n=delivery: fake_oeis.bfile_downloads(SEQ) == n, 30, f"delivery {delivery}"
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

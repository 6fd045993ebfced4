"""Enqueue-and-wait: get the workers to fetch what is missing and wait briefly for it.

The work lock dedupes: whoever takes it enqueues the task (in the task's name, so the
task id is known before it is sent); everyone else finds the owner's task id in the
lock and waits on that task (shared/work/queue.py). The API never talks to the OEIS itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import TypeVar

from celery.exceptions import (
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLostError,
)
from celery.result import AsyncResult
from flask import g
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from api import budget
from api.clients import budget_client, client_address
from shared.config import get_settings
from shared.db import session_scope
from shared.errors import BackscopeError, UpstreamUnavailable
from shared.redis_db import get_redis
from shared.work import waiting
from shared.work.lock import FINISHED_STATES, extend_queued, lock_key, read_lock
from shared.work.queue import BUSY_CLIENT, INTERACTIVE, join, requeue, start
from shared.work.queue import app as celery
from shared.work.queue import schedule as schedule_work
from shared.work.units import Work

log = logging.getLogger(__name__)

T = TypeVar("T")
LOCK_CHECK_INTERVAL = 1.0
# Read, start what is missing, wait: at most this many times before answering 202.
READ_ROUNDS = 3
# New work of a client with this many units outstanding goes behind other clients' work.
FAIR_SHARE = 2


class Pending(Exception):
    """The work is still running after the wait; answer 202 pointing at `task_id`."""

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self.task_id = task_id


class TaskFailed(Exception):
    """A task failed for a reason that is our bug, not the OEIS's: answer 500."""


# A request that finds work missing schedules it; the next requests, until the work is
# done, would only learn from Redis that it is running. Each process remembers what it
# scheduled for this long and skips asking again (the cached read path stays free of
# Redis round trips while, say, a sequence is being factored).
SCHEDULE_MEMORY = 5.0
scheduled_recently: dict[str, float] = {}


def _start_or_join(work: Work) -> str:
    """The task doing `work`: joined for free if one is in flight, else started and
    counted against the asking client's budget (429 when it is spent). A client with
    work outstanding already queues its next behind other clients' first requests."""
    joined = join(work)
    if joined is not None:
        # Deferred work (nobody waited for it) gets its priority back: sent again.
        if waiting.claim_deferred(get_redis("locks"), joined):
            return requeue(work, joined, INTERACTIVE) or joined
        return joined
    redis = get_redis("locks")
    client = budget_client(client_address())
    try:
        limit = get_settings().client_work_limit
        held = budget.reserve(redis, client, limit, lock_key(work.kind, work.subject))
        task_id = None
        try:
            task_id = start(work, INTERACTIVE if held.outstanding < FAIR_SHARE else BUSY_CLIENT)
        finally:
            budget.settle(redis, held, task_id)
    except RedisError as exc:
        raise UpstreamUnavailable("the work queue is unavailable right now", 30) from exc
    return task_id


@cache
def wait_slots() -> threading.BoundedSemaphore:
    """The threads of this process that may wait for workers at once
    (BACKSCOPE_WAIT_SLOTS). The others stay free for cached reads: a request that
    finds no free slot is answered 202 at once instead of waiting."""
    return threading.BoundedSemaphore(get_settings().wait_slots)


def schedule_unless_recent(work: Work) -> None:
    """Start `work` in the background unless this process did so in the last
    SCHEDULE_MEMORY seconds; never fail the request."""
    key = lock_key(work.kind, work.subject)
    now = time.monotonic()
    if now - scheduled_recently.get(key, -SCHEDULE_MEMORY) < SCHEDULE_MEMORY:
        return
    if len(scheduled_recently) > 10_000:
        scheduled_recently.clear()
    scheduled_recently[key] = now
    schedule_work(work)


def _raise_failure(result: AsyncResult) -> None:
    error = result.result
    if isinstance(error, BackscopeError):
        raise error
    if result.state == "REVOKED" or isinstance(error, TaskRevokedError):
        # Dropped by clear-db or reset-db (shared/admin/queue.py) while we waited.
        raise UpstreamUnavailable("the work was cancelled by maintenance; try again", 5)
    if isinstance(error, (SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError)):
        raise UpstreamUnavailable("the download did not finish in time; try again", 30)
    log.error("work.task_failed", extra={"task_id": result.id, "error": repr(error)})
    raise TaskFailed(f"task {result.id} failed")


def _abandoned(work: Work, task_id: str) -> bool:
    """Whether `task_id` no longer holds `work`'s lock (it died and the lock expired or
    was purged): its waiters should start the work again rather than wait on it."""
    holder = read_lock(get_redis("locks"), lock_key(work.kind, work.subject))
    return holder is None or holder.owner != task_id


def _still_waiting(tasks: dict[str, Work], pending: dict, queued: set[str]) -> None:
    """Say that this request still waits for the pending tasks (so they are not put
    behind other work), and keep the locks of those still queued from expiring before
    they start: a long queue must not let waiters start the work a second time."""
    redis = get_redis("locks")
    waiting.mark(redis, list(pending))
    ttl = get_settings().lock_ttl
    for tid in queued:
        extend_queued(redis, lock_key(tasks[tid].kind, tasks[tid].subject), tid, ttl)


def wait(
    tasks: dict[str, Work], deadline: float, ready: Callable[[], bool] | None = None
) -> list[str]:
    """Wait until every task has finished, or the deadline passes, or one of them is found
    abandoned, or `ready()` says the data is there already; return the ids of the
    unfinished ones (empty when all finished, or to read again).

    Polls the result backend: cheap (one GET per task per poll), safe in threads, and the
    first polls come quickly so a fast download answers fast. About once a second it also
    checks that each task still holds its lock, so a crashed download is noticed within
    one lock TTL (or one purge) and a second rather than after the whole wait, and calls
    `ready`.
    """
    pending = {tid: AsyncResult(tid, app=celery) for tid in tasks}
    delay = 0.005
    next_lock_check = time.monotonic() + LOCK_CHECK_INTERVAL
    suspects: set[str] = set()
    queued: set[str] = set()  # not started yet
    try:
        _still_waiting(tasks, pending, queued)
        while pending:
            queued.clear()
            for tid, result in list(pending.items()):
                state = result.state
                if state == "SUCCESS":
                    del pending[tid]
                elif state in FINISHED_STATES:
                    _raise_failure(result)
                elif state == "PENDING":
                    queued.add(tid)
            now = time.monotonic()
            if not pending or now >= deadline:
                return list(pending)
            if now >= next_lock_check:
                next_lock_check = now + LOCK_CHECK_INTERVAL
                _still_waiting(tasks, pending, queued)
                # A task releases its lock a moment before its result is stored, so a
                # task without its lock is abandoned only if still unfinished a check later.
                lost = {tid for tid in pending if _abandoned(tasks[tid], tid)}
                if lost & suspects:
                    return []  # the caller reads again, then starts the work afresh
                suspects = lost
                if ready is not None and ready():
                    return []  # stored before the task finished: the caller reads it
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 1.5, 0.1)
    except (RedisError, BrokerError) as exc:
        raise UpstreamUnavailable("the work queue is unavailable right now", 30) from exc
    return []


def obtain(
    read: Callable[[Session], T | list[Work]],
    progressive: bool = False,
    partial: Callable[[Session], T | None] | None = None,
    wait_seconds: float | None = None,
) -> T:
    """Serve cached data, fetching what is missing first.

    `read` returns the data, or the list of work needed before it can. It may raise
    (e.g. NotFound for a sequence the OEIS does not have). `progressive` work stores its
    results as it goes (factoring, in batches): then `read` is also tried about once a
    second while waiting, so a request for a few terms need not wait for a task that
    factors a whole sequence. When the work is not done in time, `partial` (if given)
    may return what there is so far instead of a 202. `wait_seconds` is how long to wait
    (BACKSCOPE_SYNC_WAIT if not given).
    """

    def pending(task_id: str) -> Pending | T:
        if partial is not None:
            with session_scope() as session:
                found = partial(session)
            if found is not None:
                return found
        return Pending(task_id)

    def ready() -> bool:
        with session_scope() as session:
            return not isinstance(read(session), list)

    if wait_seconds is None:
        wait_seconds = get_settings().sync_wait
    deadline = time.monotonic() + wait_seconds
    task_ids: list[str] = []  # what a 202 points at
    waiting = False
    try:
        for round_ in range(READ_ROUNDS + 1):
            with session_scope() as session:
                found = read(session)
            if not isinstance(found, list):
                return found
            if round_ == READ_ROUNDS:
                # The tasks finished but stored nothing readable (e.g. another task
                # took over): let the client come back rather than loop here.
                break
            # Counted as an answer that needed work (api/observe.py), not a cached one.
            g.needed_work = True
            tasks = {_start_or_join(work): work for work in found}
            task_ids = list(tasks)
            if not waiting and not (waiting := wait_slots().acquire(blocking=False)):
                log.info("work.no_wait_slot", extra={"task_id": task_ids[0]})
                break
            unfinished = wait(tasks, deadline, ready if progressive else None)
            if unfinished:
                task_ids = unfinished
                break
    finally:
        if waiting:
            wait_slots().release()
    answer = pending(task_ids[0])
    if isinstance(answer, Pending):
        raise answer
    return answer

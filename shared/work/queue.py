"""The work queue both sides use: the Celery app object (built from shared/config.py),
and starting a unit of work through its lock.

The API imports this module and never the worker package: tasks are sent by name
(shared/work/units.py). Workers run `celery -A worker.app`, which adds the task modules and
the worker-only signal handlers to this same app.

Lock-and-enqueue: whoever takes the work lock sends the task (in the task's name, so
the task id is known before it is sent); everyone else finds the owner's task id in the
lock and joins it. The API, the workers (a download scheduling its factoring) and the
CLI (prefetch) all start work this way.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from typing import Any

from celery import Celery, current_task
from celery.result import AsyncResult
from kombu import Queue
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from shared.config import ConfigError, get_settings
from shared.errors import UpstreamUnavailable
from shared.logs import log_field
from shared.redis_db import get_redis
from shared.work import waiting
from shared.work.lock import (
    FINISHED_STATES,
    WorkLock,
    hand_over,
    lock_key,
    read_lock,
    release_value,
)
from shared.work.units import DOWNLOADS_QUEUE, FACTORS_QUEUE, MAINTENANCE_QUEUE, Work

log = logging.getLogger(__name__)

try:
    settings = get_settings()
except ConfigError as exc:
    sys.exit(f"backscope: configuration error: {exc}")

# The longest a task may run; the broker's visibility timeout must exceed it plus
# the longest retry countdown, or Redis redelivers a task that is still running.
HARD_LIMIT = 900
SOFT_LIMIT = 840
# The longest a task waits before a retry: the OEIS may ask for up to an hour
# (Retry-After is capped at 3600 s in shared/oeis/client.py).
MAX_RETRY_COUNTDOWN = 3600
VISIBILITY_TIMEOUT = 2 * (HARD_LIMIT + MAX_RETRY_COUNTDOWN)
# Taking a lock and enqueueing: give up after this many rounds of the lock changing hands.
MAX_ROUNDS = 4
# Message priorities: with Redis, 0 is served first (kombu keeps one list per step and a
# worker pops the lists in priority order). Work a client waits for comes first, unless
# that client already has work queued (BUSY_CLIENT: a crawler's hundredth request
# queues behind everyone's first); then work nobody waits for (a name after a
# download), then bulk work (prefetch), which so never delays an interactive request.
INTERACTIVE, BUSY_CLIENT, BACKGROUND, BULK = 0, 3, 6, 9
PRIORITY_STEPS = [INTERACTIVE, BUSY_CLIENT, BACKGROUND, BULK]

app = Celery(
    "backscope",
    broker=settings.redis_db_url("broker"),
    backend=settings.redis_db_url("results"),
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    result_expires=24 * 3600,
    result_extended=True,
    task_track_started=True,
    # Tasks are idempotent: acknowledge after running, so a task whose worker died is
    # delivered again (worker/tasks/locked.py bounds how often).
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_time_limit=HARD_LIMIT,
    task_soft_time_limit=SOFT_LIMIT,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "priority_steps": PRIORITY_STEPS,
    },
    result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
    task_default_queue=DOWNLOADS_QUEUE,
    # Download workers consume downloads,maintenance; factor workers only factors.
    task_queues=[Queue(DOWNLOADS_QUEUE), Queue(MAINTENANCE_QUEUE), Queue(FACTORS_QUEUE)],
    task_routes={
        "backscope.maintenance.*": {"queue": MAINTENANCE_QUEUE},
        "backscope.factor_values": {"queue": FACTORS_QUEUE},
    },
    beat_schedule={
        "purge-stale-locks": {
            "task": "backscope.maintenance.purge_stale_locks",
            "schedule": float(settings.purge_interval),
            "options": {"expires": float(settings.purge_interval)},
        },
        # One query and a few hundred messages: it runs ahead of bulk work, and the
        # checks it queues are bulk work themselves (worker/tasks/refresh.py).
        # The local search index (worker/tasks/index.py), daily by default.
        **(
            {
                "update-search-index": {
                    "task": "backscope.maintenance.update_index",
                    "schedule": float(settings.index_interval),
                    "kwargs": {"max_age": settings.index_interval / 2},
                    "options": {"expires": float(settings.index_interval)},
                }
            }
            if settings.index_interval
            else {}
        ),
        "refresh-cached-sequences": {
            "task": "backscope.refresh_sweep",
            "schedule": float(settings.refresh_interval),
            "options": {"expires": float(settings.refresh_interval), "priority": BACKGROUND},
        },
    },
)


def task_state(task_id: str) -> str:
    """The task's Celery state ("PENDING", "STARTED", "SUCCESS", ...)."""
    return AsyncResult(task_id, app=app).state


def _request_id() -> str | None:
    """The id of the HTTP request this work is done for: the API's, or, for work a task
    starts (a download's factoring), the one its own task carries."""
    request_id = log_field("request_id")
    if request_id is None and current_task:
        request_id = current_task.request.get("request_id")
    return request_id


def _send(work: Work, task_id: str, priority: int) -> None:
    # The request id travels as a message header; the worker logs it with every
    # record of the task (worker/app.py), so one request can be followed into it. When
    # it was sent tells the worker whether its requester may still be on the way to
    # waiting for it (shared/work/waiting.py).
    headers: dict[str, object] = {"sent_at": time.time()}
    if request_id := _request_id():
        headers["request_id"] = request_id
    app.send_task(work.task, args=work.args, task_id=task_id, priority=priority, headers=headers)


def requeue(work: Work, task_id: str, priority: int, deferred: bool = False) -> str | None:
    """Send `work` again under a new task id with `priority`, handing it `task_id`'s
    lock (the same fencing token): when the old message comes up, its task finds the
    lock another's and steps aside. `deferred` marks the new task as work nobody
    waits for (shared/work/waiting.py), before it can be taken. The new task id; None if the
    lock is no longer `task_id`'s (nothing is sent)."""
    client = get_redis("locks")
    key = lock_key(work.kind, work.subject)
    new_id = str(uuid.uuid4())
    if not hand_over(client, key, task_id, new_id):
        return None
    try:
        if deferred:
            waiting.mark_deferred(client, new_id)
        _send(work, new_id, priority)
    except BaseException:
        holder = read_lock(client, key)
        if holder is not None and holder.owner == new_id:
            release_value(client, holder)
        raise
    log.info(
        "work.requeued",
        extra={**work.log_fields(), "task_id": new_id, "was": task_id, "priority": priority},
    )
    return new_id


def _lock_and_send(work: Work, priority: int) -> str:
    """Take the work lock in a new task's name and send that task; or, if another task
    holds it, that task's id (taking over a lock whose owner is finished)."""
    client = get_redis("locks")
    for _ in range(MAX_ROUNDS):
        lock = WorkLock(client, work.kind, work.subject, get_settings().lock_ttl)
        task_id = str(uuid.uuid4())
        if lock.take(task_id):
            try:
                _send(work, task_id, priority)
            except BaseException:
                lock.release_quietly()
                raise
            log.info("work.enqueued", extra={**work.log_fields(), "task_id": task_id})
            return task_id
        holder = lock.holder()
        if holder is None:
            continue  # released between our attempt and our look
        if task_state(holder.owner) not in FINISHED_STATES:
            return holder.owner
        # The owner finished or died without releasing: take over at once rather
        # than wait out the TTL.
        release_value(client, holder)
        log.warning("work.took_over", extra={"key": holder.key, "owner": holder.owner})
    raise UpstreamUnavailable("could not start the work; try again", 5)


def start(work: Work, priority: int = INTERACTIVE) -> str:
    """The id of the task doing `work`: the one already in flight, or a new one sent
    with `priority`.

    UpstreamUnavailable if Redis or the broker does not answer, or the lock keeps
    changing hands.
    """
    try:
        return _lock_and_send(work, priority)
    except (RedisError, BrokerError) as exc:
        raise UpstreamUnavailable("the work queue is unavailable right now", 30) from exc


def join(work: Work) -> str | None:
    """The id of the task already doing `work`, or None if none is (nothing is started)."""
    try:
        holder = read_lock(get_redis("locks"), lock_key(work.kind, work.subject))
        if holder is None or task_state(holder.owner) in FINISHED_STATES:
            return None
    except (RedisError, BrokerError) as exc:
        raise UpstreamUnavailable("the work queue is unavailable right now", 30) from exc
    return holder.owner


def schedule(work: Work) -> str | None:
    """Start `work` in the background, or join the task already doing it; the task id.

    For work nobody waits on (a download's factoring, a missing name): an unreachable
    Redis or broker must not fail the caller, so it is logged and None returned; the
    API schedules the work again when it is asked for.
    """
    try:
        return start(work, BACKGROUND)
    except UpstreamUnavailable as exc:
        log.warning("work.not_scheduled", extra={**work.log_fields(), "error": str(exc)})
        return None


# Result keys read per round trip when watching many tasks.
STATE_BATCH = 500


def task_states(task_ids: list[str]) -> dict[str, tuple[str, Any]]:
    """Each task's state and result, reading the result backend in batches.

    One MGET per batch instead of one GET per task: prefetch watches up to 10,000.
    """
    backend = app.backend
    states: dict[str, tuple[str, Any]] = {}
    for first in range(0, len(task_ids), STATE_BATCH):
        batch = task_ids[first : first + STATE_BATCH]
        raw = backend.mget([backend.get_key_for_task(task_id) for task_id in batch])
        for task_id, payload in zip(batch, raw, strict=True):
            meta = backend.decode_result(payload) if payload else None
            states[task_id] = (meta["status"], meta["result"]) if meta else ("PENDING", None)
    return states

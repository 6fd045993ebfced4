"""Running a task body while holding its work lock, with polite retries, and giving up on
a task that keeps killing its worker."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from celery import Task
from redis.exceptions import LockError

from shared.config import get_settings
from shared.db import UNREACHABLE
from shared.errors import UpstreamBadData, UpstreamUnavailable
from shared.logs import log_context
from shared.redis_db import get_redis
from shared.work import waiting
from shared.work.lock import WorkLock
from shared.work.queue import BACKGROUND, MAX_RETRY_COUNTDOWN, VISIBILITY_TIMEOUT, requeue
from shared.work.units import Work

log = logging.getLogger(__name__)

# A task whose worker dies under it (killed for memory on a huge b-file, say) is
# delivered again (acks_late, reject_on_worker_lost); after this many deliveries of the
# same attempt it is given up instead of killing workers without end.
MAX_DELIVERIES = 3
DELIVERIES_KEY = "backscope:deliveries:"


def retry_countdown(retries: int, retry_after: int | None, base: float) -> float:
    """Exponential backoff with "equal jitter": each wait lies in [d/2, d] for d = base * 2^n,
    so waits grow from one attempt to the next while retries from many tasks still spread
    out. Never sooner than the OEIS's Retry-After."""
    delay = base * 2**retries
    delay = delay / 2 + random.uniform(0, delay / 2)
    return min(MAX_RETRY_COUNTDOWN, max(float(retry_after or 0), delay))


def run_locked(task: Task, work: Work, body: Callable[[int], str]) -> dict[str, str]:
    """Run `body(fencing_token)` while holding `work`'s lock, renewing it as it runs.

    The API takes the lock in this task's name before enqueueing it; a redelivered or
    retried task whose lock expired meanwhile takes it again. If another task holds it,
    that task does the work and this one steps aside.
    """
    with log_context(**work.log_fields(), attempt=task.request.retries + 1):
        return _run_locked(task, work, body)


def _count_delivery(task: Task) -> None:
    """Count this delivery of the task's current attempt; UpstreamBadData (502) once
    the same attempt has been delivered MAX_DELIVERIES times, so a download that
    kills its worker is reported instead of redelivered for ever."""
    key = f"{DELIVERIES_KEY}{task.request.id}:{task.request.retries}"
    pipe = get_redis("locks").pipeline()
    pipe.incr(key)
    pipe.expire(key, VISIBILITY_TIMEOUT)
    deliveries = pipe.execute()[0]
    if deliveries > MAX_DELIVERIES:
        log.error("task.worker_lost_too_often", extra={"deliveries": deliveries - 1})
        raise UpstreamBadData(
            f"giving up: the work stopped its worker {deliveries - 1} times "
            "(the OEIS data may be too large to process)"
        )


def _nobody_waits(task: Task) -> bool:
    """Whether this is work queued for someone waiting (an interactive priority, first
    attempt, first delivery) whom nobody waits for any more (shared/work/waiting.py)."""
    delivery = task.request.delivery_info or {}
    priority = delivery.get("priority")
    if priority is None or priority >= BACKGROUND or task.request.retries:
        return False
    if delivery.get("redelivered"):  # its worker died under it: it ran, and is counted
        return False
    return not waiting.waited(get_redis("locks"), task.request.id, task.request.get("sent_at"))


def _run_locked(task: Task, work: Work, body: Callable[[int], str]) -> dict[str, str]:
    settings = get_settings()
    task_id = task.request.id
    if _nobody_waits(task):
        # Let work someone waits for go first; this is still done, later.
        new_id = requeue(work, task_id, BACKGROUND, deferred=True)
        if new_id is not None:
            log.info("task.deferred", extra={"new_task_id": new_id})
            return {"outcome": "deferred", "owner": new_id}
    waiting.claim_deferred(get_redis("locks"), task_id)  # running now: not to be re-sent
    lock = WorkLock(get_redis("locks"), work.kind, work.subject, settings.lock_ttl)
    if not (lock.adopt(task_id) or lock.take(task_id)):
        holder = lock.holder()
        owner = holder.owner if holder else ""
        log.info("task.skipped", extra={"lock_owner": owner})
        return {"outcome": "skipped", "owner": owner}
    keep_lock = False
    try:
        _count_delivery(task)
        with lock.renewing():
            try:
                outcome = body(lock.fence or 0)
            except UNREACHABLE as exc:
                # PostgreSQL is down or restarting: like an OEIS outage, try again later
                # rather than fail the clients waiting on this task.
                raise UpstreamUnavailable("the database is unavailable right now") from exc
        log.info("task.done", extra={"outcome": outcome})
        return {"outcome": outcome}
    except UpstreamUnavailable as exc:
        if task.request.retries + 1 >= settings.oeis_max_attempts:
            log.warning("task.gave_up", extra={"error": str(exc)})
            raise
        countdown = retry_countdown(task.request.retries, exc.retry_after, settings.oeis_backoff)
        log.info(
            "task.retry",
            extra={"error": str(exc), "countdown": round(countdown, 2)},
        )
        # Keep the lock while the retry waits in the queue, so nobody starts a second
        # download. If it was lost meanwhile (expired, purged, cleared), retry all the
        # same: the retry takes the lock again, or steps aside for whoever holds it.
        try:
            lock.extend(countdown + settings.lock_ttl, replace_ttl=True)
            keep_lock = True
        except LockError:
            log.warning("task.lock_lost_before_retry", extra={"key": lock.name})
        raise task.retry(exc=exc, countdown=countdown) from exc
    finally:
        if not keep_lock:
            lock.release_quietly()

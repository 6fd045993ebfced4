"""Running a task body while holding its work lock, with polite retries; and starting
further work in the background from a task, through the same lock protocol as the API."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from celery import Task

from shared.config import get_settings
from shared.errors import UpstreamUnavailable
from shared.lock import WorkLock
from shared.logs import log_context
from shared.redis_db import get_redis
from shared.work import Work

log = logging.getLogger(__name__)

MAX_RETRY_COUNTDOWN = 600


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


def _run_locked(task: Task, work: Work, body: Callable[[int], str]) -> dict[str, str]:
    settings = get_settings()
    task_id = task.request.id
    lock = WorkLock(get_redis("locks"), work.kind, work.subject, settings.lock_ttl)
    if not (lock.adopt(task_id) or lock.take(task_id)):
        holder = lock.holder()
        owner = holder.owner if holder else ""
        log.info("task.skipped", extra={"lock_owner": owner})
        return {"outcome": "skipped", "owner": owner}
    keep_lock = False
    try:
        with lock.renewing():
            outcome = body(lock.fence or 0)
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
        # Keep the lock while the retry waits in the queue, so nobody starts a second download.
        lock.extend(countdown + settings.lock_ttl, replace_ttl=True)
        keep_lock = True
        raise task.retry(exc=exc, countdown=countdown) from exc
    finally:
        if not keep_lock:
            lock.release_quietly()

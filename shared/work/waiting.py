"""Who still waits for which task, so that people still waiting go first.

A request that waits for a task marks it about once a second (the API, api/jobs.py:
wait); the mark lapses a few seconds after the last request stops waiting (answered
202, timed out, gone). A worker about to start work that was queued for someone
waiting (an interactive priority), finds no mark and sees that the work was queued
more than GRACE seconds ago, re-queues it behind everything people wait for, under a
new task id (shared/work/queue.py: requeue; worker/tasks/locked.py). It is still done,
later. A request that joins such deferred work again claims it back: the work is sent
once more at its old priority (api/jobs.py).
"""

from __future__ import annotations

import time

from redis import Redis

WAITING_PREFIX = "backscope:waiting:"
DEFERRED_PREFIX = "backscope:deferred:"
# A mark outlives two of the waiting requests' checks (one a second).
MARK_SECONDS = 3
# Work queued less than this long ago is taken as waited for: its request may not have
# begun to wait yet.
GRACE = 2.0
# How long a deferred task may be claimed back: longer than it can sit in the queue.
DEFERRED_SECONDS = 3600


def mark(redis: Redis, task_ids: list[str]) -> None:
    """The calling request waits for these tasks."""
    pipe = redis.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.set(WAITING_PREFIX + task_id, 1, ex=MARK_SECONDS)
    pipe.execute()


def waited(redis: Redis, task_id: str, sent_at: float | None) -> bool:
    """Whether a request waits for the task (or may be about to: sent under GRACE
    seconds ago, or when it was sent is not known)."""
    if sent_at is None or time.time() - sent_at < GRACE:
        return True
    return bool(redis.exists(WAITING_PREFIX + task_id))


def mark_deferred(redis: Redis, task_id: str) -> None:
    redis.set(DEFERRED_PREFIX + task_id, 1, ex=DEFERRED_SECONDS)


def claim_deferred(redis: Redis, task_id: str) -> bool:
    """Take the deferred mark of a task: True for exactly one caller, if it was
    deferred. The worker starting it takes it too, so it cannot be re-sent meanwhile."""
    return bool(redis.delete(DEFERRED_PREFIX + task_id))

"""Lock-and-enqueue: start a unit of work, or join the task already doing it.

Whoever takes the work lock sends the task (in the task's name, so the task id is known
before it is sent); everyone else finds the owner's task id in the lock and joins it.
The API (api/jobs.py) and the workers (e.g. a download scheduling its factoring) both
start work this way. No Celery here: the caller passes how to send a task and how to
read a task's state.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from redis import Redis
from redis.exceptions import RedisError

from shared.errors import UpstreamUnavailable
from shared.lock import FINISHED_STATES, WorkLock, release_value
from shared.work import Work

log = logging.getLogger(__name__)

MAX_ROUNDS = 4

# send(work, task_id) enqueues work.task with work.args under that task id.
Send = Callable[[Work, str], None]
# state(task_id) is the task's Celery state ("PENDING", "STARTED", "SUCCESS", ...).
State = Callable[[str], str]


def start_work(work: Work, client: Redis, lock_ttl: float, send: Send, state: State) -> str:
    """The id of the task doing `work`: the one already in flight, or a new one.

    Raises UpstreamUnavailable when Redis does not answer or the lock keeps changing
    hands; whatever `send` raises is passed on (after releasing the lock it took).
    """
    try:
        for _ in range(MAX_ROUNDS):
            lock = WorkLock(client, work.kind, work.subject, lock_ttl)
            task_id = str(uuid.uuid4())
            if lock.take(task_id):
                try:
                    send(work, task_id)
                except BaseException:
                    lock.release_quietly()
                    raise
                log.info(
                    "work.enqueued",
                    extra={"kind": work.kind, "subject": work.subject, "task_id": task_id},
                )
                return task_id
            holder = lock.holder()
            if holder is None:
                continue  # released between our attempt and our look
            if state(holder.owner) not in FINISHED_STATES:
                return holder.owner
            # The owner finished or died without releasing: take over at once rather
            # than wait out the TTL.
            release_value(client, holder)
            log.warning("work.took_over", extra={"key": holder.key, "owner": holder.owner})
    except RedisError as exc:
        raise UpstreamUnavailable("the work queue is unavailable right now", 30) from exc
    raise UpstreamUnavailable("could not start the work; try again", 5)

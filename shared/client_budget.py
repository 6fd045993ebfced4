"""How much new work each client may have outstanding.

Work that costs OEIS requests is the one thing a client can take from the others: it
queues behind the same global OEIS rate. So each client (an address; api/clients.py)
may have at most BACKSCOPE_CLIENT_WORK_LIMIT units of work it started still unfinished.
Joining work already in flight (80 identical requests from one page) costs nothing, and
cached reads never come here.

Per client, a sorted set in Redis holds the ids of the tasks it started, scored by when;
finished tasks (read from the result backend) and entries older than MAX_AGE are
dropped whenever the client asks for more.
"""

from __future__ import annotations

import time

from redis import Redis

from shared.lock import FINISHED_STATES
from shared.queue_admin import task_states

KEY_PREFIX = "backscope:client:"
# A task not finished after this long (a retry waiting out a long Retry-After, a lost
# task) no longer counts against its client.
MAX_AGE = 600.0
# Seconds a client over its budget is asked to wait before trying again.
RETRY_AFTER = 5


class OverBudget(Exception):
    """The client has too much work outstanding: answer 429."""

    def __init__(self, outstanding: int) -> None:
        super().__init__(
            f"you have {outstanding} downloads in progress; wait for them before asking "
            "for more uncached data"
        )
        self.retry_after = RETRY_AFTER


def _key(client: str) -> str:
    return KEY_PREFIX + client


def check(redis: Redis, client: str, limit: int) -> int:
    """How many units of work `client` has outstanding; OverBudget if `limit` or more."""
    key = _key(client)
    redis.zremrangebyscore(key, "-inf", time.time() - MAX_AGE)
    started = [member.decode() for member in redis.zrange(key, 0, -1)]
    if not started:
        return 0
    finished = [
        task for task, (state, _) in task_states(started).items() if state in FINISHED_STATES
    ]
    if finished:
        redis.zrem(key, *finished)
    outstanding = len(started) - len(finished)
    if outstanding >= limit:
        raise OverBudget(outstanding)
    return outstanding


def charge(redis: Redis, client: str, task_id: str) -> None:
    """Count the task `client` just started against its budget."""
    key = _key(client)
    pipe = redis.pipeline()
    pipe.zadd(key, {task_id: time.time()})
    pipe.expire(key, int(MAX_AGE))
    pipe.execute()

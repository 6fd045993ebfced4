"""How much new work each client may have outstanding.

Work that costs OEIS requests is the one thing a client can take from the others: it
queues behind the same global OEIS rate. So each client (an address; api/clients.py)
may have at most BACKSCOPE_CLIENT_WORK_LIMIT units of work it started still unfinished.
Joining work already in flight (80 identical requests from one page) costs nothing, and
cached reads never come here.

Per client, a sorted set in Redis holds the ids of the tasks it started, scored by when;
finished tasks (read from the result backend) and entries older than MAX_AGE are
dropped whenever the client asks for more. A request first reserves a unit (one
MULTI/EXEC adds it and counts), then starts its work and puts the task in its place:
a burst of any size starts at most the budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis

from shared.work.lock import FINISHED_STATES
from shared.work.queue import task_states

KEY_PREFIX = "backscope:client:"
# A task not finished after this long (a retry waiting out a long Retry-After, a lost
# task) no longer counts against its client.
MAX_AGE = 600.0
# Seconds a client over its budget is asked to wait before trying again.
RETRY_AFTER = 5
# What a reservation is called in the set, and how long one can be pending.
RESERVED = "reserved:"
RESERVATION_AGE = 60.0


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


@dataclass(frozen=True)
class Reservation:
    """A unit of a client's budget, held while its work is being started."""

    key: str
    token: str
    outstanding: int  # the client's other units outstanding


def _drop_finished(redis: Redis, key: str) -> None:
    """Forget the client's tasks that have finished or are older than MAX_AGE, and
    reservations older than RESERVATION_AGE (their request died between reserving and
    starting)."""
    now = time.time()
    redis.zremrangebyscore(key, "-inf", now - MAX_AGE)
    entries = redis.zrange(key, 0, -1, withscores=True)
    members = [(member.decode(), score) for member, score in entries]
    stale = [m for m, at in members if m.startswith(RESERVED) and at < now - RESERVATION_AGE]
    started = [m for m, _ in members if not m.startswith(RESERVED)]
    states = task_states(started) if started else {}
    finished = [task for task, (state, _) in states.items() if state in FINISHED_STATES]
    if stale or finished:
        redis.zrem(key, *stale, *finished)


def reserve(redis: Redis, client: str, limit: int, work: str) -> Reservation:
    """Reserve one unit of `client`'s budget for `work` (its lock key); OverBudget if
    it has `limit` outstanding.

    Adding the reservation and counting happen in one MULTI/EXEC, so however many
    requests of one client arrive at once, at most `limit` units are handed out. The
    reservation is named after the work, so identical requests arriving together
    (the ~80 of one FactorStacks page) share one unit, as joining does."""
    key = _key(client)
    _drop_finished(redis, key)
    token = f"{RESERVED}{work}"
    pipe = redis.pipeline()
    pipe.zadd(key, {token: time.time()})
    pipe.zcard(key)
    pipe.expire(key, int(MAX_AGE))
    _, count, _ = pipe.execute()
    if count > limit:
        redis.zrem(key, token)
        raise OverBudget(count - 1)
    return Reservation(key, token, count - 1)


def settle(redis: Redis, reservation: Reservation, task_id: str | None) -> None:
    """Replace the reservation with the task it started (None: nothing was started)."""
    pipe = redis.pipeline()
    pipe.zrem(reservation.key, reservation.token)
    if task_id is not None:
        pipe.zadd(reservation.key, {task_id: time.time()})
    pipe.execute()

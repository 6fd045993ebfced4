"""Who still wants a search sent to the OEIS (when there is no local index).

The front end's search bar sends one search per keystroke and shows only the answer
for the latest text typed. So each client's latest search term (and when it came) is
kept in Redis, and each search's askers; a search task about to send its OEIS request
first checks that at least one asker's latest term is still this one. If none is,
nobody would ever see the answer: the task drops it, and the request costs the OEIS
nothing. While someone is still typing (their latest search is less than QUIET
seconds old), the task waits that long first: a person typing a word at a few keys a
second then costs one OEIS search, not one per key.

Both sides use this: the API records the asking (ask) and tells a superseded request
so (is_latest); the search task checks before it sends (wanted).
"""

from __future__ import annotations

import hashlib
import json
import time

from redis import Redis

PREFIX = "backscope:search:"
# Longer than any search waits in the queue before a person gives up on it.
MEMORY_SECONDS = 120
# Seconds without a newer keystroke before a search is sent; and the longest a task
# waits for that, however fast someone types.
QUIET = 0.4
MAX_QUIET_WAIT = 3.0


def _askers_key(term: str) -> str:
    return f"{PREFIX}askers:{hashlib.sha256(term.encode()).hexdigest()[:32]}"


def _latest_key(client: str) -> str:
    return f"{PREFIX}latest:{client}"


def ask(redis: Redis, client: str, term: str) -> None:
    """`client` now searches for `term` (a search_key): its latest search."""
    latest = json.dumps({"term": term, "at": time.time()})
    pipe = redis.pipeline()
    pipe.set(_latest_key(client), latest, ex=MEMORY_SECONDS)
    pipe.sadd(_askers_key(term), client)
    pipe.expire(_askers_key(term), MEMORY_SECONDS)
    pipe.execute()


def _latest(raw: bytes | None) -> tuple[str, float] | None:
    if raw is None:
        return None
    try:
        found = json.loads(raw)
        return str(found["term"]), float(found["at"])
    except (ValueError, KeyError, TypeError):
        return None


def is_latest(redis: Redis, client: str, term: str) -> bool:
    """Whether `term` is still `client`'s latest search."""
    latest = _latest(redis.get(_latest_key(client)))
    return latest is not None and latest[0] == term


def quiet_for(redis: Redis, term: str) -> float | None:
    """How long since the last of those who still want `term` asked for it; None when
    nobody who asked for it has it as their latest search any more."""
    askers = [member.decode() for member in redis.smembers(_askers_key(term))]
    if not askers:
        return None
    latest = [_latest(raw) for raw in redis.mget([_latest_key(client) for client in askers])]
    times = [found[1] for found in latest if found is not None and found[0] == term]
    return time.time() - max(times) if times else None


def wanted(redis: Redis, term: str) -> bool:
    """Whether to send the search for `term` now: False when nobody wants it any more;
    True once no asker has typed for QUIET seconds (waiting for that, at most
    MAX_QUIET_WAIT)."""
    deadline = time.monotonic() + MAX_QUIET_WAIT
    while True:
        age = quiet_for(redis, term)
        if age is None:
            return False
        if age >= QUIET or time.monotonic() >= deadline:
            return True
        time.sleep(min(QUIET - age, max(deadline - time.monotonic(), 0)))

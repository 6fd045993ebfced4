"""Who still wants a search sent to the OEIS (when there is no local index).

The front end's search bar sends one search per keystroke and shows only the answer
for the latest text typed. So each client's latest search term is kept in Redis, and
each search's askers; a search task about to send its OEIS request first checks that
at least one asker's latest term is still this one. If none is, nobody would ever see
the answer: the task drops it, and the request costs the OEIS nothing.

Both sides use this: the API records the asking (ask) and tells a superseded request
so (is_latest); the search task checks before it sends (wanted).
"""

from __future__ import annotations

import hashlib

from redis import Redis

PREFIX = "backscope:search:"
# Longer than any search waits in the queue before a person gives up on it.
MEMORY_SECONDS = 120


def _askers_key(term: str) -> str:
    return f"{PREFIX}askers:{hashlib.sha256(term.encode()).hexdigest()[:32]}"


def _latest_key(client: str) -> str:
    return f"{PREFIX}latest:{client}"


def ask(redis: Redis, client: str, term: str) -> None:
    """`client` now searches for `term` (a search_key): its latest search."""
    pipe = redis.pipeline()
    pipe.set(_latest_key(client), term, ex=MEMORY_SECONDS)
    pipe.sadd(_askers_key(term), client)
    pipe.expire(_askers_key(term), MEMORY_SECONDS)
    pipe.execute()


def is_latest(redis: Redis, client: str, term: str) -> bool:
    """Whether `term` is still `client`'s latest search."""
    latest = redis.get(_latest_key(client))
    return latest is not None and latest.decode() == term


def wanted(redis: Redis, term: str) -> bool:
    """Whether anyone who asked for `term` still has it as their latest search."""
    askers = [member.decode() for member in redis.smembers(_askers_key(term))]
    if not askers:
        return False
    latest = redis.mget([_latest_key(client) for client in askers])
    return any(found is not None and found.decode() == term for found in latest)

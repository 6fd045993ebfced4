"""Periodic lock maintenance, run by celery beat."""

from __future__ import annotations

import logging

from redis import Redis

from shared.admin.queue import live_workers, owner_state
from shared.config import get_settings
from shared.redis_db import get_redis
from shared.work.lock import list_locks, release_value, stale_reason
from shared.work.queue import app

log = logging.getLogger(__name__)

# The workers running lock owners' tasks that did not answer the last purge's ping.
SILENT_KEY = "backscope:purge:silent"


def gone_workers(client: Redis, hosts: set[str]) -> set[str]:
    """Of `hosts`, those that answered neither this purge's ping nor the previous one's.

    One missed ping proves nothing (a busy or slow worker, a partial reply); a lock is
    only taken from a worker that stayed silent for a whole purge interval. Its TTL
    bounds recovery anyway.
    """
    if not hosts:
        client.delete(SILENT_KEY)
        return set()
    silent = hosts - live_workers()
    before = {host.decode() for host in client.smembers(SILENT_KEY)}
    pipe = client.pipeline()
    pipe.delete(SILENT_KEY)
    if silent:
        pipe.sadd(SILENT_KEY, *silent)
        pipe.expire(SILENT_KEY, 3 * get_settings().purge_interval)
    pipe.execute()
    return silent & before


@app.task(name="backscope.maintenance.purge_stale_locks", acks_late=False)
def purge_stale_locks() -> list[str]:
    """Delete locks whose owner can no longer be working; keep every other lock."""
    client = get_redis("locks")
    locks = list_locks(client)
    owners = {
        info.key: owner_state(info.owner) if info.owner != "?" else ("UNKNOWN", None)
        for info in locks
    }
    gone = gone_workers(client, {host for _, host in owners.values() if host})
    removed = []
    for info in locks:
        state, host = owners[info.key]
        reason = stale_reason(info, state, host, gone)
        if reason and release_value(client, info):
            removed.append(info.key)
            log.warning(
                "lock.purged",
                extra={
                    "key": info.key,
                    "owner": info.owner,
                    "age": round(info.age, 1),
                    "reason": reason,
                },
            )
    return removed

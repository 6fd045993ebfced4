"""Periodic lock maintenance, run by celery beat."""

from __future__ import annotations

import logging

from celery.result import AsyncResult

from shared.lock import list_locks, release_value, stale_reason
from shared.redis_db import get_redis
from worker.celery_app import app

log = logging.getLogger(__name__)

PING_TIMEOUT = 1.0


def live_workers() -> set[str]:
    replies = app.control.ping(timeout=PING_TIMEOUT) or []
    return {host for reply in replies for host in reply}


def owner_state(task_id: str) -> tuple[str, str | None]:
    """The owner task's state and, once started, the worker running it."""
    result = AsyncResult(task_id, app=app)
    info = result.info if result.state == "STARTED" else None
    host = info.get("hostname") if isinstance(info, dict) else None
    return result.state, host


@app.task(name="backscope.maintenance.purge_stale_locks", acks_late=False)
def purge_stale_locks() -> list[str]:
    """Delete locks whose owner can no longer be working; keep every other lock."""
    client = get_redis("locks")
    locks = list_locks(client)
    if not locks:
        return []
    hosts = live_workers()
    removed = []
    for info in locks:
        state, host = owner_state(info.owner) if info.owner != "?" else ("UNKNOWN", None)
        reason = stale_reason(info, state, host, hosts)
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

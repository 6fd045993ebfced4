"""The backscope.maintenance.* tasks: the operations of shared/admin/cache.py on a worker.

They run on the maintenance queue, so an operator (or beat) can run them on a
worker: `celery -A worker.app call backscope.maintenance.forget --args='[["A000045"]]'`.
In production the destructive ones need `confirm` set to the database's name.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from shared.admin import cache as cache_admin
from shared.admin.queue import drop_queued_work, enqueue
from shared.config import get_settings
from shared.redis_db import get_redis
from shared.work.lock import list_locks
from shared.work.queue import app
from shared.work.units import values_work

# acks_late=False: a destructive operation redelivered after a crash could undo work
# done since; the operator reruns it instead.


@app.task(name="backscope.maintenance.clear_db", acks_late=False)
def clear_db(confirm: str | None = None) -> dict[str, Any]:
    """Delete all cached data, keep the schema (see shared.admin.cache.clear)."""
    settings = get_settings()
    cache_admin.require_confirmation(settings, confirm)
    cleared = cache_admin.clear(settings.database_url, get_redis("locks"), drop_queued_work)
    return asdict(cleared)


@app.task(name="backscope.maintenance.reset_db", acks_late=False)
def reset_db(confirm: str | None = None) -> dict[str, Any]:
    """Drop the database and rebuild it from the committed migrations."""
    settings = get_settings()
    cache_admin.require_confirmation(settings, confirm)
    done = cache_admin.reset(settings.database_url, get_redis("locks"), drop_queued_work)
    return asdict(done)


@app.task(name="backscope.maintenance.forget", acks_late=False)
def forget(seq_ids: list[str], confirm: str | None = None) -> dict[str, Any]:
    """Delete these sequences' cached data and release their locks."""
    settings = get_settings()
    if not isinstance(seq_ids, list):  # a bare "A000045" would be read letter by letter
        raise cache_admin.MaintenanceError("seq_ids must be a list of sequence ids")
    ids = cache_admin.parse_ids(seq_ids)
    cache_admin.require_confirmation(settings, confirm)
    return asdict(cache_admin.forget(settings.database_url, get_redis("locks"), ids))


@app.task(name="backscope.maintenance.list_locks")
def locks() -> list[dict[str, Any]]:
    """The held locks: key, owner task, age and TTL left in seconds, fencing token."""
    return [
        {"key": i.key, "owner": i.owner, "age": i.age, "ttl": i.ttl, "fence": i.fence}
        for i in list_locks(get_redis("locks"))
    ]


@app.task(name="backscope.maintenance.release_lock", acks_late=False)
def release_lock(target: str) -> list[str]:
    """Release a lock by key, or all of a sequence's locks by its id; the keys released."""
    return cache_admin.release_target(get_redis("locks"), target)


@app.task(name="backscope.maintenance.prefetch", acks_late=False)
def prefetch(targets: list[str]) -> dict[str, str]:
    """Queue value downloads for ids and ranges ("A000001-A000100"); sequence id -> task id."""
    return {seq_id: enqueue(values_work(seq_id)) for seq_id in cache_admin.parse_targets(targets)}

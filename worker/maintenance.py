"""Maintenance on Celery: the backscope.maintenance.* tasks, and the queue operations
that shared/maintenance.py leaves to whoever owns the Celery app (dropping queued
work, queueing prefetches, reading their results, queue lengths).

The tasks run on the maintenance queue, so an operator (or beat) can run them on a
worker: `celery -A worker.celery_app call backscope.maintenance.forget --args='[["A000045"]]'`.
In production the destructive ones need `confirm` set to the database's name.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from shared import maintenance
from shared.config import get_settings
from shared.errors import UpstreamUnavailable
from shared.lock import list_locks
from shared.redis_db import get_redis
from shared.work import MAINTENANCE_QUEUE, Work, values_work
from worker import celery_app
from worker.celery_app import app
from worker.locks import PING_TIMEOUT, live_workers

# Result keys read per round trip when watching many tasks.
STATE_BATCH = 500


def drop_queued_work() -> int:
    """Empty every work queue (all but maintenance), and revoke work tasks a worker holds
    but has not started (prefetched, or waiting out a retry countdown). Returns how many
    tasks were dropped.

    Not `app.control.purge()`: that also empties the maintenance queue, which may hold
    the task calling this. Work queues are downloads and whatever derives from cached
    data (e.g. factoring), all of which a clear or reset makes moot.
    """
    queues = [name for name in app.amqp.queues if name != MAINTENANCE_QUEUE]
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        purged = sum(app.amqp.queues[name].bind(channel).purge() for name in queues)
    hosts = sorted(live_workers())
    if not hosts:
        return purged
    inspect = app.control.inspect(destination=hosts, timeout=PING_TIMEOUT)
    held = [request for tasks in (inspect.reserved() or {}).values() for request in tasks]
    held += [entry["request"] for tasks in (inspect.scheduled() or {}).values() for entry in tasks]
    revoked = [
        request["id"]
        for request in held
        if (request.get("delivery_info") or {}).get("routing_key") in queues
    ]
    if revoked:
        app.control.revoke(revoked)
    return purged + len(revoked)


def enqueue(work: Work) -> str:
    """The id of the task doing `work`: the one already queued or running, or a new one
    (the lock protocol of shared/enqueue.py, as the API uses it)."""
    try:
        return celery_app.start(work)
    except UpstreamUnavailable as exc:
        raise maintenance.MaintenanceError(f"could not queue {work.task}: {exc}") from exc


def task_states(task_ids: list[str]) -> dict[str, tuple[str, Any]]:
    """Each task's state and result, reading the result backend in batches.

    One MGET per batch instead of one GET per task: prefetch watches up to 10,000.
    """
    backend = app.backend
    states: dict[str, tuple[str, Any]] = {}
    for start in range(0, len(task_ids), STATE_BATCH):
        batch = task_ids[start : start + STATE_BATCH]
        raw = backend.mget([backend.get_key_for_task(task_id) for task_id in batch])
        for task_id, payload in zip(batch, raw, strict=True):
            meta = backend.decode_result(payload) if payload else None
            states[task_id] = (meta["status"], meta["result"]) if meta else ("PENDING", None)
    return states


def queue_lengths() -> dict[str, int]:
    """Messages waiting in each of the app's queues."""
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        return {
            name: queue.bind(channel).queue_declare().message_count
            for name, queue in app.amqp.queues.items()
        }


# ---------------------------------------------------------------- tasks
# acks_late=False: a destructive operation redelivered after a crash could undo work
# done since; the operator reruns it instead.


@app.task(name="backscope.maintenance.clear_db", acks_late=False)
def clear_db(confirm: str | None = None) -> dict[str, Any]:
    """Delete all cached data, keep the schema (see shared.maintenance.clear)."""
    settings = get_settings()
    maintenance.require_confirmation(settings, confirm)
    cleared = maintenance.clear(settings.database_url, get_redis("locks"), drop_queued_work)
    return asdict(cleared)


@app.task(name="backscope.maintenance.reset_db", acks_late=False)
def reset_db(confirm: str | None = None) -> dict[str, Any]:
    """Drop the database and rebuild it from the committed migrations."""
    settings = get_settings()
    maintenance.require_confirmation(settings, confirm)
    done = maintenance.reset(settings.database_url, get_redis("locks"), drop_queued_work)
    return asdict(done)


@app.task(name="backscope.maintenance.forget", acks_late=False)
def forget(seq_ids: list[str], confirm: str | None = None) -> dict[str, Any]:
    """Delete these sequences' cached data and release their locks."""
    settings = get_settings()
    if not isinstance(seq_ids, list):  # a bare "A000045" would be read letter by letter
        raise maintenance.MaintenanceError("seq_ids must be a list of sequence ids")
    ids = maintenance.parse_ids(seq_ids)
    maintenance.require_confirmation(settings, confirm)
    return asdict(maintenance.forget(settings.database_url, get_redis("locks"), ids))


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
    return maintenance.release_target(get_redis("locks"), target)


@app.task(name="backscope.maintenance.prefetch", acks_late=False)
def prefetch(targets: list[str]) -> dict[str, str]:
    """Queue value downloads for ids and ranges ("A000001-A000100"); sequence id -> task id."""
    return {seq_id: enqueue(values_work(seq_id)) for seq_id in maintenance.parse_targets(targets)}

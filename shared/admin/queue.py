"""Looking into and emptying the work queue: which workers answer, what is queued,
what prefetched tasks have become. Used by the CLI, the maintenance tasks and beat's
lock purge."""

from __future__ import annotations

from celery.result import AsyncResult

from shared.admin.cache import MaintenanceError
from shared.errors import UpstreamUnavailable
from shared.work.queue import BULK, app, start
from shared.work.units import MAINTENANCE_QUEUE, Work

PING_TIMEOUT = 1.0


def live_workers() -> set[str]:
    """The workers that answered a ping just now."""
    replies = app.control.ping(timeout=PING_TIMEOUT) or []
    return {host for reply in replies for host in reply}


def owner_state(task_id: str) -> tuple[str, str | None]:
    """A task's state and, once started, the worker running it."""
    result = AsyncResult(task_id, app=app)
    info = result.info if result.state == "STARTED" else None
    host = info.get("hostname") if isinstance(info, dict) else None
    return result.state, host


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
    """The id of the task doing `work` (shared.work.queue.start), queued as bulk work so that
    it never delays an interactive request; MaintenanceError, in one line, when it
    cannot be queued."""
    try:
        return start(work, BULK)
    except UpstreamUnavailable as exc:
        raise MaintenanceError(f"could not queue {work.task}: {exc}") from exc


def queue_lengths() -> dict[str, int]:
    """Messages waiting in each of the app's queues."""
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        return {
            name: queue.bind(channel).queue_declare().message_count
            for name, queue in app.amqp.queues.items()
        }

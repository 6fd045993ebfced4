"""The worker's entry point: `celery -A worker.app worker|beat`.

The app itself is shared/work/queue.py's; this adds the task modules and what only a worker
process needs: JSON logs with the task id, a database connection of its own per forked
pool process, and the task counts of /metrics (shared/metrics.py, imported before the
pool forks so that every pool process counts into BACKSCOPE_METRICS_DIR).
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any

from celery import Task, current_task
from celery.signals import (
    beat_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
)

from shared import metrics
from shared.config import get_settings
from shared.db import WORKER_POOL, use_pool
from shared.logs import configure_logging
from shared.work.queue import app

__all__ = ["app"]

app.conf.include = [
    "worker.tasks.download",
    "worker.tasks.factor",
    "worker.tasks.index",
    "worker.tasks.maintenance",
    "worker.tasks.purge",
    "worker.tasks.refresh",
]
# kombu's Redis transport, fixed so that a busy worker survives a Redis restart.
app.conf.broker_transport = "worker.broker:Transport"
# A task running when the broker connection is lost goes on. Cancelling it (Celery's
# future default) would waste its work: with Redis its message is not delivered again
# until the visibility timeout, and not at all if Redis restarted empty.
app.conf.worker_cancel_long_running_tasks_on_connection_loss = False


class _TaskContext(logging.Filter):
    """Put the running task's id and name, and the id of the HTTP request it works for
    (shared/work/queue.py sends it as a header), on every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = current_task
        if task and task.request.id and not hasattr(record, "task_id"):
            record.task_id = task.request.id
            record.task = task.name
            request_id = task.request.get("request_id")
            if request_id and not hasattr(record, "request_id"):
                record.request_id = request_id
        return True


# When each running task started (by task id), for backscope_task_duration_seconds. A
# pool process runs one task at a time, but a retried task keeps its id: keyed by id
# all the same, and popped when the task ends.
_started: dict[str, float] = {}


@task_prerun.connect
def _task_started(task_id: str, **_: Any) -> None:
    _started[task_id] = perf_counter()


@task_postrun.connect
def _task_finished(task_id: str, task: Task, state: str | None = None, **_: Any) -> None:
    """Count the task by name and outcome (its final Celery state: success, failure,
    retry, ...)."""
    started = _started.pop(task_id, None)
    metrics.tasks.labels(task.name, (state or "unknown").lower()).inc()
    if started is not None:
        metrics.task_duration.labels(task.name).observe(perf_counter() - started)


@setup_logging.connect
def _json_logs(loglevel: str | int | None = None, **_: Any) -> None:
    """Replace Celery's log setup: JSON lines on stderr, each with the task id."""
    configure_logging(loglevel or "INFO")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_TaskContext())


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    """A forked pool process must not share the parent's database connections, and it
    runs one task at a time: one connection is all it takes (shared/db.py)."""
    use_pool(WORKER_POOL)


@beat_init.connect
def _index_at_start(**_: Any) -> None:
    """Beat's first interval would be a day away: have the index built now if it is
    missing or out of date (the task itself decides; worker/tasks/index.py)."""
    interval = get_settings().index_interval
    if not interval:
        return
    try:
        app.send_task("backscope.maintenance.update_index", kwargs={"max_age": interval})
    except Exception as exc:  # the broker is down: the daily run will do it
        logging.getLogger(__name__).warning("index.not_scheduled", extra={"error": repr(exc)})

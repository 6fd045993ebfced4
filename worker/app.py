"""The worker's entry point: `celery -A worker.app worker|beat`.

The app itself is shared/queue.py's; this adds the task modules and what only a worker
process needs: JSON logs with the task id, and fresh database connections per forked
pool process.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_task
from celery.signals import setup_logging, worker_process_init

from shared.db import dispose_engine
from shared.logs import configure_logging
from shared.queue import app

__all__ = ["app"]

app.conf.include = [
    "worker.tasks.download",
    "worker.tasks.factor",
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
    """Put the running task's id and name on every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = current_task
        if task and task.request.id and not hasattr(record, "task_id"):
            record.task_id = task.request.id
            record.task = task.name
        return True


@setup_logging.connect
def _json_logs(loglevel: str | int | None = None, **_: Any) -> None:
    """Replace Celery's log setup: JSON lines on stderr, each with the task id."""
    configure_logging(loglevel or "INFO")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_TaskContext())


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    """A forked pool process must not share the parent's database connections."""
    dispose_engine()

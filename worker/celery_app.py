"""The Celery application: `celery -A worker.celery_app worker|beat`."""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Celery, current_task
from celery.result import AsyncResult
from celery.signals import setup_logging, worker_process_init
from kombu import Queue
from kombu.exceptions import OperationalError as BrokerError

from shared.config import ConfigError, get_settings
from shared.db import dispose_engine
from shared.enqueue import start_work
from shared.errors import UpstreamUnavailable
from shared.logs import configure_logging
from shared.redis_db import get_redis
from shared.work import DOWNLOADS_QUEUE, FACTORS_QUEUE, MAINTENANCE_QUEUE, Work

log = logging.getLogger(__name__)

try:
    settings = get_settings()
except ConfigError as exc:
    sys.exit(f"backscope: configuration error: {exc}")

# The longest a task may run; the broker's visibility timeout must exceed it plus
# the longest retry countdown, or Redis redelivers a task that is still running.
HARD_LIMIT = 900
SOFT_LIMIT = 840
MAX_RETRY_COUNTDOWN = 600

app = Celery(
    "backscope",
    broker=settings.redis_db_url("broker"),
    backend=settings.redis_db_url("results"),
    include=["worker.fetch", "worker.locks", "worker.maintenance", "worker.factor"],
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    result_expires=24 * 3600,
    result_extended=True,
    task_track_started=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_time_limit=HARD_LIMIT,
    task_soft_time_limit=SOFT_LIMIT,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": 2 * (HARD_LIMIT + MAX_RETRY_COUNTDOWN)},
    result_backend_transport_options={"visibility_timeout": 2 * (HARD_LIMIT + MAX_RETRY_COUNTDOWN)},
    task_default_queue=DOWNLOADS_QUEUE,
    # Download workers consume downloads,maintenance; factor workers only factors.
    task_queues=[Queue(DOWNLOADS_QUEUE), Queue(MAINTENANCE_QUEUE), Queue(FACTORS_QUEUE)],
    task_routes={
        "backscope.maintenance.*": {"queue": MAINTENANCE_QUEUE},
        "backscope.factor_values": {"queue": FACTORS_QUEUE},
    },
    beat_schedule={
        "purge-stale-locks": {
            "task": "backscope.maintenance.purge_stale_locks",
            "schedule": float(settings.purge_interval),
            "options": {"expires": float(settings.purge_interval)},
        },
    },
)


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


def send_work(work: Work, task_id: str) -> None:
    """Send the task that does `work`, under a task id chosen beforehand (see
    shared/enqueue.py: the id goes into the work lock before the task is sent)."""
    app.send_task(work.task, args=work.args, task_id=task_id)


def task_state(task_id: str) -> str:
    return AsyncResult(task_id, app=app).state


def start(work: Work) -> str:
    """The id of the task doing `work`: the one already in flight, or a new one (the
    lock protocol of shared/enqueue.py). UpstreamUnavailable if Redis or the broker
    does not answer."""
    try:
        return start_work(work, get_redis("locks"), get_settings().lock_ttl, send_work, task_state)
    except BrokerError as exc:
        raise UpstreamUnavailable("the work queue is unavailable right now", 30) from exc


def schedule(work: Work) -> str | None:
    """Start `work` in the background, or join the task already doing it; the task id.

    For work nobody waits on (a download's factoring, a missing name): an unreachable
    Redis or broker must not fail the caller, so it is logged and None returned; the
    API schedules the work again when it is asked for.
    """
    try:
        return start(work)
    except UpstreamUnavailable as exc:
        log.warning("work.not_scheduled", extra={**work.log_fields(), "error": str(exc)})
        return None

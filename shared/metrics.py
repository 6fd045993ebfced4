"""Prometheus metrics, counted in every process of the stack and read by GET /metrics.

prometheus-client's multiprocess mode: each process (gunicorn worker, Celery pool
process) writes its counters and histograms to memory-mapped files of its own in
BACKSCOPE_METRICS_DIR, and a scrape adds up all the files there, including those of
processes that have exited, so totals never go backwards when a process is replaced.
The directory is emptied only when the whole stack starts (`backscope reset-metrics`,
run by `make run`; at boot in production, docs/deploy.md): emptying it under running
processes would lose their counts.

The library decides between single- and multiprocess mode when it is imported, from
PROMETHEUS_MULTIPROC_DIR: this module sets that before importing it (and switches the
mode if something imported the library earlier), and every other module reaches
prometheus_client through here.

What is not a count (queue lengths, locks held, sequences cached) is read when scraped,
in the scraping process, and never stored.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Iterator

from shared.config import ConfigError, get_settings

try:
    METRICS_DIR = get_settings().metrics_dir
except ConfigError as exc:
    sys.exit(f"backscope: configuration error: {exc}")
METRICS_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)

from prometheus_client import (  # noqa: E402 (needs PROMETHEUS_MULTIPROC_DIR first)
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

if not getattr(values.ValueClass, "_multiprocess", False):
    # Something imported prometheus_client first (Flower does, before loading our app):
    # the metrics made from here on are multiprocess all the same.
    values.ValueClass = values.MultiProcessValue()

log = logging.getLogger(__name__)

# Cached reads take about a millisecond, downloads up to BACKSCOPE_SYNC_WAIT (20 s).
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30)
OEIS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)

http_requests = Counter(
    "backscope_http_requests",
    "HTTP requests answered, by route (Flask endpoint; 'unknown' for no route) and status",
    ["endpoint", "status"],
)
http_duration = Histogram(
    "backscope_http_request_duration_seconds",
    "Time to answer an HTTP request, by route",
    ["endpoint"],
    buckets=HTTP_BUCKETS,
)
cache_answers = Counter(
    "backscope_cache_answers",
    "Answers of the data routes: 'cached' (from the cache), 'work' (a worker had to run "
    "first, or still runs: 202) and 'not_modified' (304 to If-None-Match)",
    ["endpoint", "answer"],
)
documents_built = Counter(
    "backscope_documents_built",
    "Answers built from the database, by kind (values, header, chunk, factors, "
    "factors_partial: built per request); the rest are served from memory. Identical "
    "concurrent requests should build one",
    ["kind"],
)
oeis_requests = Counter(
    "backscope_oeis_requests",
    "Requests to the OEIS, by kind (values, metadata, search) and outcome "
    "(ok, not_found, throttled, error, timeout)",
    ["kind", "outcome"],
)
oeis_duration = Histogram(
    "backscope_oeis_request_duration_seconds",
    "Time an OEIS request took, by kind",
    ["kind"],
    buckets=OEIS_BUCKETS,
)
tasks = Counter(
    "backscope_tasks",
    "Celery tasks run, by task name and outcome (success, failure, retry, ...)",
    ["task", "outcome"],
)
task_duration = Histogram(
    "backscope_task_duration_seconds",
    "Time a Celery task ran, by task name",
    ["task"],
    buckets=TASK_BUCKETS,
)

# The labelled children of the request metrics, looked up once per label set: the
# request path only pays a dict lookup, an increment and an observation.
_request_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
_cache_children: dict[tuple[str, str], Counter] = {}


def count_request(endpoint: str, status: int, seconds: float) -> None:
    """Count one answered request (`endpoint` must come from a bounded set)."""
    children = _request_children.get((endpoint, status))
    if children is None:
        children = http_requests.labels(endpoint, str(status)), http_duration.labels(endpoint)
        _request_children[endpoint, status] = children
    children[0].inc()
    children[1].observe(seconds)


def count_document_built(kind: str) -> None:
    """Count one answer document built (`kind` from a bounded set)."""
    documents_built.labels(kind).inc()


def count_cache_answer(endpoint: str, answer: str) -> None:
    child = _cache_children.get((endpoint, answer))
    if child is None:
        child = _cache_children[endpoint, answer] = cache_answers.labels(endpoint, answer)
    child.inc()


class _ReadWhenScraped(Collector):
    """Gauges read from Redis and PostgreSQL at each scrape. A source that does not
    answer is left out of that scrape (and logged) rather than failing it."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for read in (_queue_lengths, _locks_held, _cached_sequences):
            try:
                yield read()
            except Exception as exc:
                fields = {"metric": read.__name__, "error": repr(exc)}
                log.warning("metrics.read_failed", extra=fields)


def _queue_lengths() -> GaugeMetricFamily:
    """One pipelined LLEN per queue and priority list on the broker database: kombu's
    queue_declare (shared/admin/queue.py) costs a new broker connection and about 100 ms
    of the scraping process's time under load, taken from the requests it serves."""
    from shared.redis_db import get_redis
    from shared.work.queue import PRIORITY_STEPS, app

    # kombu's Redis transport keeps a list per priority step: "<queue>" for 0, else
    # "<queue>\x06\x16<step>".
    queues = sorted(app.amqp.queues)
    keys = [[q if step == 0 else f"{q}\x06\x16{step}" for step in PRIORITY_STEPS] for q in queues]
    pipe = get_redis("broker").pipeline(transaction=False)
    for key in (key for per_queue in keys for key in per_queue):
        pipe.llen(key)
    lengths = iter(pipe.execute())
    family = GaugeMetricFamily(
        "backscope_queue_length", "Tasks waiting in each Celery queue", labels=["queue"]
    )
    for queue, per_queue in zip(queues, keys, strict=True):
        family.add_metric([queue], sum(next(lengths) for _ in per_queue))
    return family


def _locks_held() -> GaugeMetricFamily:
    from shared.redis_db import get_redis
    from shared.work.lock import LOCK_PREFIX

    held = sum(1 for _ in get_redis("locks").scan_iter(f"{LOCK_PREFIX}*", count=1000))
    return GaugeMetricFamily("backscope_locks_held", "Work locks held now", value=held)


def _cached_sequences() -> GaugeMetricFamily:
    from sqlalchemy import func, select

    from shared.db import session_scope
    from shared.models import SequenceValues

    with session_scope() as session:
        count = session.scalar(select(func.count()).select_from(SequenceValues)) or 0
    return GaugeMetricFamily(
        "backscope_cached_sequences", "Sequences whose values are cached", value=count
    )


def render() -> tuple[bytes, str]:
    """The whole stack's metrics in the Prometheus text format, and its content type."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, str(METRICS_DIR))
    registry.register(_ReadWhenScraped())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def process_exited(pid: int) -> None:
    """Forget a process's live gauges (gunicorn's child_exit); its counts are kept."""
    multiprocess.mark_process_dead(pid, str(METRICS_DIR))


def reset_directory() -> None:
    """Empty the metrics directory: only while no process of the stack runs."""
    shutil.rmtree(METRICS_DIR, ignore_errors=True)
    METRICS_DIR.mkdir(parents=True, exist_ok=True)

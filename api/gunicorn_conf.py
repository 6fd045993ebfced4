"""Gunicorn settings for `make run` and the container (see docs/performance.md for the
measurements behind them). Threads let a worker keep serving cached reads while some
requests wait for a download; one process per core keeps the GIL out of the way.
Override with BACKSCOPE_BIND, BACKSCOPE_API_WORKERS, BACKSCOPE_API_THREADS and
BACKSCOPE_ACCESS_LOG=1; they are read and checked with every other setting
(shared/config.py)."""

import sys

from shared.config import ConfigError, get_settings

try:
    settings = get_settings()
except ConfigError as exc:
    sys.exit(f"backscope: configuration error: {exc}")

bind = settings.bind
# One process per core: a cached read is all CPU (no query), and more processes than
# cores only added scheduling delay to the p99. 32 threads each: up to
# BACKSCOPE_WAIT_SLOTS of them may wait for a download (up to BACKSCOPE_SYNC_WAIT
# seconds, sleeping), the other 8 always serve cached reads (docs/performance.md).
workers = settings.api_workers
threads = settings.api_threads
worker_class = "gthread"
# A request may wait BACKSCOPE_SYNC_WAIT seconds for a download before answering 202.
timeout = int(settings.sync_wait) + 30
# An access log line per request costs about 15% of throughput; errors and all work are
# logged anyway (structured, by the app).
accesslog = "-" if settings.access_log else None
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'


def child_exit(server, worker):  # gunicorn calls it in the master
    # A worker that exited keeps its counts in BACKSCOPE_METRICS_DIR (shared/metrics.py);
    # only its live gauges are forgotten.
    from shared.metrics import process_exited

    process_exited(worker.pid)


def post_fork(server, worker):  # gunicorn calls it with these two
    import gc

    # Objects loaded before the fork (the app, its modules) never become garbage: keep
    # them out of the collector's way, so collections stay short.
    gc.freeze()
    # Hand the GIL between request threads more often than every 5 ms, so one thread's
    # work does not add milliseconds to the others' latency.
    sys.setswitchinterval(0.0005)

"""Gunicorn settings for `make run` and the container (see docs/performance.md for the
measurements behind them). Threads let a worker keep serving cached reads while some
requests wait for a download; one process per core keeps the GIL out of the way.
Override with BACKSCOPE_API_WORKERS / BACKSCOPE_API_THREADS / BACKSCOPE_ACCESS_LOG=1."""

import os

bind = os.environ.get("BACKSCOPE_BIND", f"127.0.0.1:{os.environ.get('BACKSCOPE_PORT', '5000')}")
# One process per core: a cached read is all CPU (no query), and more processes than
# cores only added scheduling delay to the p99. Eight threads each, so requests waiting
# for a download (up to BACKSCOPE_SYNC_WAIT seconds) do not hold up cached reads.
workers = int(os.environ.get("BACKSCOPE_API_WORKERS", str(os.cpu_count() or 1)))
threads = int(os.environ.get("BACKSCOPE_API_THREADS", "8"))
worker_class = "gthread"
# A request may wait BACKSCOPE_SYNC_WAIT seconds for a download before answering 202.
timeout = int(float(os.environ.get("BACKSCOPE_SYNC_WAIT", "20"))) + 30
# An access log line per request costs about 15% of throughput; errors and all work are
# logged anyway (structured, by the app).
accesslog = "-" if os.environ.get("BACKSCOPE_ACCESS_LOG") == "1" else None
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'


def post_fork(server, worker):  # gunicorn calls it with these two
    import gc
    import sys

    # Objects loaded before the fork (the app, its modules) never become garbage: keep
    # them out of the collector's way, so collections stay short.
    gc.freeze()
    # Hand the GIL between request threads more often than every 5 ms, so one thread's
    # work does not add milliseconds to the others' latency.
    sys.setswitchinterval(0.0005)

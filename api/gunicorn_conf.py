"""Gunicorn settings for `make run` and the container: threads suit an API that mostly
waits on PostgreSQL and Redis. Override with BACKSCOPE_API_WORKERS / BACKSCOPE_API_THREADS."""

import os

bind = os.environ.get("BACKSCOPE_BIND", f"127.0.0.1:{os.environ.get('BACKSCOPE_PORT', '5000')}")
workers = int(os.environ.get("BACKSCOPE_API_WORKERS", "2"))
threads = int(os.environ.get("BACKSCOPE_API_THREADS", "8"))
worker_class = "gthread"
# A request may wait BACKSCOPE_SYNC_WAIT seconds for a download before answering 202.
timeout = int(float(os.environ.get("BACKSCOPE_SYNC_WAIT", "20"))) + 30
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'

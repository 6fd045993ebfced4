"""Celery workers: the tasks that download from the OEIS and maintain the cache."""

"""Celery tasks: small functions that lock their work and call shared/."""

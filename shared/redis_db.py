"""Redis clients, one per use (see shared/config.py for the database numbering)."""

from __future__ import annotations

from functools import cache

from redis import Redis

from shared.config import get_settings


@cache
def get_redis(use: str) -> Redis:
    """A client for one use: "locks" or "ratelimit". Short timeouts: Redis is local."""
    return Redis.from_url(
        get_settings().redis_db_url(use),
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
    )

"""One request rate for every worker on every machine, kept in Redis.

Each caller reserves the next free slot on a shared timeline (slots 1/rate seconds
apart) and sleeps until it. A caller that would have to wait longer than `max_wait`
reserves nothing and is told how long to come back after, so a Celery task can
retry later instead of holding a worker slot while it waits. Waits come from other
workers' requests queued ahead, so they stay short unless many more download slots
run than the rate can feed.
"""

from __future__ import annotations

import time

from redis import Redis

RATE_KEY = "backscope:ratelimit:oeis"

# KEYS[1] timeline key; ARGV[1] interval ms, ARGV[2] max wait ms.
# Returns ms to wait before sending (>= 0), or -(ms until a slot frees) when too long.
_RESERVE = """
local now = redis.call('time')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local interval = tonumber(ARGV[1])
local next_free = tonumber(redis.call('get', KEYS[1]) or '0')
local slot = math.max(now_ms, next_free)
local wait = slot - now_ms
if wait > tonumber(ARGV[2]) then return -wait end
redis.call('set', KEYS[1], string.format('%d', slot + interval), 'PX', wait + interval + 1000)
return wait
"""


class RateLimited(Exception):
    def __init__(self, retry_in: float) -> None:
        super().__init__(f"rate limit: next slot in {retry_in:.1f} s")
        self.retry_in = retry_in


class RateLimiter:
    def __init__(self, client: Redis, rate: float, max_wait: float = 30.0) -> None:
        self.script = client.register_script(_RESERVE)
        # 10% slower than the rate, so that jitter between reserving a slot and the
        # request reaching the OEIS never puts more than `rate` requests in one second.
        self.interval_ms = max(1, round(1100 / rate))
        self.max_wait_ms = round(max_wait * 1000)

    def wait(self) -> None:
        """Block until this process may send one request; raise RateLimited if that is far."""
        wait_ms = int(self.script(keys=[RATE_KEY], args=[self.interval_ms, self.max_wait_ms]))
        if wait_ms < 0:
            raise RateLimited(-wait_ms / 1000)
        if wait_ms:
            time.sleep(wait_ms / 1000)

"""Work locks in Redis: one per unit of work, always with a TTL, owned by a task id.

Built on redis-py's `Lock` (compare-and-delete release, `reacquire` to renew, and
`LockNotOwnedError` when the token no longer matches). Taking a lock also draws a
fencing token from one counter that only grows; the data a task stores carries the
token, and PostgreSQL refuses a write whose token is older than what is stored
(shared/store/writes.py). The counter is global rather than per key so that clearing the
cache can set one floor for every key; it is strictly growing for each key all the
same. Each new token is at least the Redis clock in microseconds, so the counter keeps
growing even if Redis restarts empty (it would have to hand out over a million tokens a
second to get ahead of the clock).

The value stored under a lock key is JSON: {"fence": int, "owner": task id, "taken": unix time}.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import LockError, LockNotOwnedError, RedisError
from redis.lock import Lock

log = logging.getLogger(__name__)

LOCK_PREFIX = "backscope:lock:"
FENCE_KEY = "backscope:fence"
_OWNER = re.compile(r"[A-Za-z0-9_.:-]{1,100}")

# KEYS[1] lock key, KEYS[2] fence counter; ARGV[1] owner, ARGV[2] TTL in ms.
# Returns the stored value, or false when the lock is held.
_ACQUIRE = """
if redis.call('exists', KEYS[1]) == 1 then return false end
local now = redis.call('time')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local fence = math.max((tonumber(redis.call('get', KEYS[2])) or 0) + 1, now_us)
redis.call('set', KEYS[2], string.format('%d', fence))
local value = string.format('{"fence":%d,"owner":"%s","taken":%d.%06d}',
    fence, ARGV[1], tonumber(now[1]), tonumber(now[2]))
redis.call('set', KEYS[1], value, 'PX', ARGV[2])
return value
"""


# KEYS[1] lock key; ARGV[1] owner, ARGV[2] TTL in ms, ARGV[3] the longest wait in the
# queue in ms. Lengthens the TTL to at least ARGV[2] if the lock is still ARGV[1]'s and
# was taken less than ARGV[3] ago; 1 if it was.
_EXTEND_QUEUED = """
local raw = redis.call('get', KEYS[1])
if not raw then return 0 end
local value = cjson.decode(raw)
local now = redis.call('time')
local age_ms = (tonumber(now[1]) - value['taken']) * 1000
if value['owner'] ~= ARGV[1] or age_ms > tonumber(ARGV[3]) then return 0 end
if redis.call('pttl', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('pexpire', KEYS[1], ARGV[2])
end
return 1
"""

# KEYS[1] lock key; ARGV[1] owner now, ARGV[2] new owner. Hands the lock (same fence,
# same TTL) to ARGV[2] if it is still ARGV[1]'s; the new value, or false.
_HAND_OVER = """
local raw = redis.call('get', KEYS[1])
if not raw then return false end
local value = cjson.decode(raw)
if value['owner'] ~= ARGV[1] then return false end
local new = string.format('{"fence":%d,"owner":"%s","taken":%.6f}',
    value['fence'], ARGV[2], value['taken'])
redis.call('set', KEYS[1], new, 'KEEPTTL')
return new
"""


def lock_key(kind: str, subject: str) -> str:
    return f"{LOCK_PREFIX}{kind}:{subject}"


@dataclass(frozen=True)
class LockInfo:
    key: str
    owner: str
    fence: int
    taken: float
    ttl: float | None  # seconds left; None when the key has no TTL (never created by us)
    raw: bytes

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.taken)


def parse_lock(key: str, raw: bytes, ttl_ms: int) -> LockInfo:
    """Read a lock value; a value that is not ours reads as owner "?" so it can be purged."""
    try:
        data = json.loads(raw)
        owner, fence, taken = str(data["owner"]), int(data["fence"]), float(data["taken"])
    except (ValueError, KeyError, TypeError):
        owner, fence, taken = "?", 0, time.time()
    return LockInfo(key, owner, fence, taken, ttl_ms / 1000 if ttl_ms >= 0 else None, raw)


def read_lock(client: Redis, key: str) -> LockInfo | None:
    pipe = client.pipeline()
    pipe.get(key)
    pipe.pttl(key)
    raw, ttl_ms = pipe.execute()
    if raw is None:
        return None
    return parse_lock(key, raw, ttl_ms)


def list_locks(client: Redis) -> list[LockInfo]:
    found = (read_lock(client, key.decode()) for key in client.scan_iter(f"{LOCK_PREFIX}*"))
    return sorted((info for info in found if info), key=lambda info: info.key)


def current_fence(client: Redis) -> int:
    """The newest fencing token handed out so far (0 if none)."""
    return int(client.get(FENCE_KEY) or 0)


def release_value(client: Redis, info: LockInfo) -> bool:
    """Delete a lock only if it still holds the value that was read (compare-and-delete)."""
    lock = Lock(client, info.key)
    lock.local.token = info.raw
    try:
        lock.release()
    except LockNotOwnedError:
        return False
    return True


# A task not started this many lock TTLs after it was queued is taken to be lost (its
# message purged, say): its lock is lengthened no more, and expires.
MAX_QUEUED_TTLS = 10


def extend_queued(client: Redis, key: str, owner: str, ttl: float) -> bool:
    """Keep the lock of work still waiting in the queue from expiring before its task
    starts (the task renews it itself once it runs), up to MAX_QUEUED_TTLS; False if it
    is not `owner`'s, or was taken longer ago than that."""
    args = [owner, int(ttl * 1000), int(ttl * MAX_QUEUED_TTLS * 1000)]
    return bool(client.register_script(_EXTEND_QUEUED)(keys=[key], args=args))


def hand_over(client: Redis, key: str, owner: str, new_owner: str) -> bool:
    """Make the task `new_owner` the holder of `owner`'s lock, with the same fencing
    token: the work is re-queued under a new task id, and the old one, when it comes
    up, finds the lock another's and steps aside."""
    if not _OWNER.fullmatch(new_owner):
        raise ValueError(f"bad lock owner {new_owner!r}")
    return bool(client.register_script(_HAND_OVER)(keys=[key], args=[owner, new_owner]))


class WorkLock(Lock):
    """A redis-py Lock that records its owner task and a fencing token when taken."""

    def __init__(self, client: Redis, kind: str, subject: str, ttl: float) -> None:
        super().__init__(client, lock_key(kind, subject), timeout=ttl, thread_local=False)
        self.fence: int | None = None
        self.owner: str | None = None

    def take(self, owner: str) -> bool:
        """Take the lock for task `owner` if nobody holds it. Never blocks."""
        if not _OWNER.fullmatch(owner):
            raise ValueError(f"bad lock owner {owner!r}")
        value = self.redis.register_script(_ACQUIRE)(
            keys=[self.name, FENCE_KEY], args=[owner, int(self.timeout * 1000)]
        )
        if not value:
            return False
        self._hold(parse_lock(self.name, value, int(self.timeout * 1000)))
        return True

    def adopt(self, owner: str) -> bool:
        """Become the holder of a lock taken on `owner`'s behalf (by the API, at enqueue time)."""
        info = read_lock(self.redis, self.name)
        if info is None or info.owner != owner:
            return False
        self._hold(info)
        return True

    def holder(self) -> LockInfo | None:
        return read_lock(self.redis, self.name)

    def _hold(self, info: LockInfo) -> None:
        self.local.token = info.raw
        self.fence, self.owner = info.fence, info.owner

    def release_quietly(self) -> bool:
        """Release if still ours; say so (and return False) if it was not."""
        try:
            self.release()
        except LockNotOwnedError:
            log.warning("lock.release_not_owned", extra={"key": self.name, "owner": self.owner})
            return False
        except LockError:
            return False
        except RedisError as exc:
            log.warning("lock.release_failed", extra={"key": self.name, "error": str(exc)})
            return False
        return True

    @contextmanager
    def renewing(self) -> Iterator[threading.Event]:
        """Renew the TTL every third of it while the block runs.

        Yields an Event that is set if the lock was lost (expired and taken by someone
        else). Work need not watch it: fencing makes any write after that harmless.
        """
        lost = threading.Event()
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.timeout / 3):
                try:
                    self.reacquire()
                except LockNotOwnedError:
                    log.warning("lock.lost", extra={"key": self.name, "owner": self.owner})
                    lost.set()
                    return
                except RedisError as exc:
                    log.warning("lock.renew_failed", extra={"key": self.name, "error": str(exc)})

        thread = threading.Thread(target=renew, name=f"renew {self.name}", daemon=True)
        thread.start()
        try:
            yield lost
        finally:
            stop.set()
            thread.join()


FINISHED_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


def stale_reason(
    info: LockInfo, task_state: str, task_host: str | None, gone_hosts: set[str]
) -> str | None:
    """Why a lock is stale and may be deleted, or None if its owner may still be working.

    `task_state` is the owner task's Celery state and `task_host` the worker that started
    it (if known); `gone_hosts` are the workers judged gone (worker/tasks/purge.py).
    """
    if info.ttl is None:
        return "no TTL"
    if info.owner == "?":
        return "unreadable value"
    if task_state in FINISHED_STATES:
        return f"owner task {task_state.lower()}"
    if task_state == "STARTED" and task_host in gone_hosts:
        return f"owner worker {task_host} is gone"
    return None

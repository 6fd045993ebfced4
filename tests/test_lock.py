"""The work lock on a real Redis: TTL always, owner-only release and renewal, fencing."""

from __future__ import annotations

import json
import logging
import time

import pytest
from redis.exceptions import LockNotOwnedError

from shared.redis_db import get_redis
from shared.work.lock import (
    FENCE_KEY,
    WorkLock,
    current_fence,
    list_locks,
    lock_key,
    read_lock,
    stale_reason,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def redis():
    return get_redis("locks")


def test_take_records_owner_fence_and_ttl(redis) -> None:
    lock = WorkLock(redis, "values", "A000045", ttl=30)
    before = time.time()
    assert lock.take("task-1")
    info = read_lock(redis, lock_key("values", "A000045"))
    elapsed = time.time() - before
    assert info is not None
    assert (info.owner, info.fence) == ("task-1", lock.fence)
    # The full TTL, less only the time that has passed since it was set (both clocks are
    # this machine's; 0.01 s covers their rounding).
    assert 30 - elapsed - 0.01 <= info.ttl <= 30
    assert before - 0.01 <= info.taken <= before + elapsed + 0.01
    assert json.loads(redis.get(info.key))["owner"] == "task-1"


def test_second_taker_is_refused_and_sees_the_owner(redis) -> None:
    assert WorkLock(redis, "values", "A000045", ttl=30).take("task-1")
    other = WorkLock(redis, "values", "A000045", ttl=30)
    assert not other.take("task-2")
    assert other.holder().owner == "task-1"


def test_fence_only_grows_even_if_redis_forgets_the_counter(redis) -> None:
    fences = []
    for n in range(3):
        lock = WorkLock(redis, "values", f"A00000{n}", ttl=30)
        assert lock.take(f"task-{n}")
        fences.append(lock.fence)
        lock.release()
    redis.delete(FENCE_KEY)  # as after a Redis restart without persistence
    lock = WorkLock(redis, "values", "A000009", ttl=30)
    assert lock.take("task-9")
    fences.append(lock.fence)
    assert fences == sorted(set(fences))
    assert current_fence(redis) == fences[-1]


def test_adopt_only_by_the_named_owner(redis) -> None:
    assert WorkLock(redis, "values", "A000045", ttl=30).take("task-1")
    stranger = WorkLock(redis, "values", "A000045", ttl=30)
    assert not stranger.adopt("task-2")
    owner = WorkLock(redis, "values", "A000045", ttl=30)
    assert owner.adopt("task-1")
    owner.release()
    assert read_lock(redis, owner.name) is None


def test_release_and_renewal_by_a_non_owner_do_nothing_and_say_so(redis, caplog) -> None:
    first = WorkLock(redis, "values", "A000045", ttl=3)  # a renewal would set a TTL <= 3
    assert first.take("task-1")
    redis.delete(first.name)  # first's lock expires ...
    second = WorkLock(redis, "values", "A000045", ttl=30)
    assert second.take("task-2")  # ... and task-2 takes it
    with pytest.raises(LockNotOwnedError):
        first.reacquire()
    with caplog.at_level(logging.WARNING):
        assert not first.release_quietly()
    assert "lock.release_not_owned" in caplog.messages
    info = read_lock(redis, second.name)
    assert info.owner == "task-2" and info.ttl > 3  # still second's TTL (30 s)


def test_renewal_keeps_a_long_job_locked_and_notices_loss(redis) -> None:
    ttl = 3
    lock = WorkLock(redis, "values", "A000045", ttl=ttl)
    assert lock.take("task-1")
    taken = time.monotonic()

    def ttl_left() -> float:
        info = read_lock(redis, lock.name)
        assert info is not None, "the lock expired"
        return info.ttl

    with lock.renewing() as lost:
        # Renewed every third of its TTL: the TTL left runs down and is set back up, again
        # and again, for longer than the TTL itself.
        renewals = 0
        while time.monotonic() - taken < 1.5 * ttl:
            wait_until(lambda: ttl_left() < ttl - 0.5, 30, "the TTL to run down")
            wait_until(lambda: ttl_left() > ttl - 0.4, 30, "a renewal")
            renewals += 1
        assert renewals >= 2
        assert lock.owned()
        assert not lost.is_set()
        redis.delete(lock.name)
        WorkLock(redis, "values", "A000045", ttl=30).take("task-2")
        assert lost.wait(30)
    assert read_lock(redis, lock.name).owner == "task-2"


def test_list_locks(redis) -> None:
    WorkLock(redis, "values", "A000045", ttl=30).take("task-1")
    WorkLock(redis, "metadata", "A000045", ttl=30).take("task-2")
    assert [info.key for info in list_locks(redis)] == [
        "backscope:lock:metadata:A000045",
        "backscope:lock:values:A000045",
    ]


def test_owner_must_be_a_task_id(redis) -> None:
    with pytest.raises(ValueError):
        WorkLock(redis, "values", "A000045", ttl=30).take('x", "fence": 1')


@pytest.mark.parametrize(
    "ttl, owner, state, host, reason",
    [
        (None, "t", "STARTED", "w1", "no TTL"),
        (10.0, "?", "PENDING", None, "unreadable value"),
        (10.0, "t", "SUCCESS", None, "owner task success"),
        (10.0, "t", "FAILURE", None, "owner task failure"),
        (10.0, "t", "STARTED", "gone@host", "owner worker gone@host is gone"),
        (10.0, "t", "STARTED", "w1", None),
        (10.0, "t", "PENDING", None, None),
        (10.0, "t", "RETRY", None, None),
    ],
)
def test_stale_reason(ttl, owner, state, host, reason) -> None:
    from shared.work.lock import LockInfo

    info = LockInfo("k", owner, 1, time.time(), ttl, b"")
    assert stale_reason(info, state, host, {"gone@host"}) == reason

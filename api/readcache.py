"""The API's hot-path lookups, kept in memory until PostgreSQL says the data changed.

Looking up what is cached for a sequence (shared/store/reads.py: read_cached) is one small
query, yet it was half the cost of serving a cached sequence. Each API process keeps
the answers in memory instead and drops one as soon as its sequence's rows change:
every change sends NOTIFY backscope_changes with the sequence id (alembic migration
0004; '*' when tables are truncated), and a thread in each process LISTENs for them on
a connection of its own, one for all the process's caches (Listener). Each cache is
bounded in bytes, the least recently used entries going first.

The cache is trusted only while that connection is listening and the triggers that
send the notifications exist (a database not yet migrated to 0004 has none). When the
connection is lost, changes may go unheard, so every lookup goes to the database
again; what is held is kept but serves only when the database cannot be reached at
all (nothing can change there then, so it is still exact), and a lookup that the
database answers replaces nothing and drops what was held for its key. Nothing new is
kept. When a new connection listens again, everything held is dropped before the cache
is trusted again: a change made between losing and regaining the connection was never
heard. After a change commits, a process may serve the old answer until the
notification arrives: well under a millisecond on one machine.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from shared.db import CHANGES_CHANNEL, EVERYTHING

# The triggers that send the notifications (alembic migration 0004).
TRIGGERS = ("sequences_changed", "sequence_values_changed", "factorizations_changed")
# Idle this long, the listening connection is checked with a query (a dead one raises).
HEARTBEAT_SECONDS = 5.0
# First and largest wait before connecting again: the cache is not trusted meanwhile,
# so the wait stays short.
RETRY_SECONDS = (0.5, 5.0)

log = logging.getLogger(__name__)

T = TypeVar("T")


class NotNotified(Exception):
    """The database does not send change notifications (its triggers are missing)."""


def _check_triggers(connection: Any) -> None:
    """Raise NotNotified unless every trigger sending the notifications exists."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgname = ANY(%s) AND tgenabled <> 'D'",
            (list(TRIGGERS),),
        )
        (found,) = cursor.fetchone()
    if found != len(TRIGGERS):
        raise NotNotified(f"{found} of the {len(TRIGGERS)} change triggers are enabled")


class Listener:
    """A connection that LISTENs for the change notifications, and a thread that relays
    them to every ReadCache using it: the caches of a process share one connection."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._caches: list[ReadCache] = []
        # Held while relaying, so that a cache added meanwhile misses nothing.
        self._lock = threading.Lock()
        self._live = False
        self._thread: threading.Thread | None = None
        _listeners.add(self)

    def add(self, cache: ReadCache) -> None:
        """Relay to `cache` from now on (it holds nothing yet: if the connection listens
        already, it is live at once)."""
        with self._lock:
            self._caches.append(cache)
            if self._live:
                cache._set_live(True)

    def start(self) -> None:
        """Start the listening thread, unless it runs."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._listen_forever, name="backscope-readcache", daemon=True
                )
                thread.start()
                self._thread = thread

    def _set_live(self, live: bool) -> None:
        with self._lock:
            self._live = live
            for cache in self._caches:
                cache._set_live(live)

    def _changed(self, key: str) -> None:
        with self._lock:
            for cache in self._caches:
                cache.changed(key)

    def _forget_after_fork(self) -> None:
        # The listening thread does not exist in a forked child.
        self._lock = threading.Lock()
        self._thread = None
        self._live = False

    def _listen_forever(self) -> None:
        wait = RETRY_SECONDS[0]
        while True:
            try:
                connection = self._connect()
            except Exception as exc:
                log.warning("readcache.connect_failed", extra={"error": repr(exc)[:200]})
            else:
                try:
                    with connection.cursor() as cursor:
                        cursor.execute(f"LISTEN {CHANGES_CHANNEL}")
                    _check_triggers(connection)
                    self._set_live(True)
                    log.info("readcache.listening")
                    wait = RETRY_SECONDS[0]
                    self._relay(connection)
                except Exception as exc:
                    log.warning("readcache.not_listening", extra={"error": repr(exc)[:200]})
                finally:
                    self._set_live(False)
                    try:
                        connection.close()
                    except Exception:  # closing a broken connection may fail too
                        log.debug("readcache.close_failed", exc_info=True)
            time.sleep(wait)
            wait = min(2 * wait, RETRY_SECONDS[1])

    def _relay(self, connection: Any) -> None:
        """Pass notifications on until the connection fails."""
        while True:
            readable, _, _ = select.select([connection], [], [], HEARTBEAT_SECONDS)
            if readable:
                connection.poll()
            else:  # quiet: check the connection, and that the triggers are still there
                _check_triggers(connection)
            while connection.notifies:
                self._changed(connection.notifies.pop(0).payload)


class ReadCache(Generic[T]):
    """`load(key)` results kept per key until a change notification names the key.

    Nothing is kept for a key whose `load` returned None. What is kept is bounded in
    bytes: `size(value)` estimates an entry's, and once they add up to more than
    `max_bytes` the least recently used entries go first; a value larger than an eighth
    of the budget is not kept at all (one huge entry must not push out all the others).
    `unreachable` are the errors with which `load` says that the database cannot be
    reached: then what is held for the key is served, if anything.
    """

    # At most this fraction of the budget for one entry.
    LARGEST_SHARE = 8

    def __init__(
        self,
        load: Callable[[str], T | None],
        listener: Listener,
        unreachable: tuple[type[Exception], ...] = (),
        *,
        max_bytes: int,
        size: Callable[[T], int],
    ) -> None:
        self._load = load
        self._listener = listener
        self._unreachable = unreachable
        self._max_bytes = max_bytes
        self._size = size
        # key -> (value, its size), the least recently used first.
        self._entries: OrderedDict[str, tuple[T, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        # Bumped by every notification and every change of `_live`: a load that saw
        # another generation start may have read data that a notification already
        # superseded, so it is not kept.
        self._generation = 0
        self._live = False
        _instances.add(self)
        listener.add(self)

    @property
    def live(self) -> bool:
        """Whether the listening connection is up (and so the cache trusted)."""
        return self._live

    def get(self, key: str) -> T | None:
        with self._lock:
            if self._live and (held := self._entries.get(key)) is not None:
                self._entries.move_to_end(key)
                return held[0]
        self._listener.start()
        with self._lock:
            generation, live = self._generation, self._live
        try:
            found = self._load(key)
        except self._unreachable:
            with self._lock:
                held = self._entries.get(key)
            if held is None:
                raise
            try:
                # The first try may have used a connection that died with the old server
                # while a new one answers (and changes may have been made there): only
                # a fresh connection failing shows that the database is out of reach.
                found = self._load(key)
            except self._unreachable:
                return held[0]
        with self._lock:
            if not self._live:
                # What is held may be older than what was just read: serve it no more.
                self._drop(key)
            elif found is not None and live and self._generation == generation:
                self._keep(key, found)
        return found

    def changed(self, key: str) -> None:
        """Drop what is kept for `key` (for EVERYTHING: all of it)."""
        with self._lock:
            self._generation += 1
            if key == EVERYTHING:
                self._clear()
            else:
                self._drop(key)

    def _keep(self, key: str, value: T) -> None:
        """Keep `value` as the most recently used entry, within the budget (lock held)."""
        self._drop(key)
        size = self._size(value)
        if size > self._max_bytes // self.LARGEST_SHARE:
            return
        self._entries[key] = (value, size)
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= dropped

    def _drop(self, key: str) -> None:
        held = self._entries.pop(key, None)
        if held is not None:
            self._bytes -= held[1]

    def _clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _set_live(self, live: bool) -> None:
        """Going live, drop everything: what changed while nobody listened went unheard.
        Losing the connection, keep it for when the database cannot be reached."""
        with self._lock:
            self._generation += 1
            self._live = live
            if live:
                self._clear()

    def _forget_after_fork(self) -> None:
        # The listener's thread does not exist in a forked child.
        self._lock = threading.Lock()
        self._live = False
        self._entries = OrderedDict()
        self._bytes = 0


# Every cache and listener, so that a forked child can reset them all (the listening
# thread does not exist in a forked child); weak, so that one nobody uses any more can go.
_instances: weakref.WeakSet[ReadCache] = weakref.WeakSet()
_listeners: weakref.WeakSet[Listener] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for instance in [*_listeners, *_instances]:
        instance._forget_after_fork()


os.register_at_fork(after_in_child=_forget_after_fork)

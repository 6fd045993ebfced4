"""The answers the API keeps in memory: ready-made JSON documents by ETag, each built
once per version of its data however many requests ask for it at once, and the
values answers cut out of the whole sequence's document.

A document's ETag is the md5 of its bytes (or derived from one), so a cache keyed by
ETag can never serve a stale document: when the data changes, so does the key.
"""

from __future__ import annotations

import gzip
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import TypeVar

from shared.config import RESERVED_THREADS
from shared.errors import UpstreamUnavailable

GZIP_LEVEL = 6
# A document and, once made, its gzipped bytes.
Entry = tuple[bytes, bytes | None]
T = TypeVar("T")


class _Lru:
    """Entries bounded in bytes; the least recently used go first. Not thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.entries: OrderedDict[str, Entry] = OrderedDict()

    def get(self, key: str) -> Entry | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def pop(self, key: str) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= _size(old)

    def put(self, key: str, entry: Entry) -> None:
        self.entries[key] = entry
        self.size += _size(entry)
        while self.size > self.max_bytes:
            _, dropped = self.entries.popitem(last=False)
            self.size -= _size(dropped)


def _size(entry: Entry) -> int:
    return len(entry[0]) + len(entry[1] or b"")


class DocumentCache:
    """Documents by key, bounded in bytes, and built once for all concurrent askers.

    Documents up to 1/LARGEST_SHARE of `max_bytes` share that budget. Larger ones (a
    sequence of several megabytes) are kept apart, within `large_bytes`, so that one
    huge sequence neither pushes everything else out nor is read, encoded and
    compressed again for every request. A document larger than `large_bytes` is not
    kept: it is built for the requests asking for it at that moment, and again later.
    """

    LARGEST_SHARE = 8

    def __init__(self, max_bytes: int, large_bytes: int) -> None:
        self.max_entry = max_bytes // self.LARGEST_SHARE
        self._small = _Lru(max_bytes)
        self._large = _Lru(large_bytes)
        self._lock = threading.Lock()
        # What is being made (documents, gzipped bodies), for those asking meanwhile.
        self._running: dict[str, Future] = {}

    @property
    def size(self) -> int:
        return self._small.size + self._large.size

    def get(self, key: str) -> Entry | None:
        with self._lock:
            return self._small.get(key) or self._large.get(key)

    def put(self, key: str, body: bytes, gzipped: bytes | None = None) -> None:
        entry = (body, gzipped)
        with self._lock:
            self._small.pop(key)
            self._large.pop(key)
            if _size(entry) <= self.max_entry:
                self._small.put(key, entry)
            elif _size(entry) <= self._large.max_bytes:
                self._large.put(key, entry)

    def build(
        self, key: str, make: Callable[[], bytes | None], compress: bool = False
    ) -> Entry | None:
        """The document `key`: held, or made by `make()` (None: the data changed
        meanwhile) and kept; gzipped too if `compress`. Requests asking while it is
        made wait for that one build and share its result, kept or not."""

        def made() -> Entry | None:
            if (held := self.get(key)) is not None:  # made while we looked
                return held
            body = make()
            if body is None:
                return None
            entry = (body, gzip.compress(body, GZIP_LEVEL) if compress else None)
            self.put(key, *entry)
            return entry

        held = self.get(key)
        return held if held is not None else self._once(key, made)

    def gzipped(self, key: str, body: bytes) -> bytes:
        """The document `key` (`body`) gzipped: compressed once, by one of the requests
        asking at once, and kept with it."""

        def compressed() -> bytes:
            held = self.get(key)
            if held is not None and held[1] is not None:
                return held[1]
            gzipped = gzip.compress(body, GZIP_LEVEL)
            self.put(key, body, gzipped)
            return gzipped

        held = self.get(key)
        if held is not None and held[1] is not None:
            return held[1]
        return self._once(f"{key} gzip", compressed)

    def _once(self, name: str, make: Callable[[], T]) -> T:
        """`make()`, called once for all the threads asking for `name` at once: the
        others wait and get its result, or its exception."""
        with self._lock:
            running = self._running.get(name)
            if running is None:
                running = self._running[name] = Future()
                mine = True
            else:
                mine = False
        if not mine:
            return running.result()
        try:
            result = make()
            running.set_result(result)
            return result
        except BaseException as exc:
            running.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._running[name]


documents = DocumentCache(max_bytes=64 * 2**20, large_bytes=128 * 2**20)

# Requests of a process that may read, compress or cut a large document at once: half
# the threads kept for cached reads (RESERVED_THREADS), none of the wait slots that
# requests for uncached data hold, so that the other threads always answer small cached
# reads, whatever waits for the workers.
LARGE_READERS = RESERVED_THREADS // 2
_large_readers = threading.BoundedSemaphore(LARGE_READERS)
# A slice estimated above this size counts as large work (copied and gzipped anew).
LARGE_SLICE = 2**20


@contextmanager
def large_reader(busy: str) -> Iterator[None]:
    """Hold one of the LARGE_READERS while the block runs; with none free, answer 503
    at once (Retry-After 1), saying `busy`."""
    if not _large_readers.acquire(blocking=False):
        raise UpstreamUnavailable(busy, 1)
    try:
        yield
    finally:
        _large_readers.release()


_VALUES = b'"values":{'
# Below this many bytes a boundary is searched for straight through.
_SCAN = 4096


def _comma_before(whole: bytes, lo: int, hi: int, index: int) -> int:
    """Where `,"<index>":"` is in `whole[lo:hi]`, the values of a document, or `hi` if
    no term has that index. Keys increase along the document and `,"` stands only
    between two terms, so a bisection reads a few bytes at each step instead of
    everything before the term (a chunk near the end of a long sequence)."""
    pattern = b',"%d":"' % index
    while hi - lo > _SCAN:
        mid = (lo + hi) // 2
        comma = whole.find(b',"', mid, hi)
        if comma < 0:
            hi = mid
            continue
        key = int(whole[comma + 2 : whole.index(b'"', comma + 2)])
        if key == index:
            return comma
        if key < index:
            lo = comma + 1
        else:
            hi = comma
    found = whole.find(pattern, lo, hi + len(pattern) - 1)
    return hi if found < 0 else found


def values_slice(whole: bytes, first_index: int, first: int, last: int) -> bytes:
    """The whole sequence's document `whole` with only the terms at positions `first`
    to `last` (from 1; none when first > last): its bytes, cut out, not parsed.

    In the document each term after the first is `,"<index>":"<digits>"`, and neither
    digits nor the JSON-escaped name can hold the bytes `,"` otherwise, so finding them
    finds where a term begins.
    """
    start = whole.index(_VALUES) + len(_VALUES)
    head, end_of_values = whole[:start], len(whole) - 2  # the document ends with "}}"
    if first > last:
        return head + b"}}"
    begin = start
    if first > 1:
        begin = _comma_before(whole, start, end_of_values, first_index + first - 1) + 1
    end = _comma_before(whole, begin, end_of_values, first_index + last)
    return head + whole[begin:end] + b"}}"

"""Sending JSON answers cheaply: ready-made documents cached by ETag, conditional
requests answered with 304, and gzip for clients that accept it.

A document's ETag is the md5 of its bytes, so a cache keyed by ETag can never serve a
stale document: when the data changes, so does the key.
"""

from __future__ import annotations

import gzip
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Response, request

GZIP_MIN_BYTES = 1024
# Answers with a placeholder name change once the name arrives: revalidate every time.
FINAL = "public, max-age=3600"
PROVISIONAL = "no-cache"


class DocumentCache:
    """A least-recently-used map of ETag -> (body, gzipped body), bounded in bytes.

    A document larger than a fraction of the budget is not kept (it is served, then
    rebuilt when asked again): one huge sequence must not push out everything else.
    """

    # At most this fraction of the budget for one entry.
    LARGEST_SHARE = 8

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_entry = max_bytes // self.LARGEST_SHARE
        self.size = 0
        self.entries: OrderedDict[str, tuple[bytes, bytes | None]] = OrderedDict()
        self.lock = threading.Lock()
        # Documents being built: a lock per key, and how many requests use it.
        self.builds: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def building(self, etag: str) -> Iterator[None]:
        """Hold while building the document `etag`, so that concurrent requests for it
        wait for one build (and then find it here) instead of each building it."""
        with self.lock:
            build_lock, users = self.builds.get(etag, (threading.Lock(), 0))
            self.builds[etag] = (build_lock, users + 1)
        try:
            with build_lock:
                yield
        finally:
            with self.lock:
                build_lock, users = self.builds[etag]
                if users == 1:
                    del self.builds[etag]
                else:
                    self.builds[etag] = (build_lock, users - 1)

    def get(self, etag: str) -> tuple[bytes, bytes | None] | None:
        with self.lock:
            entry = self.entries.get(etag)
            if entry is not None:
                self.entries.move_to_end(etag)
            return entry

    def put(self, etag: str, body: bytes, gzipped: bytes | None = None) -> None:
        with self.lock:
            old = self.entries.pop(etag, None)
            if old is not None:
                self.size -= len(old[0]) + len(old[1] or b"")
            size = len(body) + len(gzipped or b"")
            if size > self.max_entry:
                return
            self.entries[etag] = (body, gzipped)
            self.size += size
            while self.size > self.max_bytes:
                _, (dropped, dropped_gz) = self.entries.popitem(last=False)
                self.size -= len(dropped) + len(dropped_gz or b"")


documents = DocumentCache(max_bytes=64 * 2**20)


def _wants_gzip() -> bool:
    return request.accept_encodings["gzip"] > 0


def send_json(etag: str, body: bytes, gzipped: bytes | None, final: bool) -> Response:
    """Answer with `body`: 304 if the client has it, gzipped if it accepts gzip.

    `etag` also names the body's entry in `documents`, where the gzipped bytes are kept
    once made and looked up when `gzipped` is not given, so each document is
    compressed once per process.
    """
    gz = len(body) >= GZIP_MIN_BYTES and _wants_gzip()
    tag = f"{etag}-gz" if gz else etag
    if "If-None-Match" in request.headers and request.if_none_match.contains(tag):
        response = Response(status=304)
    elif gz:
        if gzipped is None and (held := documents.get(etag)) is not None:
            gzipped = held[1]
        if gzipped is None:
            gzipped = gzip.compress(body, 6)
            documents.put(etag, body, gzipped)
        response = Response(gzipped, mimetype="application/json")
        response.headers["Content-Encoding"] = "gzip"
    else:
        response = Response(body, mimetype="application/json")
    response.set_etag(tag)
    response.headers["Cache-Control"] = FINAL if final else PROVISIONAL
    response.headers["Vary"] = "Accept-Encoding"
    return response

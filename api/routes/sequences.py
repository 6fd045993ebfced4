"""A sequence's values (the first count, all with the name, or paged: where the indices
start and end, and chunks of 1024 indices) and its metadata. Every values answer is cut
out of the whole sequence's document, built once per version of the data.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable

from flask import Response
from sqlalchemy.orm import Session

from api.caches import cached_reads, metadata_reads
from api.documents import LARGE_SLICE, Entry, documents, large_reader, values_slice
from api.errors import BadRequest, ChangedMeanwhile
from api.jobs import obtain, schedule_unless_recent
from api.responses import send_json
from shared import metrics
from shared.config import get_settings
from shared.errors import NotFound
from shared.ids import normalize_id
from shared.store.reads import (
    Cached,
    indexed_name,
    is_missing,
    placeholder_name,
    read_cached,
    read_document,
    read_sequence,
)
from shared.work.units import Work, backrefs_work, factors_work, metadata_work, values_work

COUNT = re.compile(r"[0-9]{1,9}")
# Chunks of the paged endpoints: 1024 indices each; any index fits a chunk number of
# at most 16 digits, so 18 leaves room and keeps every product exact.
CHUNK_SIZE = 1024
# What a request for a large answer hears when every large reader is busy.
BUSY = "a large sequence is being read for other requests; please try again"
CHUNK = re.compile(r"-?[0-9]{1,18}")


def parse_count(raw: str) -> int:
    if not COUNT.fullmatch(raw):
        raise BadRequest(f"count must be a non-negative integer, got {raw[:40]!r}")
    return int(raw)


def check_missing(session: Session, seq_id: str) -> None:
    if is_missing(read_sequence(session, seq_id), get_settings().not_found_ttl):
        raise NotFound(f"the OEIS has no sequence {seq_id}")


def _obtain_cached(seq_id: str, needs_name: bool) -> Cached:
    """The cached answer, fetching what is missing first (values; the name if needed)."""
    cached = cached_reads.get(seq_id)
    if cached is not None and (cached.name is not None or not needs_name):
        return cached

    def read(session: Session) -> Cached | list[Work]:
        found = read_cached(seq_id)
        if found is not None and (found.name is not None or not needs_name):
            return found
        check_missing(session, seq_id)
        needed = [] if found is not None else [values_work(seq_id)]
        if needs_name and (found is not None or indexed_name(session, seq_id) is None):
            needed.append(metadata_work(seq_id))  # (else the index names it)
        return needed

    return obtain(read)


def _current(cached: Cached) -> Cached:
    """The cached data now, after finding that `cached` is out of date (the news of the
    change may be on its way)."""
    cached_reads.changed(cached.id)
    return _obtain_cached(cached.id, cached.name is not None)


def build_document(
    cached: Cached,
    kind: str,
    key: str,
    make: Callable[[Cached], bytes | None],
    compress: bool = False,
) -> Entry | None:
    """The document `key` of this version of the data: held in memory, or made by
    `make` (and gzipped if `compress`) once for every request asking meanwhile, each
    build counted under `kind`. None if the data changed since `cached` was read."""

    def counted() -> bytes | None:
        body = make(cached)
        if body is not None:
            metrics.count_document_built(kind)
        return body

    return documents.build(key, counted, compress)


def _read_whole(cached: Cached) -> bytes | None:
    text = read_document(cached.id, cached.etag)
    return None if text is None else text.encode()


def _whole(cached: Cached) -> tuple[Cached, Entry]:
    """The whole sequence's document (every values answer is cut out of it), read once
    per version, with the data it is of: `cached`, or the current data if that changed
    meanwhile. One too large to share the memory budget is also gzipped as it is read
    (nearly every client asks for gzip), all of it as large work (api/documents.py:
    large_reader), so that requests for it never hold every thread."""
    while True:
        if cached.document_bytes <= documents.max_entry:
            entry = build_document(cached, "values", cached.etag, _read_whole)
        elif (entry := documents.get(cached.etag)) is None:
            with large_reader(BUSY):
                entry = build_document(cached, "values", cached.etag, _read_whole, compress=True)
        if entry is not None:
            return cached, entry
        cached = _current(cached)


def _slice(cached: Cached, whole: Entry, suffix: str, first: int, last: int) -> Response:
    """The values answer holding the terms at positions `first` to `last` (from 1), cut
    out of the whole document and never kept (a client asking for every count in turn
    must not push everyone's documents out). Cutting and gzipping a slice of megabytes
    counts as large work."""

    def send() -> Response:
        body = values_slice(whole[0], cached.first_index, first, last)
        return send_json(cached.etag + suffix, body, None, cached.name is not None, keep=False)

    if cached.document_bytes * (last - first + 1) // cached.term_count <= LARGE_SLICE:
        return send()
    with large_reader(BUSY):
        return send()


def _answer(cached: Cached, count: int) -> Response:
    """The first `count` values (all when 0)."""
    cached, whole = _whole(cached)
    size = cached.size(count)
    if size == cached.term_count:
        return send_json(cached.etag, *whole, final=cached.name is not None)
    return _slice(cached, whole, f"-{size}", 1, size)


def get_oeis_values(seq_id: str, count: str) -> Response:
    seq_id, n = normalize_id(seq_id), parse_count(count)
    cached = _obtain_cached(seq_id, needs_name=False)
    if cached.name is None:
        schedule_unless_recent(metadata_work(seq_id))
    if not cached.factored(n):
        schedule_unless_recent(factors_work(seq_id, n))
    return _answer(cached, n)


def get_oeis_name_and_values(seq_id: str) -> Response:
    return _answer(_obtain_cached(normalize_id(seq_id), needs_name=True), 0)


def _obtain_for_paging(seq_id: str) -> Cached:
    """The cached values (fetched first if need be), scheduling the name if missing."""
    cached = _obtain_cached(seq_id, needs_name=False)
    if cached.name is None:
        schedule_unless_recent(metadata_work(seq_id))
    return cached


def _header_json(cached: Cached) -> bytes:
    answer = {
        "id": cached.id,
        "name": cached.name or placeholder_name(cached.id),
        "first": str(cached.first_index),
        "last": str(cached.first_index + cached.term_count - 1),
        "chunk_size": CHUNK_SIZE,
    }
    return json.dumps(answer, separators=(",", ":")).encode()


def _header(cached: Cached) -> Response:
    """A few bytes made from the lookup alone: made anew each time, tagged by their md5
    (the name in it is the lookup's, which the document's ETag need not follow)."""
    body = _header_json(cached)
    tag = hashlib.md5(body).hexdigest()
    return send_json(tag, body, None, final=cached.name is not None, keep=False)


def get_oeis_header(seq_id: str) -> Response:
    """Where a sequence's indices start and end, for reading it in chunks (indices are
    strings: JavaScript numbers lose digits past 2^53)."""
    return _header(_obtain_for_paging(normalize_id(seq_id)))


def _chunk(cached: Cached, chunk: int) -> Response:
    cached, whole = _whole(cached)
    # Positions (from 1) of the indices chunk*CHUNK_SIZE <= i < (chunk+1)*CHUNK_SIZE.
    first = max(chunk * CHUNK_SIZE, cached.first_index) - cached.first_index + 1
    last = min((chunk + 1) * CHUNK_SIZE, cached.first_index + cached.term_count)
    last -= cached.first_index
    suffix = f"-chunk{chunk}" if first <= last else "-chunk-empty"
    return _slice(cached, whole, suffix, first, last)


def get_oeis_chunk(seq_id: str, chunk: str) -> Response:
    """The values with indices chunk*1024 <= i < (chunk+1)*1024 ({} outside the sequence)."""
    seq_id = normalize_id(seq_id)
    if not CHUNK.fullmatch(chunk):
        raise BadRequest(
            f"the chunk must be a whole number of at most 18 digits, got {chunk[:40]!r}"
        )
    return _chunk(_obtain_for_paging(seq_id), int(chunk))


def get_oeis_metadata(seq_id: str) -> Response:
    seq_id = normalize_id(seq_id)
    document = metadata_reads.get(seq_id)
    if document is None:

        def read(session: Session) -> bool | list[Work]:
            check_missing(session, seq_id)
            sequence = read_sequence(session, seq_id)
            needed = []
            if sequence is None or sequence.meta_fetched_at is None:
                needed.append(metadata_work(seq_id))
            if sequence is None or sequence.backrefs_fetched_at is None:
                needed.append(backrefs_work(seq_id))
            return needed or True

        obtain(read)
        document = metadata_reads.get(seq_id)
        if document is None:
            raise ChangedMeanwhile()
    return send_json(document.etag, document.body, None, final=True)

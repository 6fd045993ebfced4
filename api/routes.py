"""The HTTP endpoints under /api; what each answers, with its parameters and statuses,
is the OpenAPI description (api/openapi.py, served at /api/openapi.json)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
import unicodedata
from collections.abc import Callable
from functools import cache
from pathlib import Path
from time import monotonic, time

from celery.result import AsyncResult
from flask import Blueprint, Response, jsonify
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.clients import client_address
from api.documents import Entry, documents, values_slice
from api.errors import BadRequest, error
from api.jobs import Pending, obtain, schedule, wait_slot
from api.readcache import Listener, ReadCache
from api.responses import send_json
from shared import metrics
from shared.config import get_settings
from shared.db import UNREACHABLE, listen_connection, session_scope
from shared.errors import NotFound, Superseded, UpstreamUnavailable
from shared.ids import normalize_id
from shared.redis_db import get_redis
from shared.search import interest, query
from shared.store.reads import (
    Cached,
    Document,
    Factors,
    indexed_name,
    is_missing,
    placeholder_name,
    read_cached,
    read_document,
    read_factors,
    read_metadata_document,
    read_search,
    read_search_document,
    read_sequence,
    search_key,
)
from shared.work.queue import app as celery
from shared.work.units import (
    Work,
    backrefs_work,
    factors_work,
    metadata_work,
    search_work,
    values_work,
)

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_TERM = 200
# What a term not factored yet reads as (the front end takes any "no_fac..." as unknown),
# and when to ask again for more.
NO_FAC_YET = "no_fac_yet"
FACTORS_RETRY = 5
COUNT = re.compile(r"[0-9]{1,9}")
# Chunks of the paged endpoints: 1024 indices each; any index fits a chunk number of
# at most 16 digits, so 18 leaves room and keeps every product exact.
CHUNK_SIZE = 1024
CHUNK = re.compile(r"-?[0-9]{1,18}")
TASK_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
# What is cached per sequence, kept in memory until the database reports a change, and
# served from memory while the database cannot be reached (api/readcache.py); the
# metadata and search answers, kept the same way. The three listen on one connection.
changes = Listener(listen_connection)
# Memory per API process (the least recently used go first): a lookup with its key takes
# about a kilobyte; a document its body and some 600 bytes more.
LOOKUP_BYTES = 1024
DOCUMENT_OVERHEAD = 600
cached_reads: ReadCache[Cached] = ReadCache(
    read_cached, changes, UNREACHABLE, max_bytes=16 * 2**20, size=lambda _: LOOKUP_BYTES
)
metadata_reads: ReadCache[Document] = ReadCache(
    read_metadata_document,
    changes,
    UNREACHABLE,
    max_bytes=32 * 2**20,
    size=lambda document: len(document.body) + DOCUMENT_OVERHEAD,
)
search_reads: ReadCache[Document] = ReadCache(
    lambda key: query.read_document(key) or read_search_document(key, get_settings().search_ttl),
    changes,
    UNREACHABLE,
    max_bytes=16 * 2**20,
    size=lambda document: len(document.body) + DOCUMENT_OVERHEAD,
)
# Seconds after which a search answered 503 may be tried again.
SEARCH_RETRY = 2
TASK_STATES = {
    "PENDING": "pending",
    "RECEIVED": "pending",
    "STARTED": "running",
    "RETRY": "running",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "REVOKED": "failed",
}


class ChangedMeanwhile(UpstreamUnavailable):
    """The data was there a moment ago and gone now (forgotten, cleared): ask again."""

    def __init__(self) -> None:
        super().__init__("the cached data changed while it was read; please try again", 1)


def parse_count(raw: str) -> int:
    if not COUNT.fullmatch(raw):
        raise BadRequest(f"count must be a non-negative integer, got {raw[:40]!r}")
    return int(raw)


def _check_missing(session: Session, seq_id: str) -> None:
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
        _check_missing(session, seq_id)
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


def _build(
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
    (nearly every client asks for gzip), all of it in a wait slot, so that requests for
    it never hold the threads kept for cached reads."""
    while True:
        if cached.document_bytes <= documents.max_entry:
            entry = _build(cached, "values", cached.etag, _read_whole)
        elif (entry := documents.get(cached.etag)) is None:
            with wait_slot("this large sequence is being read for others; please try again"):
                entry = _build(cached, "values", cached.etag, _read_whole, compress=True)
        if entry is not None:
            return cached, entry
        cached = _current(cached)


def _slice(cached: Cached, whole: Entry, suffix: str, first: int, last: int) -> Response:
    """The values answer holding the terms at positions `first` to `last` (from 1), cut
    out of the whole document: cheap, so never kept (a client asking for every count
    in turn must not push everyone's documents out)."""
    body = values_slice(whole[0], cached.first_index, first, last)
    return send_json(cached.etag + suffix, body, None, cached.name is not None, keep=False)


def _answer(cached: Cached, count: int) -> Response:
    """The first `count` values (all when 0)."""
    cached, whole = _whole(cached)
    size = cached.size(count)
    if size == cached.term_count:
        return send_json(cached.etag, *whole, final=cached.name is not None)
    return _slice(cached, whole, f"-{size}", 1, size)


@bp.get("/get_oeis_values/<seq_id>/<count>")
def get_oeis_values(seq_id: str, count: str) -> Response:
    seq_id, n = normalize_id(seq_id), parse_count(count)
    cached = _obtain_cached(seq_id, needs_name=False)
    if cached.name is None:
        schedule(metadata_work(seq_id))
    if not cached.factored(n):
        schedule(factors_work(seq_id, n))
    return _answer(cached, n)


@bp.get("/get_oeis_name_and_values/<seq_id>")
def get_oeis_name_and_values(seq_id: str) -> Response:
    return _answer(_obtain_cached(normalize_id(seq_id), needs_name=True), 0)


def _obtain_for_paging(seq_id: str) -> Cached:
    """The cached values (fetched first if need be), scheduling the name if missing."""
    cached = _obtain_cached(seq_id, needs_name=False)
    if cached.name is None:
        schedule(metadata_work(seq_id))
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
    key = cached.etag + "-header"
    body, gzipped = _build(cached, "header", key, _header_json)  # (made from `cached`)
    return send_json(key, body, gzipped, final=cached.name is not None)


@bp.get("/get_oeis_header/<seq_id>")
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


@bp.get("/get_oeis_chunk/<seq_id>/<chunk>")
def get_oeis_chunk(seq_id: str, chunk: str) -> Response:
    """The values with indices chunk*1024 <= i < (chunk+1)*1024 ({} outside the sequence)."""
    seq_id = normalize_id(seq_id)
    if not CHUNK.fullmatch(chunk):
        raise BadRequest(
            f"the chunk must be a whole number of at most 18 digits, got {chunk[:40]!r}"
        )
    return _chunk(_obtain_for_paging(seq_id), int(chunk))


@bp.get("/get_oeis_metadata/<seq_id>")
def get_oeis_metadata(seq_id: str) -> Response:
    seq_id = normalize_id(seq_id)
    document = metadata_reads.get(seq_id)
    if document is None:

        def read(session: Session) -> bool | list[Work]:
            _check_missing(session, seq_id)
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


def _factors_json(factors: Factors) -> bytes:
    answer = {
        "id": factors.id,
        "name": factors.name or placeholder_name(factors.id),
        "factors": {str(index): text or NO_FAC_YET for index, text in factors.factors.items()},
        "complete": factors.complete,
    }
    return json.dumps(answer, separators=(",", ":")).encode()


def _complete_factors(cached: Cached, count: int) -> Response | None:
    """The factors of the first `count` terms, all stored: a ready-made document per
    version of the data (the ETag changes with the values and the name; stored
    factorizations only ever complete a prefix, never change it). None if they turn
    out not to be all stored."""
    max_bits = get_settings().factor_max_bits

    def build(current: Cached) -> bytes | None:
        with session_scope() as session:
            factors = read_factors(session, current.id, count, max_bits)
        if factors is None or not factors.complete:
            return None  # changed meanwhile: never cache a partial answer as final
        return _factors_json(factors)

    key = f"{cached.etag}-factors{cached.size(count)}"
    entry = _build(cached, "factors", key, build)
    if entry is None:
        cached_reads.changed(cached.id)
        return None
    return send_json(key, *entry, final=cached.name is not None)


@bp.get("/get_oeis_factors/<seq_id>/<count>")
def get_oeis_factors(seq_id: str, count: str) -> Response:
    """Factorizations of the first `count` terms. 200 within BACKSCOPE_SYNC_WAIT even
    while factoring runs: the terms not factored yet are "no_fac_yet" (never stored),
    with "complete": false and Retry-After; asking again later returns more."""
    seq_id, n = normalize_id(seq_id), parse_count(count)
    cached = cached_reads.get(seq_id)
    if cached is not None and cached.factored(n):
        if cached.name is None:
            schedule(metadata_work(seq_id))
        response = _complete_factors(cached, n)
        if response is not None:
            return response
    max_bits = get_settings().factor_max_bits

    def partial(session: Session) -> Factors | None:
        return read_factors(session, seq_id, n, max_bits)

    def read(session: Session) -> Cached | list[Work]:
        # The lookup only (no terms, no factorizations): waiting requests try it about
        # once a second, and the 80 identical requests of a FactorStacks page must not
        # each read every factorization, then each build the same answer.
        found = read_cached(seq_id)
        if found is None:  # the values come first
            _check_missing(session, seq_id)
            return [values_work(seq_id)]
        return found if found.factored(n) else [factors_work(seq_id, n)]

    found = obtain(read, progressive=True, partial=partial)
    if found.name is None:
        schedule(metadata_work(seq_id))
    if isinstance(found, Cached):
        response = _complete_factors(found, n)  # built once, as for a cached answer
        if response is not None:
            return response
        with session_scope() as session:  # changed meanwhile: answer what is there now
            found = partial(session)
        if found is None:
            raise ChangedMeanwhile()
    metrics.count_document_built("factors" if found.complete else "factors_partial")
    response = Response(_factors_json(found), mimetype="application/json")
    if not found.complete:
        response.headers["Retry-After"] = str(FACTORS_RETRY)
        response.headers["Cache-Control"] = "no-store"
    return response


def check_term(term: str) -> None:
    """Raise BadRequest unless `term` is something to search for."""
    if len(term) > MAX_TERM:
        raise BadRequest(f"search terms are limited to {MAX_TERM} characters")
    if not term.strip():
        raise BadRequest("the search term is empty")
    if any(unicodedata.category(char) == "Cc" for char in term):
        raise BadRequest("the search term contains control characters")


def _search_upstream(key: str) -> Document:
    """The OEIS's results for `key` (no index has been built): cached, or searched
    for. Never a 202, which the front end's search bar cannot show: when the search
    is not done within BACKSCOPE_SEARCH_WAIT, a 503 says to try again, and a search
    that the same client's newer search superseded is answered so at once."""
    client, redis = client_address(), get_redis("locks")
    try:
        interest.ask(redis, client, key)
    except RedisError as exc:
        raise UpstreamUnavailable("the work queue is unavailable right now", 30) from exc

    def read(session: Session) -> bool | list[Work]:
        if read_search(session, key, get_settings().search_ttl) is not None:
            return True
        if not interest.is_latest(redis, client, key):
            raise Superseded("you have searched for something else since", SEARCH_RETRY)
        return [search_work(key)]

    try:
        obtain(read, wait_seconds=get_settings().search_wait)
    except Pending:
        raise UpstreamUnavailable(
            "the OEIS search is taking long; please try again", SEARCH_RETRY
        ) from None
    document = search_reads.get(key)
    if document is None:
        raise ChangedMeanwhile()
    return document


@bp.get("/search_oeis/<path:term>")
def search_oeis(term: str) -> Response:
    """Up to 10 results: from the local index when one is built, else from the OEIS."""
    check_term(term)
    key = search_key(term)
    document = search_reads.get(key)
    if document is not None and document.expires <= time():
        search_reads.changed(key)
        document = None
    if document is None:
        document = _search_upstream(key)
    # The term is echoed as given; the results are the document shared by every
    # spelling of the same search.
    quoted = json.dumps(term, ensure_ascii=False).encode()
    body = b'{"term":' + quoted + b',"results":' + document.body + b"}"
    tag = f"{document.etag}-{hashlib.md5(quoted).hexdigest()[:12]}"
    return send_json(tag, body, None, final=True)


@cache
def _commit() -> str:
    settings = get_settings()
    if settings.commit:
        return settings.commit[:12]
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=Path(__file__).parent,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@bp.get("/get_commit")
def get_commit() -> Response:
    return jsonify({"short_commit_hash": _commit()})


@bp.get("/tasks/<task_id>")
def task_status(task_id: str) -> Response:
    if not TASK_ID.fullmatch(task_id):
        raise BadRequest("that is not a task id")
    result = AsyncResult(task_id, app=celery)
    state = TASK_STATES.get(result.state, "running")
    failure = str(result.result) if state == "failed" else None
    return jsonify({"task": task_id, "state": state, "error": failure})


# A load balancer may poll /api/health every second: each process checks at most once
# per HEALTH_TTL seconds (the worker ping waits up to a second) and answers from memory
# meanwhile. Concurrent callers wait for the one check under way.
HEALTH_TTL = 5.0
_health_lock = threading.Lock()
_health_checked: list[tuple[float, float, dict[str, str]]] = []  # (monotonic, time, checks)


def _health_checks() -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "up"
    except Exception as exc:
        checks["database"] = f"down: {type(exc).__name__}"
    try:
        get_redis("locks").ping()
        checks["redis"] = "up"
    except Exception as exc:
        checks["redis"] = f"down: {type(exc).__name__}"
    try:
        workers = celery.control.ping(timeout=1.0) if checks["redis"] == "up" else []
        checks["workers"] = f"up: {len(workers)}" if workers else "down: no worker answered"
    except Exception as exc:
        checks["workers"] = f"down: {type(exc).__name__}"
    return checks


@bp.get("/health")
def health() -> Response:
    """Database, Redis and workers: checked at most every HEALTH_TTL seconds per
    process; `checked_at` says when (Unix time)."""
    with _health_lock:
        if not _health_checked or monotonic() - _health_checked[0][0] >= HEALTH_TTL:
            _health_checked[:] = [(monotonic(), time(), _health_checks())]
        _, checked_at, checks = _health_checked[0]
    down = [name for name, state in checks.items() if not state.startswith("up")]
    if down:
        return error(f"unavailable: {', '.join(down)}", 503, 30, checked_at=checked_at, **checks)
    return jsonify({"status": "ok", "checked_at": checked_at, **checks})

"""The HTTP endpoints (contract: shared/spec/api.md in the team's reference material)."""

from __future__ import annotations

import json
import re
import subprocess
import unicodedata
from functools import cache
from pathlib import Path

from celery.result import AsyncResult
from flask import Blueprint, Response, jsonify
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.errors import BadRequest, error
from api.jobs import obtain, schedule
from api.responses import documents, send_json
from shared.config import get_settings
from shared.db import UNREACHABLE, listen_connection, session_scope
from shared.errors import NotFound
from shared.ids import normalize_id
from shared.queue import app as celery
from shared.readcache import ReadCache
from shared.redis_db import get_redis
from shared.store import (
    Cached,
    Factors,
    is_missing,
    placeholder_name,
    read_cached,
    read_document,
    read_factors,
    read_search,
    read_sequence,
    read_terms,
)
from shared.work import (
    Work,
    backrefs_work,
    factors_work,
    metadata_work,
    search_work,
    values_work,
)

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_TERM = 200
_COUNT = re.compile(r"[0-9]{1,9}")
_TASK_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
# What is cached per sequence, kept in memory until the database reports a change, and
# served from memory while the database cannot be reached (shared/readcache.py).
cached_reads: ReadCache[Cached] = ReadCache(read_cached, listen_connection, UNREACHABLE)
TASK_STATES = {
    "PENDING": "pending",
    "RECEIVED": "pending",
    "STARTED": "running",
    "RETRY": "running",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "REVOKED": "failed",
}


def parse_count(raw: str) -> int:
    if not _COUNT.fullmatch(raw):
        raise BadRequest(f"count must be a non-negative integer, got {raw[:40]!r}")
    return int(raw)


def _check_missing(session: Session, seq_id: str) -> None:
    if is_missing(read_sequence(session, seq_id), get_settings().not_found_ttl):
        raise NotFound(f"the OEIS has no sequence {seq_id}")


def _cached(seq_id: str, needs_name: bool) -> Cached:
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
        return [*needed, metadata_work(seq_id)] if needs_name else needed

    return obtain(read)


def _body(cached: Cached, size: int) -> bytes | None:
    """The answer's bytes for the first `size` terms; None if the data changed meanwhile."""
    if size == cached.term_count:
        text = read_document(cached.id, cached.etag)
        return None if text is None else text.encode()
    terms = read_terms(cached.id, cached.etag, size)
    if terms is None:
        return None
    values = {str(cached.first_index + i): term for i, term in enumerate(terms)}
    answer = {"id": cached.id, "name": cached.name or placeholder_name(cached.id), "values": values}
    return json.dumps(answer, separators=(",", ":")).encode()


def _answer(cached: Cached, count: int) -> Response:
    """The JSON answer, built once per version of the data and then served from memory."""
    size = cached.size(count)
    key = cached.etag if size == cached.term_count else f"{cached.etag}-{size}"
    entry = documents.get(key)
    if entry is None:
        body = _body(cached, size)
        if body is None:  # replaced since we looked (the news may be on its way): again
            cached_reads.changed(cached.id)
            return _answer(_cached(cached.id, cached.name is not None), count)
        documents.put(key, body)
        entry = (body, None)
    return send_json(key, *entry, final=cached.name is not None)


@bp.get("/get_oeis_values/<seq_id>/<count>")
def get_oeis_values(seq_id: str, count: str) -> Response:
    seq_id, n = normalize_id(seq_id), parse_count(count)
    cached = _cached(seq_id, needs_name=False)
    if cached.name is None:
        schedule(metadata_work(seq_id))
    if not cached.factored(n):
        schedule(factors_work(seq_id, n))
    return _answer(cached, n)


@bp.get("/get_oeis_name_and_values/<seq_id>")
def get_oeis_name_and_values(seq_id: str) -> Response:
    return _answer(_cached(normalize_id(seq_id), needs_name=True), 0)


@bp.get("/get_oeis_metadata/<seq_id>")
def get_oeis_metadata(seq_id: str) -> Response:
    seq_id = normalize_id(seq_id)

    def read(session: Session) -> dict | list[Work]:
        _check_missing(session, seq_id)
        sequence = read_sequence(session, seq_id)
        needed = []
        if sequence is None or sequence.meta_fetched_at is None:
            needed.append(metadata_work(seq_id))
        if sequence is None or sequence.backrefs_fetched_at is None:
            needed.append(backrefs_work(seq_id))
        if needed:
            return needed
        return {
            "id": seq_id,
            "name": sequence.name,
            "xrefs": "\n".join(sequence.xrefs or []),
            "backrefs": sequence.backrefs or [],
        }

    return jsonify(obtain(read))


@bp.get("/get_oeis_factors/<seq_id>/<count>")
def get_oeis_factors(seq_id: str, count: str) -> Response:
    seq_id, n = normalize_id(seq_id), parse_count(count)

    def read(session: Session) -> Factors | list[Work]:
        factors = read_factors(session, seq_id, n)
        if factors is None:  # the values come first
            _check_missing(session, seq_id)
            return [values_work(seq_id)]
        if factors.complete:
            return factors
        return [factors_work(seq_id, n)]

    factors = obtain(read, progressive=True)
    if factors.name is None:
        schedule(metadata_work(seq_id))
    return jsonify(
        {
            "id": seq_id,
            "name": factors.name or placeholder_name(seq_id),
            "factors": {str(index): text for index, text in factors.factors.items()},
        }
    )


@bp.get("/search_oeis/<path:term>")
def search_oeis(term: str) -> Response:
    if len(term) > MAX_TERM:
        raise BadRequest(f"search terms are limited to {MAX_TERM} characters")
    if not term.strip():
        raise BadRequest("the search term is empty")
    if any(unicodedata.category(char) == "Cc" for char in term):
        raise BadRequest("the search term contains control characters")

    def read(session: Session) -> dict[str, list[list[str]]] | list[Work]:
        results = read_search(session, term)
        return {"results": results} if results is not None else [search_work(term)]

    return jsonify({"term": term, **obtain(read)})


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
    if not _TASK_ID.fullmatch(task_id):
        raise BadRequest("that is not a task id")
    result = AsyncResult(task_id, app=celery)
    state = TASK_STATES.get(result.state, "running")
    failure = str(result.result) if state == "failed" else None
    return jsonify({"task": task_id, "state": state, "error": failure})


@bp.get("/health")
def health() -> Response:
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
    down = [name for name, state in checks.items() if not state.startswith("up")]
    if down:
        return error(f"unavailable: {', '.join(down)}", 503, 30, **checks)
    return jsonify({"status": "ok", **checks})

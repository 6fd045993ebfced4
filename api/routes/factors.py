"""The factorizations of a sequence's first terms: a ready-made document once all are
stored, else what is stored so far, asking again for the rest."""

from __future__ import annotations

import json

from flask import Response
from sqlalchemy.orm import Session

from api.caches import cached_reads
from api.errors import ChangedMeanwhile
from api.jobs import obtain, schedule_unless_recent
from api.responses import send_json
from api.routes.sequences import build_document, check_missing, parse_count
from shared import metrics
from shared.config import get_settings
from shared.db import session_scope
from shared.ids import normalize_id
from shared.store.reads import Cached, Factors, placeholder_name, read_cached, read_factors
from shared.work.units import Work, factors_work, metadata_work, values_work

# What a term not factored yet reads as (the front end takes any "no_fac..." as unknown),
# and when to ask again for more.
NO_FAC_YET = "no_fac_yet"
FACTORS_RETRY = 5


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
    entry = build_document(cached, "factors", key, build)
    if entry is None:
        cached_reads.changed(cached.id)
        return None
    return send_json(key, *entry, final=cached.name is not None)


def get_oeis_factors(seq_id: str, count: str) -> Response:
    """Factorizations of the first `count` terms. 200 within BACKSCOPE_SYNC_WAIT even
    while factoring runs: the terms not factored yet are "no_fac_yet" (never stored),
    with "complete": false and Retry-After; asking again later returns more."""
    seq_id, n = normalize_id(seq_id), parse_count(count)
    cached = cached_reads.get(seq_id)
    if cached is not None and cached.factored(n):
        if cached.name is None:
            schedule_unless_recent(metadata_work(seq_id))
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
            check_missing(session, seq_id)
            return [values_work(seq_id)]
        return found if found.factored(n) else [factors_work(seq_id, n)]

    found = obtain(read, progressive=True, partial=partial)
    if found.name is None:
        schedule_unless_recent(metadata_work(seq_id))
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

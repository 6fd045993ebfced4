"""Factor a stored sequence's terms: the body of the factor task, with no Celery in sight.

Incremental: only terms without a stored factorization are factored, up to the requested
count. Each value gets its own time budget (shared/factors/factorize.py), so one hard number costs
at most about the budget and never blocks the rest. Results are stored in batches, each
its own short fenced transaction, so progress survives a crash and a long sequence never
holds one huge transaction open.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select, text

from shared.db import session_scope
from shared.factors.factorize import NO_FAC, factorize, find_gp
from shared.models import SequenceValues
from shared.store.writes import store_factors

log = logging.getLogger(__name__)

# Store after this many values, or after this many seconds, whichever comes first.
BATCH_VALUES = 50
BATCH_SECONDS = 5.0
# A task stops after this long and asks for a continuation (see worker/tasks/factor.py), so
# one long sequence neither runs into the task time limit nor hogs a worker slot.
SLICE_SECONDS = 120.0

_LOG2_10 = math.log2(10)


@dataclass(frozen=True)
class Limits:
    budget: float  # seconds per value
    max_bits: int  # values above 2**max_bits are not tried


def factor_term(term: str, limits: Limits, gp_path: str | None) -> str:
    """The factorization string of one stored term (a decimal string), or NO_FAC.

    The length of the string is checked before converting it: a term with more digits
    than `max_bits` allows is NO_FAC without ever becoming an int (CPython refuses to
    convert strings of more than 4300 digits).
    """
    digits = term.lstrip("-").lstrip("0")
    # |value| >= 10**(len - 1); the +1 is slack for rounding, factorize checks exactly.
    if (len(digits) - 1) * _LOG2_10 > limits.max_bits + 1:
        return NO_FAC
    try:
        value = int(term)
    except ValueError:
        log.error("factor.bad_term", extra={"term": term[:40]})
        return NO_FAC
    return factorize(value, budget=limits.budget, max_value=2**limits.max_bits, gp_path=gp_path)


# The terms still to factor in one page of positions, in index order, so the
# factored-through mark (shared/store/writes.py) rises with every batch. Pages, each read in its
# own short transaction, keep a sequence of 100,000 thousand-digit terms out of this
# process's memory without holding a transaction open while factoring. A page is a slice
# of the array, so only its own terms are unnested and checked for a factorization.
PAGE_TERMS = 1000
_TODO = text(
    """
    SELECT v.first_index + :after + t.ord - 1, t.term
    FROM sequence_values AS v
    CROSS JOIN LATERAL unnest(v.terms[(:after + 1):(:last)]) WITH ORDINALITY AS t(term, ord)
    WHERE v.id = :id AND NOT EXISTS (
        SELECT 1 FROM factorizations AS f
        WHERE f.id = v.id AND f.n = v.first_index + :after + t.ord - 1)
    ORDER BY t.ord
    """
)


# How many of a page's terms have a factorization: an index range scan, so a page that
# is done (say, on a continuation after a time slice) is skipped without decompressing
# the terms array.
_DONE = text(
    """
    SELECT count(*) FROM factorizations AS f JOIN sequence_values AS v ON v.id = f.id
    WHERE f.id = :id AND f.n >= v.first_index + :after AND f.n < v.first_index + :last
    """
)


def _todo(seq_id: str, start: int, end: int) -> Iterator[tuple[int, str]]:
    """(index, term) of every term at positions `start` < p <= `end` (from 1) without
    a factorization."""
    for after in range(start, end, PAGE_TERMS):
        page = {"id": seq_id, "after": after, "last": min(after + PAGE_TERMS, end)}
        with session_scope() as session:
            if session.execute(_DONE, page).scalar_one() == page["last"] - after:
                continue
            rows = session.execute(_TODO, page).all()
        yield from rows


def _store(seq_id: str, values_token: int, batch: list[tuple[int, str]], token: int) -> bool:
    with session_scope() as session:
        if store_factors(session, seq_id, values_token, batch, token):
            return True
        session.rollback()
        return False


def factor_sequence(
    seq_id: str,
    count: int,
    token: int,
    limits: Limits,
    slice_seconds: float = SLICE_SECONDS,
) -> str:
    """Factor the first `count` terms (all when 0) that have no factorization yet.

    Returns "stored", "cached" (nothing to do), "partial" (the time slice ran out; the
    caller should continue later), "no_values" (nothing to factor: values not stored),
    or "refused" (the cache was cleared, the sequence forgotten or its values replaced
    meanwhile).
    """
    with session_scope() as session:
        row = session.execute(
            select(
                SequenceValues.token,
                SequenceValues.term_count,
                SequenceValues.first_index,
                SequenceValues.factored_through,
            ).where(SequenceValues.id == seq_id)
        ).first()
        if row is None:
            return "no_values"
        values_token, term_count, first_index, mark = row
    # Every term up to the factored-through mark is factored: start after it.
    done = 0 if mark is None else mark - first_index + 1
    gp = find_gp()
    started = time.monotonic()
    batch: list[tuple[int, str]] = []
    batch_started = started
    stored = no_fac = 0
    for n, term in _todo(seq_id, done, min(count, term_count) if count > 0 else term_count):
        factors = factor_term(term, limits, gp)
        batch.append((n, factors))
        no_fac += factors == NO_FAC
        now = time.monotonic()
        out_of_time = now - started >= slice_seconds
        if not (out_of_time or len(batch) >= BATCH_VALUES or now - batch_started >= BATCH_SECONDS):
            continue
        if not _store(seq_id, values_token, batch, token):
            return "refused"
        stored += len(batch)
        batch, batch_started = [], time.monotonic()
        if out_of_time:
            log.info("factor.slice_done", extra={"stored": stored, "no_fac": no_fac})
            return "partial"
    if batch:
        if not _store(seq_id, values_token, batch, token):
            return "refused"
        stored += len(batch)
    if not stored:
        return "cached"
    log.info("factor.stored", extra={"stored": stored, "no_fac": no_fac})
    return "stored"

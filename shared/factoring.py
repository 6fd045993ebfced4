"""Factor a stored sequence's terms: the body of the factor task, with no Celery in sight.

Incremental: only terms without a stored factorization are factored, up to the requested
count. Each value gets its own time budget (shared/factor.py), so one hard number costs
at most about the budget and never blocks the rest. Results are stored in batches, each
its own short fenced transaction, so progress survives a crash and a long sequence never
holds one huge transaction open.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from sqlalchemy import select

from shared.db import session_scope
from shared.factor import NO_FAC, factorize, find_gp
from shared.models import SequenceValues
from shared.store import factored_indices, store_factors

log = logging.getLogger(__name__)

# Store after this many values, or after this many seconds, whichever comes first.
BATCH_VALUES = 50
BATCH_SECONDS = 5.0
# A task stops after this long and asks for a continuation (see worker/factor.py), so
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


def factor_values(
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
    terms_column = SequenceValues.terms if count == 0 else SequenceValues.terms[1:count]
    with session_scope() as session:
        row = session.execute(
            select(SequenceValues.first_index, SequenceValues.token, terms_column).where(
                SequenceValues.id == seq_id
            )
        ).first()
        if row is None:
            return "no_values"
        first, values_token, terms = row[0], row[1], row[2] or []
        done = factored_indices(session, seq_id)
    todo = [(first + i, term) for i, term in enumerate(terms) if first + i not in done]
    if not todo:
        return "cached"

    gp = find_gp()
    started = time.monotonic()
    batch: list[tuple[int, str]] = []
    batch_started = started
    stored = no_fac = 0
    for position, (n, term) in enumerate(todo):
        factors = factor_term(term, limits, gp)
        batch.append((n, factors))
        no_fac += factors == NO_FAC
        now = time.monotonic()
        last = position == len(todo) - 1
        out_of_time = now - started >= slice_seconds
        full = len(batch) >= BATCH_VALUES or now - batch_started >= BATCH_SECONDS
        if not (last or out_of_time or full):
            continue
        with session_scope() as session:
            if not store_factors(session, seq_id, values_token, batch, token):
                session.rollback()
                return "refused"
        stored += len(batch)
        batch, batch_started = [], time.monotonic()
        if out_of_time and not last:
            log.info(
                "factor.slice_done",
                extra={"stored": stored, "left": len(todo) - stored, "no_fac": no_fac},
            )
            return "partial"
    log.info("factor.stored", extra={"stored": stored, "no_fac": no_fac})
    return "stored"

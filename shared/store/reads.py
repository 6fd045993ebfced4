"""Reading cached OEIS data: what the API serves, and what the workers check first.

The API's hot path makes one small query per sequence (read_cached), kept in memory by
api/readcache.py, and reads a ready-made document once per version of the data.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from shared.db import PREPARED, get_read_engine
from shared.models import (
    SearchEntry,
    SearchResult,
    Sequence,
    SequenceValues,
)


@dataclass(frozen=True)
class Cached:
    """What the hot read path needs to answer for a cached sequence, from one query."""

    id: str
    first_index: int
    term_count: int
    etag: str  # of the ready-made document (the whole sequence, with its name)
    name: str | None  # None until the metadata is loaded
    factored_through: int | None  # every index up to this one is factored (see the model)
    document_bytes: int  # the size of the ready-made document

    def size(self, count: int) -> int:
        """How many terms a request for `count` (0: all) gets."""
        return count if 0 < count < self.term_count else self.term_count

    def factored(self, count: int) -> bool:
        """Whether factorizations are stored for every term a request for `count` gets."""
        last = self.first_index + self.size(count) - 1
        return self.factored_through is not None and self.factored_through >= last


# One round trip that never reads the terms or the document (slicing a large array
# means decompressing all of it; a TOASTed value's length is in its pointer). The name
# is the loaded metadata's, else the search index's (shared/search/indexer.py).
PREPARED["backscope_cached"] = (
    "(text)",
    """
    SELECT v.first_index, v.term_count, v.etag,
           CASE WHEN s.meta_fetched_at IS NOT NULL THEN s.name
                ELSE (SELECT e.name FROM search_entries AS e WHERE e.id = v.id) END,
           v.factored_through, octet_length(v.document)
    FROM sequence_values AS v JOIN sequences AS s ON s.id = v.id
    WHERE v.id = $1
    """,
)


def _read_one(sql: str, params: dict[str, object]) -> tuple | None:
    """One row from the read engine (a lookup the API keeps in memory, or a document
    read once per version). Through SQLAlchemy, so a dropped connection is a 503 and the
    pool's other connections, just as dead, are replaced."""
    with get_read_engine().connect() as connection:
        return connection.exec_driver_sql(sql, params).first()


def read_cached(seq_id: str) -> Cached | None:
    """What is cached for this sequence, or None if its values are not."""
    row = _read_one("EXECUTE backscope_cached(%(id)s)", {"id": seq_id})
    return None if row is None else Cached(seq_id, *row)


def read_document(seq_id: str, etag: str) -> str | None:
    """The ready-made document with this ETag (None if it changed since it was read)."""
    row = _read_one(
        "SELECT document FROM sequence_values WHERE id = %(id)s AND etag = %(etag)s",
        {"id": seq_id, "etag": etag},
    )
    return None if row is None else row[0]


@dataclass(frozen=True)
class Document:
    """A ready-made JSON answer (or part of one) and its ETag."""

    etag: str
    body: bytes
    expires: float = math.inf  # unix time after which it must be read again


def json_document(answer: object, expires: float = math.inf) -> Document:
    body = json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()
    return Document(hashlib.md5(body).hexdigest(), body, expires)


def _iso(when: datetime | None) -> str | None:
    """An ISO 8601 time in UTC, whatever the database's time zone."""
    return None if when is None else when.astimezone(UTC).isoformat()


def read_metadata_document(seq_id: str) -> Document | None:
    """The get_oeis_metadata answer, once both the metadata and the back-references
    are stored (None until then)."""
    row = _read_one(
        "SELECT name, xrefs, backrefs, revision, modified, checked_at FROM sequences"
        " WHERE id = %(id)s AND meta_fetched_at IS NOT NULL AND backrefs_fetched_at IS NOT NULL",
        {"id": seq_id},
    )
    if row is None:
        return None
    name, xrefs, backrefs, revision, modified, checked_at = row
    return json_document(
        {
            "id": seq_id,
            "name": name,
            "xrefs": "\n".join(xrefs or []),
            "backrefs": backrefs or [],
            # The OEIS revision cached (null: not known) and when it was made; when we
            # last found the cached data current (null: never checked).
            "revision": revision,
            "modified": _iso(modified),
            "checked": _iso(checked_at),
        }
    )


def read_search_document(key: str, max_age: int) -> Document | None:
    """The cached results of a search_key as a JSON list, unless older than `max_age`
    seconds; the document expires when they become too old."""
    row = _read_one(
        "SELECT results, extract(epoch FROM fetched_at) FROM searches"
        " WHERE term = %(key)s AND fetched_at > now() - %(age)s * interval '1 second'",
        {"key": key, "age": max_age},
    )
    return None if row is None else json_document(row[0], float(row[1]) + max_age)


@dataclass(frozen=True)
class Factors:
    id: str
    name: str | None
    # Index -> factorization string, in index order, for every term asked for; None for
    # a term not factored yet.
    factors: dict[int, str | None]

    @property
    def complete(self) -> bool:
        return None not in self.factors.values()


# shared/factors/factorize.py's NO_FAC (not imported from there: that module loads sympy, which
# the API does without; a test checks they agree).
NO_FAC = "no_fac"
# log2(10): a term of d digits (no leading zeros) is at least 10^(d-1) = 2^((d-1) log2 10).
_LOG2_10 = 3.321928094887362

# Every term of the first :count (NULL: all), with its stored factorization; a term too
# large to be tried (the check factor_term makes, on its digits) is 'no_fac' at once.
_FACTORS = text(
    """
    SELECT v.first_index + t.ord - 1,
           coalesce(f.factors,
                    CASE WHEN (length(ltrim(ltrim(t.term, '-'), '0')) - 1) * :log2_10
                              > :max_bits + 1
                         THEN :no_fac END)
    FROM sequence_values AS v
    CROSS JOIN LATERAL unnest(v.terms[1:coalesce(:count, v.term_count)])
        WITH ORDINALITY AS t(term, ord)
    LEFT JOIN factorizations AS f ON f.id = v.id AND f.n = v.first_index + t.ord - 1
    WHERE v.id = :id
    ORDER BY t.ord
    """
)


def read_factors(session: Session, seq_id: str, count: int, max_bits: int) -> Factors | None:
    """The factorizations of the first `count` terms (all when 0); None if the
    sequence's values are not stored. A term above 2^`max_bits` that has no stored
    factorization yet is NO_FAC (it will never be tried)."""
    row = session.execute(
        select(SequenceValues.first_index, func.coalesce(Sequence.name, SearchEntry.name))
        .join(Sequence, Sequence.id == SequenceValues.id)
        .outerjoin(SearchEntry, SearchEntry.id == SequenceValues.id)
        .where(SequenceValues.id == seq_id)
    ).first()
    if row is None:
        return None
    rows = session.execute(
        _FACTORS,
        {
            "id": seq_id,
            "count": count or None,
            "log2_10": _LOG2_10,
            "max_bits": max_bits,
            "no_fac": NO_FAC,
        },
    )
    return Factors(seq_id, row[1], {n: factors for n, factors in rows})


def read_sequence(session: Session, seq_id: str) -> Sequence | None:
    return session.get(Sequence, seq_id)


def indexed_name(session: Session, seq_id: str) -> str | None:
    """The sequence's name in the local search index, if it is indexed."""
    return session.scalar(select(SearchEntry.name).where(SearchEntry.id == seq_id))


def search_key(term: str) -> str:
    """The form a search term is cached and sent to the OEIS in: case and runs of white
    space do not change what the OEIS finds, so "Fibonacci  numbers" and
    " fibonacci numbers" share one entry."""
    return " ".join(term.split()).casefold()


def read_search(session: Session, key: str, max_age: int) -> list[list[str]] | None:
    """Cached results for a search_key, unless older than `max_age` seconds."""
    return session.scalar(
        select(SearchResult.results).where(
            SearchResult.term == key,
            SearchResult.fetched_at > func.now() - timedelta(seconds=max_age),
        )
    )


def is_missing(sequence: Sequence | None, not_found_ttl: int) -> bool:
    """Whether the OEIS said recently that this sequence does not exist."""
    if sequence is None or sequence.missing_at is None:
        return False
    return datetime.now(sequence.missing_at.tzinfo) - sequence.missing_at < timedelta(
        seconds=not_found_ttl
    )


def placeholder_name(seq_id: str) -> str:
    """The name served until the real one is loaded."""
    return f"{seq_id} [name not yet loaded]"

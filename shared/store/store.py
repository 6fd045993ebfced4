"""Reading and writing cached OEIS data.

Every write is fenced: it carries the fencing token of the lock it was done under and
is refused if the stored data carries a newer token, or if the cache was cleared (or
the sequence forgotten) after the token was handed out. The check and the write happen
in one statement under a shared advisory lock that clearing takes exclusively, so a
stalled download that wakes up can never overwrite newer data or resurrect a clear.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db import PREPARED, get_read_engine
from shared.models import (
    Factorization,
    FenceFloor,
    SearchEntry,
    SearchIndex,
    SearchResult,
    Sequence,
    SequenceValues,
)
from shared.oeis.parsing import BFile, Entry

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key guarding writes against a concurrent clear/forget.
_WRITE_GUARD = 0x6261636B  # "back"


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


def _guarded(session: Session, seq_id: str | None, token: int) -> bool:
    """Take the shared write guard; False if a clear or forget came after `token`."""
    session.execute(select(func.pg_advisory_xact_lock_shared(_WRITE_GUARD)))
    scopes = ["*"] if seq_id is None else ["*", seq_id]
    floor = session.scalar(select(func.max(FenceFloor.token)).where(FenceFloor.scope.in_(scopes)))
    return floor is None or token > floor


def _refused(what: str, key: str, token: int) -> bool:
    log.warning("store.write_refused", extra={"what": what, "seq_id": key, "token": token})
    return False


def _ensure_sequence(session: Session, seq_id: str) -> None:
    session.execute(insert(Sequence).values(id=seq_id).on_conflict_do_nothing())


def store_values(session: Session, seq_id: str, bfile: BFile, token: int) -> bool:
    """Store a b-file's terms unless newer data is already stored. True if written."""
    if not _guarded(session, seq_id, token):
        return _refused("values", seq_id, token)
    _ensure_sequence(session, seq_id)
    written = _write_values(session, seq_id, bfile, token)
    if written is None:
        return _refused("values", seq_id, token)
    # Fresh from the OEIS: as good as a check (the refresh sweep starts from here).
    session.execute(
        update(Sequence).where(Sequence.id == seq_id).values(missing_at=None, checked_at=func.now())
    )
    if written != "same":
        refresh_document(session, seq_id)
    return True


class _TermRows:
    """The terms as COPY rows ("position<TAB>term"), read in pieces: the terms reach
    PostgreSQL without a second full-size copy in memory (an array literal of a large
    sequence would hold two or three)."""

    def __init__(self, terms: list[str]) -> None:
        self.rows = (f"{position}\t{term}\n" for position, term in enumerate(terms))
        self.pending = ""

    def read(self, size: int = -1) -> str:
        parts, length = [self.pending], len(self.pending)
        for row in self.rows:
            parts.append(row)
            length += len(row)
            if 0 <= size <= length:
                break
        text = "".join(parts)
        if size < 0:
            size = len(text)
        self.pending = text[size:]
        return text[:size]


def _copy_terms(session: Session, terms: list[str]) -> None:
    """Put the terms in a temporary table `incoming_terms` (dropped at commit)."""
    session.execute(text("DROP TABLE IF EXISTS pg_temp.incoming_terms"))
    session.execute(
        text("CREATE TEMP TABLE incoming_terms (position int, term text) ON COMMIT DROP")
    )
    with session.connection().connection.driver_connection.cursor() as cursor:
        cursor.copy_expert("COPY incoming_terms (position, term) FROM STDIN", _TermRows(terms))


# Terms are validated decimal strings (shared/oeis/parsing.py): safe in COPY's text format.
_UPSERT_VALUES = text(
    """
    INSERT INTO sequence_values AS v (id, first_index, terms, term_count, document, etag, token)
    SELECT :id, :first_index, array_agg(term ORDER BY position), count(*), '', '', :token
    FROM incoming_terms
    ON CONFLICT (id) DO UPDATE SET
        first_index = excluded.first_index, terms = excluded.terms,
        term_count = excluded.term_count, token = excluded.token, fetched_at = now(),
        factored_through = NULL
    WHERE v.token < excluded.token
    RETURNING v.id
    """
)


def placeholder_name(seq_id: str) -> str:
    """The name served until the real one is loaded."""
    return f"{seq_id} [name not yet loaded]"


# Builds the get_oeis_name_and_values answer inside PostgreSQL, so a worker never holds
# a second copy of a large sequence in memory. The name is the loaded metadata's, else
# the search index's, else a placeholder. Terms are validated decimal strings
# (shared/oeis/parsing.py) and need no escaping; the name goes through to_json.
_DOCUMENT = text(
    """
    UPDATE sequence_values AS v SET document = doc.body, etag = md5(doc.body)
    FROM (
        SELECT '{"id":"' || v.id || '","name":'
            || to_json(coalesce(s.name, e.name, :placeholder))::text || ',"values":{'
            || coalesce(string_agg('"' || (v.first_index + t.ord - 1) || '":"' || t.term || '"',
                                   ',' ORDER BY t.ord), '')
            || '}}' AS body
        FROM sequence_values AS v
        JOIN sequences AS s ON s.id = v.id
        LEFT JOIN search_entries AS e ON e.id = v.id
        LEFT JOIN LATERAL unnest(v.terms) WITH ORDINALITY AS t(term, ord) ON true
        WHERE v.id = :id
        GROUP BY v.id, s.name, e.name
    ) AS doc
    WHERE v.id = :id
    """
)


def refresh_document(session: Session, seq_id: str) -> None:
    """Rebuild a sequence's ready-made answer (after its terms or its name changed)."""
    session.execute(_DOCUMENT, {"id": seq_id, "placeholder": placeholder_name(seq_id)})


# Whether the stored terms are exactly the incoming ones (the b-file parsed again).
_SAME_TERMS = text(
    """
    SELECT v.first_index = :first_index
           AND v.terms = (SELECT array_agg(term ORDER BY position) FROM incoming_terms)
    FROM sequence_values AS v WHERE v.id = :id
    """
)

# Deletes the factorizations of every index whose term is new or changed (or gone):
# a factorization depends only on its term, so those of unchanged indices stay. The old
# terms are unnested once and joined to the incoming ones by index, so a long sequence
# is compared in one pass inside PostgreSQL.
_DROP_CHANGED_FACTORS = text(
    """
    DELETE FROM factorizations AS f
    WHERE f.id = :id AND f.n NOT IN (
        SELECT v.first_index + o.ord - 1
        FROM sequence_values AS v
        CROSS JOIN LATERAL unnest(v.terms) WITH ORDINALITY AS o(term, ord)
        JOIN incoming_terms AS i
            ON i.position = v.first_index + o.ord - 1 - :first_index AND i.term = o.term
        WHERE v.id = :id)
    """
)


def _write_values(session: Session, seq_id: str, bfile: BFile, token: int) -> str | None:
    """Write the terms under `token` unless values with a newer token are stored.

    Returns "new" (none were stored), "same" (identical: only the token and download
    time move, nothing is rewritten), "changed" (replaced; the factorizations of the
    changed indices are deleted) or None (refused). Locks the values row first (FOR
    UPDATE), so a factor batch checking the row under FOR SHARE (store_factors) either
    commits before this and is judged here, or sees the new values token afterwards
    and is refused. The terms are compared inside PostgreSQL, against
    `incoming_terms`, so a large sequence is never held twice in this process.
    """
    _copy_terms(session, bfile.terms)
    old_token = session.scalar(
        select(SequenceValues.token).where(SequenceValues.id == seq_id).with_for_update()
    )
    if old_token is not None:
        if old_token >= token:
            return None
        params = {"id": seq_id, "first_index": bfile.first_index}
        if session.scalar(_SAME_TERMS, params):
            session.execute(
                update(SequenceValues)
                .where(SequenceValues.id == seq_id)
                .values(token=token, fetched_at=func.now())
            )
            return "same"
        session.execute(_DROP_CHANGED_FACTORS, params)
    written = session.execute(
        _UPSERT_VALUES, {"id": seq_id, "first_index": bfile.first_index, "token": token}
    ).first()
    if written is None:
        return None
    # The factorizations kept (of unchanged terms) count again from the first index.
    _raise_factored_mark(session, seq_id, bfile.first_index)
    return "new" if old_token is None else "changed"


# Raises the factored-through mark to the end of the run of factored indices that
# starts at :start (the index right after the mark), if :start is factored: an ordered
# scan of the run, stopping at its first gap.
_RAISE_MARK = text(
    """
    UPDATE sequence_values AS v SET factored_through = least(
        v.first_index + v.term_count - 1,
        (SELECT f.n FROM factorizations AS f
         WHERE f.id = v.id AND f.n >= :start AND NOT EXISTS (
             SELECT 1 FROM factorizations AS g WHERE g.id = f.id AND g.n = f.n + 1)
         ORDER BY f.n LIMIT 1))
    WHERE v.id = :id AND EXISTS (
        SELECT 1 FROM factorizations AS f WHERE f.id = v.id AND f.n = :start)
    """
)


def _raise_factored_mark(session: Session, seq_id: str, start: int) -> None:
    session.execute(_RAISE_MARK, {"id": seq_id, "start": start})


def store_factors(
    session: Session,
    seq_id: str,
    values_token: int,
    factors: list[tuple[int, str]],
    token: int,
) -> bool:
    """Store (index, factorization) pairs computed from the values stored under
    `values_token`. Refused (False) after a clear or forget, or if those values have
    been replaced since; a row already written under a newer token is kept."""
    if not _guarded(session, seq_id, token):
        return _refused("factors", seq_id, token)
    # Locked for the mark's update (not FOR SHARE then UPDATE: two batches doing that at
    # once would deadlock); a refresh replacing the values waits, or is waited for.
    row = session.execute(
        select(SequenceValues.token, SequenceValues.first_index, SequenceValues.factored_through)
        .where(SequenceValues.id == seq_id)
        .with_for_update(key_share=True)
    ).first()
    current = None if row is None else row.token
    if current != values_token:
        log.info(
            "store.factors_values_changed",
            extra={"seq_id": seq_id, "values_token": values_token, "current": current},
        )
        return False
    if not factors:
        return True
    stmt = insert(Factorization).values(
        [{"id": seq_id, "n": n, "factors": f, "token": token} for n, f in factors]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[Factorization.id, Factorization.n],
        set_={
            "factors": stmt.excluded.factors,
            "token": stmt.excluded.token,
            "factored_at": func.now(),
        },
        where=Factorization.token < stmt.excluded.token,
    )
    session.execute(stmt)
    mark = row.factored_through
    _raise_factored_mark(session, seq_id, row.first_index if mark is None else mark + 1)
    return True


def _upsert_sequence(
    session: Session, seq_id: str, token_column: str, token: int, **values
) -> bool:
    stmt = insert(Sequence).values(id=seq_id, **{token_column: token}, **values)
    column = getattr(Sequence, token_column)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Sequence.id],
        set_={**values, token_column: token},
        where=column < token,
    )
    return session.execute(stmt.returning(Sequence.id)).first() is not None


# How long after an entry's modification time data fetched from the OEIS is taken to
# include that modification: more than a download can take (a task's time limit is 15
# minutes), plus clock differences, plus the second-resolution of the OEIS's times.
REVISION_MARGIN = timedelta(hours=1)


def covers(fetched_at: datetime, modified: datetime | None) -> bool:
    """Whether data fetched from the OEIS at `fetched_at` is known to include the entry's
    revision made at `modified`."""
    return modified is not None and fetched_at >= modified + REVISION_MARGIN


def _known_revision(session: Session, entry: Entry) -> int | None:
    """`entry`'s revision if the cached values (if any; else any values downloaded from
    now on) are known to be at least that revision, else None.

    Values fetched before the revision was made would otherwise pass for current: say
    the values were downloaded, the entry edited, and only then the name loaded.
    """
    if entry.revision is None:
        return None
    fetched = select(SequenceValues.fetched_at).where(SequenceValues.id == entry.id)
    since = session.scalar(select(func.coalesce(fetched.scalar_subquery(), func.now())))
    return entry.revision if covers(since, entry.modified) else None


def _metadata(entry: Entry, revision: int | None) -> dict[str, object]:
    """The columns an entry's metadata is stored in."""
    return {
        "name": entry.name,
        "offset": entry.offset,
        "xrefs": entry.xrefs,
        "keywords": entry.keywords,
        "author": entry.author,
        "revision": revision,
        "modified": entry.modified,
        "meta_fetched_at": func.now(),
    }


def store_metadata(session: Session, entry: Entry, token: int) -> bool:
    if not _guarded(session, entry.id, token):
        return _refused("metadata", entry.id, token)
    written = _upsert_sequence(
        session,
        entry.id,
        "meta_token",
        token,
        **_metadata(entry, _known_revision(session, entry)),
        missing_at=None,
    )
    if not written:
        return _refused("metadata", entry.id, token)
    refresh_document(session, entry.id)
    return True


@dataclass(frozen=True)
class RefreshState:
    """What a refresh compares with the OEIS's entry (read_refresh_state)."""

    revision: int | None  # see Sequence.revision
    values_fetched_at: datetime | None  # None: no values cached
    checked_age: float | None  # seconds since the last check; None: never checked

    def values_current(self, entry: Entry) -> bool:
        """Whether the cached values (if any) are known to be the OEIS's current ones:
        the entry's revision is the one recorded, or was made well before the values
        were downloaded. Otherwise the b-file must be downloaded to know."""
        if self.values_fetched_at is None:
            return True
        if entry.revision is not None and entry.revision == self.revision:
            return True
        return covers(self.values_fetched_at, entry.modified)


def read_refresh_state(session: Session, seq_id: str) -> RefreshState | None:
    """The sequence's refresh state; None unless its values or its metadata are cached."""
    row = session.execute(
        select(
            Sequence.revision,
            SequenceValues.fetched_at,
            func.extract("epoch", func.now() - Sequence.checked_at),
        )
        .outerjoin(SequenceValues, SequenceValues.id == Sequence.id)
        .where(
            Sequence.id == seq_id,
            or_(SequenceValues.id.is_not(None), Sequence.meta_fetched_at.is_not(None)),
        )
    ).first()
    if row is None:
        return None
    revision, fetched_at, age = row
    return RefreshState(revision, fetched_at, None if age is None else float(age))


_METADATA_FIELDS = ("name", "offset", "xrefs", "keywords", "author")


def store_refresh(session: Session, entry: Entry, bfile: BFile | None, token: int) -> str | None:
    """Store what a refresh found, in one fenced transaction: the terms of `bfile` if it
    was downloaded (after `entry`), the entry's metadata and revision, and the time of
    the check. Call it only when the cached values are current
    (RefreshState.values_current) or `bfile` holds the current ones.

    Returns "new_terms" (terms appended or corrected; their factorizations dropped),
    "new_metadata" (the name, offset, xrefs, keywords or author changed) or "unchanged";
    None when refused (the sequence was forgotten or the cache cleared since `token`
    was handed out, or newer values are stored): then the caller rolls back.
    """
    seq_id = entry.id
    if not _guarded(session, seq_id, token):
        return None
    # Locked so the metadata compared is the metadata replaced; FOR NO KEY UPDATE lets a
    # factor batch (values FOR SHARE, then this row FOR KEY SHARE) finish first.
    columns = [getattr(Sequence, field) for field in _METADATA_FIELDS]
    before = session.execute(
        select(Sequence.meta_fetched_at, *columns)
        .where(Sequence.id == seq_id)
        .with_for_update(key_share=True)
    ).first()
    if before is None:
        return None
    written = None if bfile is None else _write_values(session, seq_id, bfile, token)
    if bfile is not None and written is None:
        return None
    has_values = session.scalar(select(SequenceValues.id).where(SequenceValues.id == seq_id))
    revision = entry.revision if has_values else _known_revision(session, entry)
    # Newer metadata (a metadata task that took its lock after this refresh) is kept.
    metadata_written = _upsert_sequence(
        session, seq_id, "meta_token", token, **_metadata(entry, revision)
    )
    session.execute(
        update(Sequence)
        .where(Sequence.id == seq_id)
        .values(checked_at=func.now(), refresh_failures=0, refresh_retry_at=None)
    )
    new_terms = written in ("new", "changed")
    new_metadata = metadata_written and (
        before.meta_fetched_at is None
        or tuple(before)[1:] != tuple(getattr(entry, field) for field in _METADATA_FIELDS)
    )
    if new_terms or (metadata_written and before.name != entry.name):
        refresh_document(session, seq_id)
    if new_terms:
        return "new_terms"
    return "new_metadata" if new_metadata else "unchanged"


def store_refresh_failure(
    session: Session, seq_id: str, token: int, step: float, cap: float
) -> bool:
    """Count a failed refresh and put off the next try: after n failures in a row, by
    step * (2^(n-1) - 1) seconds (with the sweep interval as `step`: the next sweep,
    then every other sweep, every fourth, ...), at most `cap`. Nothing cached changes."""
    if not _guarded(session, seq_id, token):
        return _refused("refresh_failure", seq_id, token)
    session.execute(
        text(
            """
            UPDATE sequences SET
                refresh_failures = refresh_failures + 1,
                refresh_retry_at = now() + make_interval(secs => least(
                    :cap, :step * (power(2, least(refresh_failures, 40)) - 1)))
            WHERE id = :id
            """
        ),
        {"id": seq_id, "step": step, "cap": cap},
    )
    return True


def _cached() -> ColumnElement[bool]:
    """Sequences with something cached: values or metadata."""
    has_values = select(SequenceValues.id).where(SequenceValues.id == Sequence.id).exists()
    return or_(has_values, Sequence.meta_fetched_at.is_not(None))


def _checked_before(seconds: float) -> ColumnElement[bool]:
    """Last checked more than `seconds` ago, or never."""
    return or_(
        Sequence.checked_at.is_(None),
        Sequence.checked_at < func.now() - timedelta(seconds=seconds),
    )


def refresh_candidates(
    session: Session,
    older_than: float | None,
    limit: int | None = None,
    seq_ids: list[str] | None = None,
    backoff: bool = False,
) -> list[str]:
    """Cached sequences last checked more than `older_than` seconds ago or never (all
    of them when None), oldest first, at most `limit`; only those in `seq_ids` if given.
    With `backoff`, those whose failed refreshes put off the next try are left out."""
    query = select(Sequence.id).where(_cached())
    if older_than is not None:
        query = query.where(_checked_before(older_than))
    if seq_ids is not None:
        query = query.where(Sequence.id.in_(seq_ids))
    if backoff:
        query = query.where(
            or_(Sequence.refresh_retry_at.is_(None), Sequence.refresh_retry_at <= func.now())
        )
    query = query.order_by(Sequence.checked_at.asc().nulls_first(), Sequence.id).limit(limit)
    return list(session.scalars(query))


@dataclass(frozen=True)
class RefreshBacklog:
    unchecked: int  # cached sequences not checked for longer than asked (or never)
    failing: int  # cached sequences whose last refresh failed


def refresh_backlog(session: Session, older_than: float) -> RefreshBacklog:
    unchecked = func.count().filter(_checked_before(older_than))
    failing = func.count().filter(Sequence.refresh_failures > 0)
    row = session.execute(select(unchecked, failing).where(_cached())).one()
    return RefreshBacklog(*row)


def store_backrefs(session: Session, seq_id: str, backrefs: list[str], token: int) -> bool:
    if not _guarded(session, seq_id, token):
        return _refused("backrefs", seq_id, token)
    written = _upsert_sequence(
        session,
        seq_id,
        "backrefs_token",
        token,
        backrefs=backrefs,
        backrefs_fetched_at=func.now(),
    )
    return written or _refused("backrefs", seq_id, token)


def store_missing(session: Session, seq_id: str, token: int) -> bool:
    """Remember that the OEIS has no such sequence (see is_missing)."""
    if not _guarded(session, seq_id, token):
        return _refused("missing", seq_id, token)
    stmt = insert(Sequence).values(id=seq_id, missing_at=func.now())
    session.execute(
        stmt.on_conflict_do_update(index_elements=[Sequence.id], set_={"missing_at": func.now()})
    )
    return True


def store_search(session: Session, term: str, results: list[list[str]], token: int) -> bool:
    if not _guarded(session, None, token):
        return _refused("search", term, token)
    stmt = insert(SearchResult).values(term=term, results=results, token=token)
    stmt = stmt.on_conflict_do_update(
        index_elements=[SearchResult.term],
        set_={"results": stmt.excluded.results, "token": token, "fetched_at": func.now()},
        where=SearchResult.token < token,
    )
    return session.execute(stmt.returning(SearchResult.term)).first() is not None or _refused(
        "search", term, token
    )


def _raise_floor(session: Session, scope: str, token: int) -> None:
    stmt = insert(FenceFloor).values(scope=scope, token=token)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[FenceFloor.scope],
            set_={"token": func.greatest(FenceFloor.token, token)},
        )
    )


def clear_all(session: Session, token: int) -> None:
    """Delete every cached row (the search index too); writes with a token up to `token`
    are refused afterwards."""
    session.execute(select(func.pg_advisory_xact_lock(_WRITE_GUARD)))
    tables = ", ".join(
        table.name
        for table in (
            SearchEntry.__table__,
            SearchIndex.__table__,
            SearchResult.__table__,
            Factorization.__table__,
            SequenceValues.__table__,
            Sequence.__table__,
            FenceFloor.__table__,
        )
    )
    session.execute(text(f"TRUNCATE {tables}"))
    _raise_floor(session, "*", token)


def forget(session: Session, seq_ids: list[str], token: int) -> int:
    """Delete these sequences' cached data; stale in-flight writes for them are refused."""
    session.execute(select(func.pg_advisory_xact_lock(_WRITE_GUARD)))
    deleted = session.execute(delete(Sequence).where(Sequence.id.in_(seq_ids))).rowcount
    for seq_id in seq_ids:
        _raise_floor(session, seq_id, token)
    return deleted

"""Writing cached OEIS data, always fenced.

Every write carries the fencing token of the lock it was done under and is refused if
the stored data carries a newer token, or if the cache was cleared (or the sequence
forgotten) after the token was handed out. The check and the write happen in one
statement under a shared advisory lock that clearing takes exclusively, so a stalled
download that wakes up can never overwrite newer data or resurrect a clear.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

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
from shared.store.reads import placeholder_name

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key guarding writes against a concurrent clear/forget.
_WRITE_GUARD = 0x6261636B  # "back"


def guarded(session: Session, seq_id: str | None, token: int) -> bool:
    """Take the shared write guard; False if a clear or forget came after `token`."""
    session.execute(select(func.pg_advisory_xact_lock_shared(_WRITE_GUARD)))
    scopes = ["*"] if seq_id is None else ["*", seq_id]
    floor = session.scalar(select(func.max(FenceFloor.token)).where(FenceFloor.scope.in_(scopes)))
    return floor is None or token > floor


def refused(what: str, key: str, token: int) -> bool:
    log.warning("store.write_refused", extra={"what": what, "seq_id": key, "token": token})
    return False


def _ensure_sequence(session: Session, seq_id: str) -> None:
    session.execute(insert(Sequence).values(id=seq_id).on_conflict_do_nothing())


def store_values(session: Session, seq_id: str, bfile: BFile, token: int) -> bool:
    """Store a b-file's terms unless newer data is already stored. True if written."""
    if not guarded(session, seq_id, token):
        return refused("values", seq_id, token)
    _ensure_sequence(session, seq_id)
    written = write_values(session, seq_id, bfile, token)
    if written is None:
        return refused("values", seq_id, token)
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


def write_values(session: Session, seq_id: str, bfile: BFile, token: int) -> str | None:
    """Write the terms under `token` unless values with a newer token are stored.

    Returns "new" (none were stored), "same" (identical: only the token and download
    time move, nothing is rewritten), "changed" (replaced; the factorizations of the
    changed indices are deleted) or None (refused). Locks the values row first (FOR
    UPDATE), so a factor batch holding the row FOR NO KEY UPDATE (store_factors) either
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
    if not guarded(session, seq_id, token):
        return refused("factors", seq_id, token)
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


def upsert_sequence(session: Session, seq_id: str, token_column: str, token: int, **values) -> bool:
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


def known_revision(session: Session, entry: Entry) -> int | None:
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


def metadata_columns(entry: Entry, revision: int | None) -> dict[str, object]:
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
    if not guarded(session, entry.id, token):
        return refused("metadata", entry.id, token)
    written = upsert_sequence(
        session,
        entry.id,
        "meta_token",
        token,
        **metadata_columns(entry, known_revision(session, entry)),
        missing_at=None,
    )
    if not written:
        return refused("metadata", entry.id, token)
    refresh_document(session, entry.id)
    return True


def store_backrefs(session: Session, seq_id: str, backrefs: list[str], token: int) -> bool:
    if not guarded(session, seq_id, token):
        return refused("backrefs", seq_id, token)
    written = upsert_sequence(
        session,
        seq_id,
        "backrefs_token",
        token,
        backrefs=backrefs,
        backrefs_fetched_at=func.now(),
    )
    return written or refused("backrefs", seq_id, token)


def store_missing(session: Session, seq_id: str, token: int) -> bool:
    """Remember that the OEIS has no such sequence (see is_missing)."""
    if not guarded(session, seq_id, token):
        return refused("missing", seq_id, token)
    stmt = insert(Sequence).values(id=seq_id, missing_at=func.now())
    session.execute(
        stmt.on_conflict_do_update(index_elements=[Sequence.id], set_={"missing_at": func.now()})
    )
    return True


def store_search(session: Session, term: str, results: list[list[str]], token: int) -> bool:
    if not guarded(session, None, token):
        return refused("search", term, token)
    stmt = insert(SearchResult).values(term=term, results=results, token=token)
    stmt = stmt.on_conflict_do_update(
        index_elements=[SearchResult.term],
        set_={"results": stmt.excluded.results, "token": token, "fetched_at": func.now()},
        where=SearchResult.token < token,
    )
    return session.execute(stmt.returning(SearchResult.term)).first() is not None or refused(
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

"""Reading and writing cached OEIS data.

Every write is fenced: it carries the fencing token of the lock it was done under and
is refused if the stored data carries a newer token, or if the cache was cleared (or
the sequence forgotten) after the token was handed out. The check and the write happen
in one statement under a shared advisory lock that clearing takes exclusively, so a
stalled download that wakes up can never overwrite newer data or resurrect a clear.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.models import Factorization, FenceFloor, SearchResult, Sequence, SequenceValues
from shared.parsing import BFile, Entry

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key guarding writes against a concurrent clear/forget.
_WRITE_GUARD = 0x6261636B  # "back"


@dataclass(frozen=True)
class Values:
    id: str
    name: str | None
    first_index: int
    terms: list[str]


def read_values(session: Session, seq_id: str, count: int) -> Values | None:
    """The first `count` terms (all when 0) and the name, in one query."""
    terms = SequenceValues.terms if count == 0 else SequenceValues.terms[1:count]
    row = session.execute(
        select(SequenceValues.first_index, terms, Sequence.name)
        .join(Sequence, Sequence.id == SequenceValues.id)
        .where(SequenceValues.id == seq_id)
    ).first()
    if row is None:
        return None
    return Values(seq_id, row[2], row[0], row[1] or [])


@dataclass(frozen=True)
class Factors:
    id: str
    name: str | None
    first_index: int
    length: int  # how many terms were asked for (at most the sequence's length)
    factors: dict[int, str]  # index -> factorization, in index order, for those stored

    @property
    def complete(self) -> bool:
        return len(self.factors) == self.length


def read_factors(session: Session, seq_id: str, count: int) -> Factors | None:
    """The stored factorizations of the first `count` terms (all when 0); None if the
    sequence's values are not stored."""
    terms = SequenceValues.terms if count == 0 else SequenceValues.terms[1:count]
    row = session.execute(
        select(SequenceValues.first_index, func.cardinality(terms), Sequence.name)
        .join(Sequence, Sequence.id == SequenceValues.id)
        .where(SequenceValues.id == seq_id)
    ).first()
    if row is None:
        return None
    first, length, name = row[0], row[1] or 0, row[2]
    rows = session.execute(
        select(Factorization.n, Factorization.factors)
        .where(
            Factorization.id == seq_id,
            Factorization.n >= first,
            Factorization.n < first + length,
        )
        .order_by(Factorization.n)
    )
    return Factors(seq_id, name, first, length, {n: factors for n, factors in rows})


def factors_complete(session: Session, seq_id: str, first_index: int, length: int) -> bool:
    """Whether the terms first_index .. first_index + length - 1 all have a factorization."""
    stored = session.scalar(
        select(func.count())
        .select_from(Factorization)
        .where(
            Factorization.id == seq_id,
            Factorization.n >= first_index,
            Factorization.n < first_index + length,
        )
    )
    return stored == length


def factored_indices(session: Session, seq_id: str) -> set[int]:
    return set(session.scalars(select(Factorization.n).where(Factorization.id == seq_id)))


def read_sequence(session: Session, seq_id: str) -> Sequence | None:
    return session.get(Sequence, seq_id)


def read_search(session: Session, term: str) -> list[list[str]] | None:
    return session.scalar(select(SearchResult.results).where(SearchResult.term == term))


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
    _drop_stale_factors(session, seq_id, bfile, token)
    stmt = insert(SequenceValues).values(
        id=seq_id, first_index=bfile.first_index, terms=bfile.terms, token=token
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[SequenceValues.id],
        set_={
            "first_index": stmt.excluded.first_index,
            "terms": stmt.excluded.terms,
            "token": stmt.excluded.token,
            "fetched_at": func.now(),
        },
        where=SequenceValues.token < stmt.excluded.token,
    )
    if session.execute(stmt.returning(SequenceValues.id)).first() is None:
        return _refused("values", seq_id, token)
    session.execute(
        Sequence.__table__.update().where(Sequence.id == seq_id).values(missing_at=None)
    )
    return True


def _drop_stale_factors(session: Session, seq_id: str, bfile: BFile, token: int) -> None:
    """Before older values are replaced by different ones, delete their factorizations.

    Locks the values row first (FOR UPDATE), so a factor batch checking the row under
    FOR SHARE (store_factors) either commits before this and is deleted here, or sees
    the new values token afterwards and is refused. Replacing values is rare (two
    downloads racing), and then usually with the same terms: those keep their factors.
    """
    old = session.execute(
        select(SequenceValues.token, SequenceValues.first_index)
        .where(SequenceValues.id == seq_id)
        .with_for_update()
    ).first()
    if old is None or old.token >= token:
        return  # nothing stored, or the upsert below will not replace it
    terms = session.scalar(select(SequenceValues.terms).where(SequenceValues.id == seq_id))
    if old.first_index != bfile.first_index or terms != bfile.terms:
        session.execute(delete(Factorization).where(Factorization.id == seq_id))


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
    current = session.scalar(
        select(SequenceValues.token).where(SequenceValues.id == seq_id).with_for_update(read=True)
    )
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


def store_metadata(session: Session, entry: Entry, token: int) -> bool:
    if not _guarded(session, entry.id, token):
        return _refused("metadata", entry.id, token)
    written = _upsert_sequence(
        session,
        entry.id,
        "meta_token",
        token,
        name=entry.name,
        offset=entry.offset,
        xrefs=entry.xrefs,
        keywords=entry.keywords,
        author=entry.author,
        meta_fetched_at=func.now(),
        missing_at=None,
    )
    return written or _refused("metadata", entry.id, token)


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
    """Delete every cached row; writes with a token up to `token` are refused afterwards."""
    session.execute(select(func.pg_advisory_xact_lock(_WRITE_GUARD)))
    tables = ", ".join(
        table.name
        for table in (
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

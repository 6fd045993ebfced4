"""Following the OEIS: what a refresh compares, what it stores (fenced, in one
transaction, like every write: shared/store/writes.py), and which sequences are due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, or_, select, text, update
from sqlalchemy.orm import Session

from shared.models import Sequence, SequenceValues
from shared.oeis.parsing import BFile, Entry
from shared.store.writes import (
    covers,
    guarded,
    known_revision,
    metadata_columns,
    refresh_document,
    refused,
    upsert_sequence,
    write_values,
)


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
    if not guarded(session, seq_id, token):
        return None
    # Locked so the metadata compared is the metadata replaced; FOR NO KEY UPDATE lets a
    # factor batch (values FOR NO KEY UPDATE, then this row FOR KEY SHARE) finish first.
    columns = [getattr(Sequence, field) for field in _METADATA_FIELDS]
    before = session.execute(
        select(Sequence.meta_fetched_at, *columns)
        .where(Sequence.id == seq_id)
        .with_for_update(key_share=True)
    ).first()
    if before is None:
        return None
    written = None if bfile is None else write_values(session, seq_id, bfile, token)
    if bfile is not None and written is None:
        return None
    has_values = session.scalar(select(SequenceValues.id).where(SequenceValues.id == seq_id))
    revision = entry.revision if has_values else known_revision(session, entry)
    # Newer metadata (a metadata task that took its lock after this refresh) is kept.
    metadata_written = upsert_sequence(
        session, seq_id, "meta_token", token, **metadata_columns(entry, revision)
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
    if not guarded(session, seq_id, token):
        return refused("refresh_failure", seq_id, token)
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


def _has_cached_data() -> ColumnElement[bool]:
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
    query = select(Sequence.id).where(_has_cached_data())
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
    row = session.execute(select(unchecked, failing).where(_has_cached_data())).one()
    return RefreshBacklog(*row)

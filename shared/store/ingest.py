"""Download, parse and store: the body of each download task, with no Celery in sight.

Each function is idempotent and writes in one transaction; `token` is the fencing token
of the lock the caller holds. They return a short outcome for the task's result:
"stored", "cached" (nothing to do), "missing" (the OEIS has no such sequence) or
"refused" (newer data is stored, or the cache was cleared meanwhile); `refresh` has
outcomes of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db import session_scope
from shared.errors import BackscopeError, NotFound, Superseded
from shared.models import SearchEntry, Sequence, SequenceValues
from shared.oeis.client import OEISClient
from shared.oeis.parsing import Entry
from shared.store.revisions import read_refresh_state, store_refresh, store_refresh_failure
from shared.store.writes import (
    store_backrefs,
    store_metadata,
    store_missing,
    store_search,
    store_values,
)

log = logging.getLogger(__name__)

SEARCH_RESULTS = 10

T = TypeVar("T")


class MetadataSource(Protocol):
    """Where names, xrefs and back-references come from: the OEIS web site
    (shared.oeis.client.OEISClient) or a local oeisdata checkout (shared.oeis.local.LocalOEIS)."""

    def entry(self, seq_id: str) -> Entry: ...

    def mentions(self, seq_id: str, max_pages: int) -> tuple[list[str], bool]: ...


class IndexedMetadata:
    """Names, offsets, xrefs, keywords and authors from the local search index when it
    was built from an oeisdata checkout (it has them all), else from `fallback`; back-
    references always from `fallback`."""

    def __init__(self, fallback: MetadataSource) -> None:
        self.fallback = fallback

    def entry(self, seq_id: str) -> Entry:
        with session_scope() as session:
            row = session.get(SearchEntry, seq_id)
        if row is None or row.xrefs is None:  # not indexed, or from the bulk files
            return self.fallback.entry(seq_id)
        return Entry(
            id=row.id,
            name=row.name,
            offset=row.offset,
            xrefs=row.xrefs,
            keywords=row.keywords or "",
            author=row.author or "",
            revision=row.revision,
            modified=row.modified,
        )

    def mentions(self, seq_id: str, max_pages: int) -> tuple[list[str], bool]:
        return self.fallback.mentions(seq_id, max_pages)


def _ingest(
    seq_id: str | None,
    token: int,
    cached: Callable[[Session], bool] | None,
    download: Callable[[], T],
    store: Callable[[Session, T, int], bool],
) -> str:
    """Check the cache (when `cached` is given), download, store under `token` (rolled
    back if refused).

    A NotFound from `download` is remembered for `seq_id`, so repeated requests for a
    sequence the OEIS does not have stay off the OEIS for a while.
    """
    if cached is not None:
        with session_scope() as session:
            if cached(session):
                return "cached"
    try:
        data = download()
    except NotFound:
        if seq_id is None:
            raise
        with session_scope() as session:
            store_missing(session, seq_id, token)
        log.info("ingest.missing", extra={"seq_id": seq_id})
        return "missing"
    with session_scope() as session:
        if not store(session, data, token):
            session.rollback()
            return "refused"
    return "stored"


def _sequence_has(column: str, seq_id: str) -> Callable[[Session], bool]:
    def cached(session: Session) -> bool:
        found = select(Sequence.id).where(
            Sequence.id == seq_id, getattr(Sequence, column).is_not(None)
        )
        return session.scalar(found) is not None

    return cached


def has_values(session: Session, seq_id: str) -> bool:
    """Whether the sequence's values are stored: one index probe, no row read (a
    prefetch over a cached range asks this of every sequence)."""
    found = select(SequenceValues.id).where(SequenceValues.id == seq_id)
    return session.scalar(found) is not None


def download_values(client: OEISClient, seq_id: str, token: int) -> str:
    def store(session: Session, bfile, token: int) -> bool:
        stored = store_values(session, seq_id, bfile, token)
        if stored:
            log.info("ingest.values_stored", extra={"seq_id": seq_id, "terms": len(bfile.terms)})
        return stored

    return _ingest(
        seq_id,
        token,
        lambda session: has_values(session, seq_id),
        lambda: client.bfile(seq_id),
        store,
    )


def download_metadata(source: MetadataSource, seq_id: str, token: int) -> str:
    return _ingest(
        seq_id,
        token,
        _sequence_has("meta_fetched_at", seq_id),
        lambda: source.entry(seq_id),
        store_metadata,
    )


def download_backrefs(source: MetadataSource, seq_id: str, token: int, max_pages: int) -> str:
    def download() -> list[str]:
        backrefs, complete = source.mentions(seq_id, max_pages)
        if not complete:
            log.warning("ingest.backrefs_truncated", extra={"seq_id": seq_id, "pages": max_pages})
        return backrefs

    return _ingest(
        seq_id,
        token,
        _sequence_has("backrefs_fetched_at", seq_id),
        download,
        lambda session, backrefs, token: store_backrefs(session, seq_id, backrefs, token),
    )


def download_search(
    client: OEISClient, term: str, token: int, wanted: Callable[[], bool] | None = None
) -> str:
    """Search the OEIS for `term` and store the first page; "superseded" (nothing
    sent, nothing stored) when `wanted()` says nobody would see the answer."""

    def download() -> list[list[str]]:
        found = client.search(term, wanted=wanted)
        return [[entry.id, entry.name] for entry in found[:SEARCH_RESULTS]]

    try:
        return _ingest(
            None,
            token,
            None,
            download,
            lambda session, results, token: store_search(session, term, results, token),
        )
    except Superseded:
        log.info("ingest.search_superseded", extra={"term": term[:80]})
        return "superseded"


@dataclass(frozen=True)
class Backoff:
    """How a sequence's next refresh is put off after failures (store_refresh_failure)."""

    step: float
    cap: float


@dataclass(frozen=True)
class Refreshed:
    # "new_terms", "new_metadata" or "unchanged" (stored); "failed" (the cached data is
    # kept as it was, `error` says why); "recent" (checked less than max_age seconds
    # ago); "not_cached"; "refused" (forgotten or cleared meanwhile).
    outcome: str
    error: str | None = None


def refresh(
    client: OEISClient,
    source: MetadataSource,
    seq_id: str,
    token: int,
    max_age: float,
    backoff: Backoff,
) -> Refreshed:
    """Check what is cached for `seq_id` against the OEIS and store what changed.

    One metadata request (none with a local oeisdata source) says whether the cached
    values are still current (shared.store.RefreshState.values_current); only when
    they may not be is the b-file downloaded again. Nothing cached is touched until the
    new data is stored in one fenced transaction, so requests meanwhile get the old
    data; a failure stores nothing but the backoff.
    """
    with session_scope() as session:
        state = read_refresh_state(session, seq_id)
    if state is None:
        return Refreshed("not_cached")
    if state.checked_age is not None and state.checked_age < max_age:
        return Refreshed("recent")
    try:
        entry = source.entry(seq_id)
        bfile = None if state.values_current(entry) else client.bfile(seq_id)
    except BackscopeError as exc:
        with session_scope() as session:
            store_refresh_failure(session, seq_id, token, backoff.step, backoff.cap)
        log.warning("refresh.failed", extra={"seq_id": seq_id, "error": str(exc)})
        return Refreshed("failed", str(exc))
    with session_scope() as session:
        outcome = store_refresh(session, entry, bfile, token)
        if outcome is None:
            session.rollback()
            log.warning("store.write_refused", extra={"what": "refresh", "seq_id": seq_id})
            return Refreshed("refused")
    log.info(
        "refresh.checked",
        extra={
            "seq_id": seq_id,
            "outcome": outcome,
            "revision": entry.revision,
            "bfile": bfile is not None,
        },
    )
    return Refreshed(outcome)

"""Download, parse and store: the body of each fetch task, with no Celery in sight.

Each function is idempotent and writes in one transaction; `token` is the fencing token
of the lock the caller holds. They return a short outcome for the task's result.
"""

from __future__ import annotations

import logging
from typing import Protocol

from shared.db import session_scope
from shared.errors import NotFound
from shared.models import Sequence, SequenceValues
from shared.oeis import OEISClient
from shared.parsing import Entry
from shared.store import (
    store_backrefs,
    store_metadata,
    store_missing,
    store_search,
    store_values,
)

log = logging.getLogger(__name__)

SEARCH_RESULTS = 10


class MetadataSource(Protocol):
    """Where names, xrefs and back-references come from: the OEIS web site
    (shared.oeis.OEISClient) or a local oeisdata checkout (shared.oeisdata.LocalOEIS)."""

    def entry(self, seq_id: str) -> Entry: ...

    def mentions(self, seq_id: str, max_pages: int) -> tuple[list[str], bool]: ...


def _missing(seq_id: str, token: int) -> str:
    with session_scope() as session:
        store_missing(session, seq_id, token)
    log.info("fetch.missing", extra={"seq_id": seq_id})
    return "missing"


def fetch_values(client: OEISClient, seq_id: str, token: int) -> str:
    with session_scope() as session:
        if session.get(SequenceValues, seq_id) is not None:
            return "cached"
    try:
        bfile = client.bfile(seq_id)
    except NotFound:
        return _missing(seq_id, token)
    with session_scope() as session:
        if not store_values(session, seq_id, bfile, token):
            session.rollback()
            return "refused"
    log.info("fetch.values_stored", extra={"seq_id": seq_id, "terms": len(bfile.terms)})
    return "stored"


def fetch_metadata(source: MetadataSource, seq_id: str, token: int) -> str:
    with session_scope() as session:
        sequence = session.get(Sequence, seq_id)
        if sequence is not None and sequence.meta_fetched_at is not None:
            return "cached"
    try:
        entry = source.entry(seq_id)
    except NotFound:
        return _missing(seq_id, token)
    with session_scope() as session:
        if not store_metadata(session, entry, token):
            session.rollback()
            return "refused"
    return "stored"


def fetch_backrefs(source: MetadataSource, seq_id: str, token: int, max_pages: int) -> str:
    with session_scope() as session:
        sequence = session.get(Sequence, seq_id)
        if sequence is not None and sequence.backrefs_fetched_at is not None:
            return "cached"
    backrefs, complete = source.mentions(seq_id, max_pages)
    if not complete:
        log.warning("fetch.backrefs_truncated", extra={"seq_id": seq_id, "pages": max_pages})
    with session_scope() as session:
        if not store_backrefs(session, seq_id, backrefs, token):
            session.rollback()
            return "refused"
    return "stored"


def run_search(client: OEISClient, term: str, token: int) -> str:
    entries = client.search(term)[:SEARCH_RESULTS]
    results = [[entry.id, entry.name] for entry in entries]
    with session_scope() as session:
        if not store_search(session, term, results, token):
            session.rollback()
            return "refused"
    return "stored"

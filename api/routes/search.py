"""A search of the OEIS: from the local index when one is built, else from the OEIS
(the search is worked on, and its results cached, by the workers)."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from time import time

from flask import Response
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from api.caches import search_reads
from api.clients import client_address
from api.errors import BadRequest, ChangedMeanwhile
from api.jobs import Pending, obtain
from api.responses import send_json
from shared.config import get_settings
from shared.errors import Superseded, UpstreamUnavailable
from shared.redis_db import get_redis
from shared.search import interest
from shared.store.reads import Document, read_search, search_key
from shared.work.units import Work, search_work

MAX_TERM = 200
# Seconds after which a search answered 503 may be tried again.
SEARCH_RETRY = 2


def check_term(term: str) -> None:
    """Raise BadRequest unless `term` is something to search for."""
    if len(term) > MAX_TERM:
        raise BadRequest(f"search terms are limited to {MAX_TERM} characters")
    if not term.strip():
        raise BadRequest("the search term is empty")
    if any(unicodedata.category(char) == "Cc" for char in term):
        raise BadRequest("the search term contains control characters")


def _search_upstream(key: str) -> Document:
    """The OEIS's results for `key` (no index has been built): cached, or searched
    for. Never a 202, which the front end's search bar cannot show: when the search
    is not done within BACKSCOPE_SEARCH_WAIT, a 503 says to try again, and a search
    that the same client's newer search superseded is answered so at once."""
    client, redis = client_address(), get_redis("locks")
    try:
        interest.ask(redis, client, key)
    except RedisError as exc:
        raise UpstreamUnavailable("the work queue is unavailable right now", 30) from exc

    def read(session: Session) -> bool | list[Work]:
        if read_search(session, key, get_settings().search_ttl) is not None:
            return True
        if not interest.is_latest(redis, client, key):
            raise Superseded("you have searched for something else since", SEARCH_RETRY)
        return [search_work(key)]

    try:
        obtain(read, wait_seconds=get_settings().search_wait)
    except Pending:
        raise UpstreamUnavailable(
            "the OEIS search is taking long; please try again", SEARCH_RETRY
        ) from None
    document = search_reads.get(key)
    if document is None:
        raise ChangedMeanwhile()
    return document


def search_oeis(term: str) -> Response:
    """Up to 10 results: from the local index when one is built, else from the OEIS."""
    check_term(term)
    key = search_key(term)
    document = search_reads.get(key)
    if document is not None and document.expires <= time():
        search_reads.changed(key)
        document = None
    if document is None:
        document = _search_upstream(key)
    # The term is echoed as given; the results are the document shared by every
    # spelling of the same search.
    quoted = json.dumps(term, ensure_ascii=False).encode()
    body = b'{"term":' + quoted + b',"results":' + document.body + b"}"
    tag = f"{document.etag}-{hashlib.md5(quoted).hexdigest()[:12]}"
    return send_json(tag, body, None, final=True)

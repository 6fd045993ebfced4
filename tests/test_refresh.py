"""Cached sequences follow the OEIS: what is cached is known by its OEIS revision."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from shared.db import session_scope
from shared.lock import current_fence
from shared.models import Sequence
from shared.parsing import BFile, Entry
from shared.redis_db import get_redis
from shared.store import REVISION_MARGIN, store_metadata, store_values

SEQ = "A900005"  # a(n) = Fibonacci(n) + 5, n = 0..19: quick to download and to factor

_last_token = 0


def token() -> int:
    """A fencing token newer than any handed out so far (here or by the lock)."""
    global _last_token
    _last_token = max(_last_token, current_fence(get_redis("locks"))) + 1
    return _last_token


def sequence(seq_id: str) -> Sequence | None:
    with session_scope() as session:
        return session.get(Sequence, seq_id)


# ------------------------------------------------------------------ the store


def test_a_revision_is_recorded_only_when_the_values_include_it(database) -> None:
    """Values downloaded before an edit must not pass for that revision's (say the
    name was loaded only after the edit): then the revision stays unknown, and the
    next check downloads the b-file."""
    now = datetime.now(UTC)
    old = Entry(SEQ, "Old name", 0, [], "nonn", "", revision=7, modified=now - 2 * REVISION_MARGIN)
    with session_scope() as session:
        assert store_values(session, SEQ, BFile(0, ["5", "6"]), token())
        assert store_metadata(session, old, token())
    assert (sequence(SEQ).revision, sequence(SEQ).modified) == (7, old.modified)
    edited = dataclasses.replace(old, revision=8, modified=now - timedelta(minutes=1))
    with session_scope() as session:
        assert store_metadata(session, edited, token())
    assert (sequence(SEQ).revision, sequence(SEQ).modified) == (None, edited.modified)
    # Without values: any downloaded from now on include a revision made long enough ago.
    with session_scope() as session:
        session.execute(text("DELETE FROM sequence_values"))
        assert store_metadata(session, old, token())
    assert sequence(SEQ).revision == 7
    with session_scope() as session:
        assert store_metadata(session, edited, token())
    assert sequence(SEQ).revision is None

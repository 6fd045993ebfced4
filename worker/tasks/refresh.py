"""Following the OEIS: beat's refresh sweep, and the check of one cached sequence.

The sweep (every BACKSCOPE_REFRESH_INTERVAL seconds) queues a check of at most
BACKSCOPE_REFRESH_BATCH cached sequences last checked more than BACKSCOPE_REFRESH_AFTER
seconds ago, oldest first, as bulk work: a worker takes one only when no request is
waiting, and every OEIS request it makes goes through the global rate limit.
"""

from __future__ import annotations

import logging

from celery import Task

from shared.config import get_settings
from shared.db import session_scope
from shared.store import ingest
from shared.store.revisions import refresh_candidates
from shared.work.queue import BULK, app, schedule, start
from shared.work.units import factors_work, refresh_work
from worker.tasks.download import live_source, oeis_client
from worker.tasks.locked import run_locked

log = logging.getLogger(__name__)


@app.task(name="backscope.refresh_sequence", bind=True)
def refresh_sequence(self: Task, seq_id: str, max_age: int = 0) -> dict[str, str]:
    """Check `seq_id` against the OEIS unless it was checked in the last `max_age`
    seconds (a sweep's check queued twice runs once)."""
    settings = get_settings()
    backoff = ingest.Backoff(step=settings.refresh_interval, cap=settings.refresh_after)
    found: list[ingest.Refreshed] = []

    def body(token: int) -> str:
        found.append(ingest.refresh(oeis_client(), live_source(), seq_id, token, max_age, backoff))
        return found[-1].outcome

    # Upstream faults do not reach run_locked (they are failures to back off from, not
    # to retry at once): the check is simply tried again at a later sweep.
    result = run_locked(self, refresh_work(seq_id, max_age), body)
    if found and found[-1].error:
        result["error"] = found[-1].error
    if result["outcome"] == "new_terms":
        # Changed and appended terms lost their factorizations; factor them again.
        schedule(factors_work(seq_id))
    return result


@app.task(name="backscope.refresh_sweep")
def refresh_sweep() -> dict[str, str]:
    """Queue checks of the cached sequences that are due; sequence id -> task id."""
    settings = get_settings()
    if settings.refresh_batch == 0:
        return {}
    with session_scope() as session:
        due = refresh_candidates(
            session, settings.refresh_after, settings.refresh_batch, backoff=True
        )
    queued = {seq_id: start(refresh_work(seq_id, settings.refresh_after), BULK) for seq_id in due}
    log.info("refresh.sweep", extra={"queued": len(queued)})
    return queued

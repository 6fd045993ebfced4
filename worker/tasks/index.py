"""Keeping the local search index current: beat's task, and the same on request.

Beat sends it every BACKSCOPE_INDEX_INTERVAL seconds, and once when beat starts (a new
deployment gets its index at once); it builds only when the index is older than that,
so the start-up run costs nothing on a stack whose index is current. The build itself
is shared/search/indexer.py, under a work lock, with the polite retries of every download.
"""

from __future__ import annotations

from celery import Task

from shared.config import get_settings
from shared.db import session_scope
from shared.search import indexer
from shared.work.queue import app
from shared.work.units import index_work
from worker.tasks.download import oeis_client
from worker.tasks.locked import run_locked


def _build(full: bool) -> str:
    try:
        result = indexer.build(get_settings(), oeis_client(), full=full)
    except indexer.IndexBusy:
        return "skipped"
    return "stored" if result.added or result.changed or result.removed else "unchanged"


@app.task(name="backscope.maintenance.update_index", bind=True)
def update_index(self: Task, max_age: float = 0, full: bool = False) -> dict[str, str]:
    """Build or update the index, unless a build finished less than `max_age` seconds
    ago (0: always)."""
    if max_age:
        with session_scope() as session:
            state = indexer.status(session)
        if state is not None and state.age < max_age:
            return {"outcome": "recent"}
    return run_locked(self, index_work(), lambda token: _build(full))

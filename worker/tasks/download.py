"""Download tasks: each one locks its unit of work and calls shared.store.ingest."""

from __future__ import annotations

from functools import cache

from celery import Task

from shared.config import get_settings
from shared.oeis.client import OEISClient
from shared.oeis.local import LocalOEIS
from shared.oeis.ratelimit import RateLimiter
from shared.redis_db import get_redis
from shared.search import interest
from shared.store import ingest
from shared.work.queue import app, schedule
from shared.work.units import backrefs_work, factors_work, metadata_work, search_work, values_work
from worker.tasks.locked import run_locked


@cache
def oeis_client() -> OEISClient:
    """One client per worker process, so connections to the OEIS are kept alive."""
    settings = get_settings()
    return OEISClient(settings, RateLimiter(get_redis("ratelimit"), settings.oeis_rate))


def live_source() -> ingest.MetadataSource:
    """The local oeisdata checkout when one is configured, else the OEIS web site: what
    a refresh compares the cached data with."""
    settings = get_settings()
    if settings.oeisdata_dir:
        return LocalOEIS(settings.oeisdata_dir)
    return oeis_client()


def metadata_source() -> ingest.MetadataSource:
    """The search index when it holds the entry's metadata (built from oeisdata), else
    the live source."""
    return ingest.IndexedMetadata(live_source())


@app.task(name="backscope.fetch_values", bind=True)
def fetch_values(self: Task, seq_id: str) -> dict[str, str]:
    result = run_locked(
        self,
        values_work(seq_id),
        lambda token: ingest.download_values(oeis_client(), seq_id, token),
    )
    if result["outcome"] == "stored":
        # Factor the new terms in the background, on the factors queue (as the old
        # Backscope did after every download); the lock is released by now.
        schedule(factors_work(seq_id))
    return result


@app.task(name="backscope.fetch_metadata", bind=True)
def fetch_metadata(self: Task, seq_id: str) -> dict[str, str]:
    return run_locked(
        self,
        metadata_work(seq_id),
        lambda token: ingest.download_metadata(metadata_source(), seq_id, token),
    )


@app.task(name="backscope.fetch_backrefs", bind=True)
def fetch_backrefs(self: Task, seq_id: str) -> dict[str, str]:
    pages = get_settings().backref_max_pages
    return run_locked(
        self,
        backrefs_work(seq_id),
        lambda token: ingest.download_backrefs(metadata_source(), seq_id, token, pages),
    )


@app.task(name="backscope.run_search", bind=True)
def run_search(self: Task, term: str) -> dict[str, str]:
    """Search the OEIS, unless everyone who asked has searched for something newer."""

    def wanted() -> bool:
        return interest.wanted(get_redis("locks"), term)

    return run_locked(
        self,
        search_work(term),
        lambda token: ingest.download_search(oeis_client(), term, token, wanted),
    )

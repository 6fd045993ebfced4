"""`backscope status`: revision, cache, refresh backlog, index, queues, workers, locks."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import click
from redis.exceptions import RedisError

from cli.common import command_settings, count, duration, period
from cli.index import SOURCES
from shared.admin import cache as cache_admin
from shared.config import redacted
from shared.redis_db import get_redis
from shared.store.revisions import RefreshBacklog
from shared.work.lock import list_locks


def _index_status(state: Any) -> str:
    if state is None:
        return "none: searches go to the OEIS (`backscope index` builds the index)"
    when = state.built_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    entries = count(state.entries, "entry", "entries")
    return (
        f"{entries} from {SOURCES[state.source]} {state.location},"
        f" built {when} ({duration(state.age)} ago) in {duration(state.seconds)},"
        f" {state.changed} changed"
    )


def _revision(db: cache_admin.DatabaseStatus) -> str:
    if db.error:
        hint = " (`backscope migrate` creates it)" if "does not exist" in db.error else ""
        return f"cannot read it: {db.error}{hint}"
    if db.revision is None:
        return f"none; the database is empty (`backscope migrate` builds it to {db.head})"
    if db.revision == db.head:
        return f"{db.revision} (the head: up to date)"
    return (
        f"{db.revision}, not the head {db.head}: `backscope migrate` upgrades it, "
        "`backscope reset-db` rebuilds it if migrate cannot"
    )


def _refresh_backlog(backlog: RefreshBacklog, refresh_after: int) -> str:
    older = period(refresh_after)
    text = f"{backlog.unchecked} not checked for over {older} (BACKSCOPE_REFRESH_AFTER)"
    if backlog.failing:
        text += f", {backlog.failing} failing"
    if backlog.unchecked:
        text += f"; `backscope refresh --older-than {older}` checks them now"
    return text


def _workers(hosts: set[str]) -> str:
    if not hosts:
        return "none answering (`make worker` starts one)"
    return f"{len(hosts)} answering: {', '.join(sorted(hosts))}"


@click.command()
def status() -> None:
    """Show revision, cache, queues, workers, locks.

    The database's migration revision against the code's head, how many sequences
    are cached, how many of them were not checked against the OEIS for longer than
    BACKSCOPE_REFRESH_AFTER, what the search index holds (from which source, built
    when), how many tasks wait in each queue, which workers answer a ping, and how
    many locks are held.
    """
    settings = command_settings()
    db = cache_admin.database_status(settings.database_url, settings.refresh_after)
    rows = [("postgres", db.description), ("revision", _revision(db))]
    if db.revision:
        rows.append(("cached", f"{count(db.sequences, 'sequence')}, {db.with_values} with values"))
    if db.refresh is not None:
        rows.append(("refresh", _refresh_backlog(db.refresh, settings.refresh_after)))
    if db.revision == db.head:
        from shared.db import session_scope
        from shared.search import indexer

        with session_scope() as session:
            rows.append(("index", _index_status(indexer.status(session))))
    client = get_redis("locks")
    try:
        client.ping()
    except RedisError as exc:
        rows.append(("redis", f"cannot reach {redacted(settings.redis_url)}: {exc}"))
    else:
        from shared.admin.queue import live_workers, queue_lengths

        held = list_locks(client)
        rows += [
            ("redis", redacted(settings.redis_url)),
            ("queues", ", ".join(f"{name} {n}" for name, n in queue_lengths().items())),
            ("workers", _workers(live_workers())),
            ("locks", f"{len(held)} held" + (" (`backscope locks` lists them)" if held else "")),
        ]
    for label, text in rows:
        click.echo(f"{label:<10}{text}")

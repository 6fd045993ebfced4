"""`backscope index`: build, update or remove the local search index, with a progress
bar per phase (the building itself: shared/search/indexer.py)."""

from __future__ import annotations

from typing import Any

import click

from cli.common import command_settings, confirm, count, duration, yes_option
from shared.config import INDEX_SOURCES
from shared.errors import BackscopeError
from shared.redis_db import get_redis


class _Bars:
    """One progress bar per phase of a build (shared/search/indexer.py: Progress)."""

    def __init__(self) -> None:
        self.phase: str | None = None
        self.bar: Any = None
        self.shown = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not total:  # a count without an end ("changed"): no bar
            return
        if phase != self.phase:
            self.close()
            self.phase, self.shown = phase, 0
            self.bar = click.progressbar(length=total, label=f"{phase:<20}", show_pos=True)
            self.bar.__enter__()
        self.bar.length = max(total, done, 1)
        if done > self.shown:
            self.bar.update(done - self.shown)
            self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


# How each source of the index reads, in this command's summary and in `backscope status`.
SOURCES = {
    "bulk": "the bulk files (names.gz, stripped.gz) of",
    "oeisdata": "the oeisdata checkout",
}


@click.command()
@click.option(
    "--source",
    type=click.Choice(INDEX_SOURCES),
    help="Build from the OEIS's bulk files or the oeisdata checkout (default: "
    "BACKSCOPE_INDEX_SOURCE; auto is the checkout when BACKSCOPE_OEISDATA_DIR is set).",
)
@click.option("--full", is_flag=True, help="Read and rewrite every entry, changed or not.")
@click.option("--remove", is_flag=True, help="Delete the index: searches go to the OEIS again.")
@yes_option
def index(source: str | None, full: bool, remove: bool, yes: bool) -> None:
    """Build or update the local search index of the whole OEIS.

    Searches (and the names of sequences) are then answered from PostgreSQL with no
    OEIS request. From the bulk files it costs two downloads (about 40 MB), none when
    they have not changed since the last build; from an oeisdata checkout, none. Only
    what changed since the last build is written, in one transaction: a build that
    fails leaves the previous index serving. Beat runs it every
    BACKSCOPE_INDEX_INTERVAL seconds.
    """
    settings = command_settings()
    from shared.db import session_scope
    from shared.oeis.client import OEISClient
    from shared.oeis.ratelimit import RateLimiter
    from shared.search import indexer

    if remove:
        confirm(settings, "delete the search index in {db}", yes)
        with session_scope() as session:
            removed = indexer.remove(session)
        click.echo(f"Removed the search index ({count(removed, 'entry', 'entries')}).")
        return
    chosen = indexer.source_of(settings, source)
    if chosen == "oeisdata" and settings.oeisdata_dir is None:
        raise click.UsageError("--source oeisdata needs BACKSCOPE_OEISDATA_DIR")
    client = OEISClient(settings, RateLimiter(get_redis("ratelimit"), settings.oeis_rate))
    bars = _Bars()
    try:
        result = indexer.build(settings, client, chosen, full, bars)
    except (indexer.IndexBusy, BackscopeError) as exc:
        raise click.ClickException(f"{exc}; the index is as it was") from exc
    finally:
        bars.close()
    entries = count(result.entries, "entry", "entries")
    where = f"{SOURCES[result.source]} {result.location}"
    click.echo(
        f"Indexed {entries} from {where} in {duration(result.seconds)}: "
        f"{result.added} added, {result.changed} changed, {result.removed} removed."
    )

"""Commands that queue a task per sequence and watch them finish: prefetch (downloads)
and refresh (checks against the OEIS), with a progress line and a summary."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import click

from cli.common import Duration, command_settings, count, duration
from shared.admin import cache as cache_admin
from shared.work.lock import FINISHED_STATES
from shared.work.units import Work, refresh_work, values_work

# Seconds between looks at prefetched tasks; progress lines every this long without a tty.
POLL_INTERVAL = 0.5
PLAIN_PROGRESS_EVERY = 5.0
BAR_WIDTH = 24
# What each task outcome means, for the prefetch summary (see shared/store/ingest.py).
OUTCOMES = {
    "stored": "downloaded",
    "cached": "already cached",
    "missing": "not in the OEIS",
    "refused": "refused as stale (the cache was cleared meanwhile)",
    "skipped": "left to another task",
}
# What each refresh outcome means, for the refresh summary (see shared/store/ingest.py: a
# check may also join a download already running for the sequence).
REFRESH_OUTCOMES = {
    **OUTCOMES,
    "unchanged": "unchanged",
    "new_terms": "with new or corrected terms",
    "new_metadata": "with new metadata (same terms)",
    "recent": "checked meanwhile by another task",
    "not_cached": "no longer cached",
    "refused": "refused as stale (forgotten or cleared meanwhile)",
}
MAX_FAILURES_SHOWN = 10


def _targets(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    try:
        return cache_admin.parse_targets(value)
    except cache_admin.MaintenanceError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


@dataclass
class _Tally:
    total: int
    started: float = field(default_factory=time.monotonic)
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # sequence id -> error
    running: int = 0

    @property
    def finished(self) -> int:
        return sum(self.outcomes.values()) + len(self.failures)

    def line(self) -> str:
        done, failed = sum(self.outcomes.values()), len(self.failures)
        pending = self.total - self.finished
        filled = BAR_WIDTH * self.finished // max(self.total, 1)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.finished / elapsed
        left = f" · ~{duration(pending / rate)} left" if pending >= rate > 0 else ""
        return (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.finished}/{self.total}"
            f"  done {done} · failed {failed} · pending {pending} ({self.running} running)"
            f" · {rate:.1f}/s{left}"
        )


def _error(state: str, result: Any) -> str:
    if isinstance(result, BaseException):
        return str(result) or type(result).__name__
    return state.lower()


def _watch(tasks: dict[str, str], tally: _Tally) -> None:
    """Show progress until every task (task id -> sequence id) has finished.

    A task that succeeded but reports an "error" (a refresh that met an upstream fault
    and kept the cached data) counts as failed.
    """
    from shared.work.queue import task_states

    redraw = sys.stdout.isatty()
    pending = dict(tasks)
    shown_at = 0.0
    while True:
        tally.running = 0
        for task_id, (state, result) in task_states(list(pending)).items():
            if state == "SUCCESS" and result.get("error"):
                tally.failures[tasks[task_id]] = result["error"]
            elif state == "SUCCESS":
                tally.outcomes[result.get("outcome", "?")] += 1
            elif state in FINISHED_STATES:
                tally.failures[tasks[task_id]] = _error(state, result)
            else:
                if state in ("STARTED", "RETRY"):
                    tally.running += 1
                continue
            del pending[task_id]
        if redraw:
            click.echo(f"\r{tally.line()}\x1b[K", nl=not pending)
        elif not pending or time.monotonic() - shown_at >= PLAIN_PROGRESS_EVERY:
            click.echo(tally.line())
            shown_at = time.monotonic()
        if not pending:
            return
        time.sleep(POLL_INTERVAL)


@dataclass(frozen=True)
class _Batch:
    """The wording of a command that queues a task per sequence and watches them."""

    work: str  # what one task does, plural: "downloads"
    did: str  # "Prefetched"
    outcomes: dict[str, str]
    failed: str = "failed"


def _run_batch(ctx: click.Context, works: list[tuple[str, Work]], batch: _Batch) -> None:
    """Queue each sequence's work as bulk work (joining work already queued or running),
    show progress until all has finished, then a summary; exit 1 if any failed."""
    from shared.admin.queue import enqueue

    tally = _Tally(len(works))
    tasks: dict[str, str] = {}  # task id -> sequence id
    try:
        for seq_id, work in works:
            tasks[enqueue(work)] = seq_id
        click.echo(f"Queued {batch.work} of {len(works)} sequences.")
        _watch(tasks, tally)
    except KeyboardInterrupt:
        unqueued = len(works) - len(tasks)
        click.echo(
            f"\nStopped watching; {len(tasks) - tally.finished} {batch.work} are not finished "
            "yet. They stay queued and the workers will run them (`backscope status` shows "
            "the queue)." + (f" {unqueued} were never queued." if unqueued else "")
        )
        ctx.exit(130)
    parts = [f"{n} {batch.outcomes.get(outcome, outcome)}" for outcome, n in tally.outcomes.items()]
    if tally.failures:
        parts.append(f"{len(tally.failures)} {batch.failed}")
    took = duration(time.monotonic() - tally.started)
    click.echo(f"{batch.did} {count(tally.total, 'sequence')} in {took}: {', '.join(parts)}.")
    for seq_id, error in list(tally.failures.items())[:MAX_FAILURES_SHOWN]:
        click.echo(f"  {seq_id}: {error}")
    if tally.failures:
        ctx.exit(1)


@click.command()
@click.argument("targets", nargs=-1, required=True, metavar="ID_OR_RANGE...", callback=_targets)
@click.pass_context
def prefetch(ctx: click.Context, targets: list[str]) -> None:
    """Download many sequences, showing progress.

    Example: backscope prefetch A000001-A000100 A000290

    Queues a values download for each sequence (joining one already queued or
    running), then shows progress until all have finished, and a summary. At most
    10,000 sequences at a time. Ctrl-C stops watching; the queued downloads still
    run. Exits with status 1 if any download failed.
    """
    command_settings()
    works = [(seq_id, values_work(seq_id)) for seq_id in targets]
    _run_batch(ctx, works, _Batch("downloads", "Prefetched", OUTCOMES))


@click.command()
@click.argument("targets", nargs=-1, metavar="[ID_OR_RANGE...]", callback=_targets)
@click.option("--all", "everything", is_flag=True, help="Check every cached sequence.")
@click.option(
    "--older-than",
    type=Duration(),
    help="Only sequences not checked for longer than this (90s, 30m, 12h, 7d, 2w), or never.",
)
@click.pass_context
def refresh(
    ctx: click.Context, targets: list[str], everything: bool, older_than: int | None
) -> None:
    """Check cached sequences against the OEIS now.

    Examples: backscope refresh A000045 A000040; backscope refresh --older-than 3d;
    backscope refresh --all

    Each check costs one small OEIS request (none with BACKSCOPE_OEISDATA_DIR); the
    b-file is downloaded again only when the entry changed. New terms, corrections and
    names replace the cached ones at once; requests meanwhile get the old data. Shows
    progress, then what changed. Sequences that are not cached are left alone. Exits
    with status 1 if any check failed (that sequence's cached data is kept).
    """
    settings = command_settings()
    if everything and targets:
        raise click.UsageError("--all checks every cached sequence: name none with it")
    if not (targets or everything or older_than is not None):
        raise click.UsageError("name sequences, or pass --all or --older-than")
    chosen = cache_admin.refresh_targets(settings.database_url, older_than, targets or None)
    skipped = len(targets) - len(chosen) if targets else 0
    if skipped:
        reason = "not cached" if older_than is None else "not cached or checked recently"
        click.echo(f"Leaving {count(skipped, 'named sequence')} alone ({reason}).")
    if not chosen:
        click.echo("Nothing to check.")
        return
    works = [(seq_id, refresh_work(seq_id, older_than or 0)) for seq_id in chosen]
    batch = _Batch("checks", "Checked", REFRESH_OUTCOMES, "failed (their cached data is kept)")
    _run_batch(ctx, works, batch)

"""The `backscope` command line: database set-up and maintenance.

The operations themselves live in shared/admin/cache.py (the Celery tasks in
worker/tasks/maintenance.py call the same functions). Commands import the Celery side
(shared.admin.queue) only when they run, so `backscope --help` and configuration
errors do not depend on the Celery app loading.

Every command that needs PostgreSQL or Redis gets them through `_settings()`: when the
configured ones do not answer, project-local ones stand in for the command's duration
(cli/embedded.py). `backscope services COMMAND` does the same for a whole stack.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import click
from alembic.util import CommandError
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from cli import embedded
from shared.admin import cache as cache_admin
from shared.admin import database as database_admin
from shared.config import INDEX_SOURCES, ConfigError, Settings, get_settings, redacted
from shared.errors import BackscopeError
from shared.redis_db import get_redis
from shared.store.revisions import RefreshBacklog
from shared.work.lock import FINISHED_STATES, list_locks
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


def _read_settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from exc


def _settings() -> Settings:
    """The settings, with PostgreSQL and Redis answering: the first call in a command
    starts project-local servers where they stand in for the configured ones
    (cli/embedded.py), and leaves them when the command ends."""
    settings = _read_settings()
    root = click.get_current_context().find_root()
    if "backscope.services" not in root.meta:
        root.meta["backscope.services"] = True
        settings = root.with_resource(embedded.provide(settings))
    return settings


class _Group(click.Group):
    """Reports an unreachable service or a refused operation in one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (cache_admin.MaintenanceError, embedded.EmbeddedError) as exc:
            raise click.ClickException(str(exc)) from exc
        except (RedisError, BrokerError) as exc:
            url = redacted(_read_settings().redis_url)
            raise click.ClickException(f"cannot reach Redis at {url}: {exc}") from exc
        except DBAPIError as exc:  # unreachable, or refused (say, no CREATE DATABASE right)
            where = database_admin.describe(_read_settings().database_url)
            raise click.ClickException(f"cannot use {where}: {exc.orig}") from exc
        except CommandError as exc:  # alembic: e.g. a revision the migrations do not know
            raise click.ClickException(f"migrations: {exc}") from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Backscope: fetch OEIS sequences, cache them in PostgreSQL, serve them as JSON.

    Settings come from BACKSCOPE_* environment variables (and .env in development).
    docs/maintenance.md says which command to use when.
    """


@main.command()
def migrate() -> None:
    """Create the database and apply the migrations.

    Creates the database if it is missing, then applies every committed migration it
    does not have yet. Run it after pulling a schema change.
    """
    url = _settings().database_url
    if database_admin.create_database(url):
        click.echo(f"created {database_admin.describe(url)}")
    database_admin.upgrade(url)
    click.echo(
        f"{database_admin.describe(url)} is at revision {database_admin.current_revision(url)}"
    )


@main.command("reset-metrics")
def reset_metrics() -> None:
    """Empty BACKSCOPE_METRICS_DIR before the stack starts.

    Every process of the stack counts into files there (GET /metrics adds them up);
    `make run` empties it first so counts start at zero. Never while the stack runs:
    the running processes' counts would be lost.
    """
    _settings()
    from shared import metrics

    metrics.reset_directory()
    click.echo(f"emptied {metrics.METRICS_DIR}")


# ---------------------------------------------------------------- services

# Passed on to the command. SIGINT is not: Ctrl-C reaches it from the terminal, as it
# reaches this process (a celery worker takes a second SIGINT as "stop at once").
_FORWARDED = (signal.SIGTERM, signal.SIGHUP)


def _run(command: list[str]) -> int:
    """Run `command` to its end; its exit status (128 + N when signal N ended it)."""
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        if child is not None:
            child.send_signal(signum)

    # Python handlers, not SIG_IGN: the command must not inherit an ignored SIGINT.
    previous = {signum: signal.signal(signum, forward) for signum in _FORWARDED}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, lambda _signum, _frame: None)
    try:
        try:
            child = subprocess.Popen(command)
        except OSError as exc:
            raise click.ClickException(f"cannot run {command[0]}: {exc.strerror}") from exc
        status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - status if status < 0 else status


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def services(ctx: click.Context, command: tuple[str, ...]) -> None:
    """Run a command with PostgreSQL and Redis answering.

    When the configured servers do not answer at the default addresses (or
    BACKSCOPE_EMBEDDED=always), starts the project's own under BACKSCOPE_DATA_DIR
    (.data/), or joins them if they run, and runs COMMAND with BACKSCOPE_DATABASE_URL
    and BACKSCOPE_REDIS_URL naming them, their password included. When COMMAND ends
    (Ctrl-C ends it) they stop, unless another process still uses them; their data
    stays for the next run. `make run`, `make demo` and the other make targets that run
    the stack go through it.

    Example: backscope services -- supervisord -c supervisord.conf
    """
    _settings()
    ctx.exit(_run(list(command)))


# ---------------------------------------------------------------- safety


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def _has_terminal() -> bool:
    """Whether someone can answer a prompt (tests pretend there is one)."""
    return sys.stdin.isatty()


def _confirm(settings: Settings, what: str, yes: bool) -> None:
    """Say which database is about to change ("{db}" in `what`); in production, make the
    operator confirm."""
    click.echo(f"About to {what.format(db=database_admin.describe(settings.database_url))}.")
    if not settings.production or yes:
        return
    name = database_admin.database_name(settings.database_url)
    if not _has_terminal():
        raise click.ClickException(
            "refusing: BACKSCOPE_ENV=production and no terminal to confirm on. "
            "Pass --yes (with make: CONFIRM=yes) to go ahead."
        )
    typed = click.prompt(
        f"BACKSCOPE_ENV=production. Type the database name ({name}) to go ahead",
        default="",
        show_default=False,
    )
    if typed.strip() != name:
        raise click.ClickException("not confirmed; nothing was changed")


_yes = click.option(
    "--yes",
    "-y",
    is_flag=True,
    help="Go ahead without asking. Only production asks (BACKSCOPE_ENV=production): "
    "type the database name, or pass --yes; with no terminal it refuses without --yes.",
)


def _drop_queued() -> Callable[[], int]:
    from shared.admin.queue import drop_queued_work

    return drop_queued_work


# ---------------------------------------------------------------- destructive commands


@main.command("clear-db")
@_yes
def clear_db(yes: bool) -> None:
    """Delete all cached data; keep the schema.

    Use it when cached data is in the way. Queued downloads (and other queued work) are
    dropped and every lock released first; a download still running cannot store its
    result afterwards.
    """
    settings = _settings()
    _confirm(settings, "delete all cached data in {db} (the schema stays)", yes)
    cleared = cache_admin.clear(settings.database_url, get_redis("locks"), _drop_queued())
    click.echo(
        f"Dropped {_count(cleared.dropped_tasks, 'queued task')}, released "
        f"{_count(len(cleared.released_locks), 'lock')} and deleted all cached data."
    )


@main.command("reset-db")
@_yes
def reset_db(yes: bool) -> None:
    """Rebuild the database from the migrations.

    Drops the database and builds it again from the committed migrations. Use it to
    start over, e.g. when the database holds a schema the migrations do not know.
    Creates the database if it does not exist. Never touches alembic/versions.
    """
    settings = _settings()
    _confirm(settings, "drop {db} and rebuild it from the migrations", yes)
    done = cache_admin.reset(settings.database_url, get_redis("locks"), _drop_queued())
    click.echo(
        f"Dropped {_count(done.dropped_tasks, 'queued task')}, released "
        f"{_count(len(done.released_locks), 'lock')} and rebuilt the database at revision "
        f"{done.revision}."
    )


def _ids(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    try:
        return cache_admin.parse_ids(value)
    except cache_admin.MaintenanceError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


@main.command()
@click.argument("ids", nargs=-1, required=True, metavar="ID...", callback=_ids)
@_yes
def forget(ids: list[str], yes: bool) -> None:
    """Forget sequences so they download again.

    Deletes everything cached about them (values, metadata, factors) and releases their locks;
    other sequences are untouched.

    Example: backscope forget A000045 A000040
    """
    settings = _settings()
    _confirm(settings, "delete the cached data of " + ", ".join(ids) + " in {db}", yes)
    done = cache_admin.forget(settings.database_url, get_redis("locks"), ids)
    deleted = ", ".join(done.deleted) or "none of them were cached"
    click.echo(f"Deleted: {deleted}. Released {_count(len(done.released_locks), 'lock')}.")


# ---------------------------------------------------------------- locks


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


@main.group(invoke_without_command=True)
@click.pass_context
def locks(ctx: click.Context) -> None:
    """List held locks; `locks release` frees one.

    Shows each work lock's key, owner task, age, TTL left and fencing token. A lock
    expires by itself within BACKSCOPE_LOCK_TTL seconds after its worker dies, and
    celery beat removes locks whose task has finished; `backscope locks release` is
    for when you cannot wait.
    """
    if ctx.invoked_subcommand is not None:
        return
    _settings()
    held = list_locks(get_redis("locks"))
    if not held:
        click.echo("No locks held.")
        return
    rows = [("KEY", "OWNER TASK", "AGE", "TTL LEFT", "FENCING TOKEN")] + [
        (i.key, i.owner, _duration(i.age), _duration(i.ttl), str(i.fence)) for i in held
    ]
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        click.echo("  ".join([*cells, row[-1]]))


@locks.command("release")
@click.argument("target", metavar="ID_OR_KEY")
def locks_release(target: str) -> None:
    """Release a lock by hand.

    ID_OR_KEY is a sequence id (releases all of that sequence's locks) or a key as
    `backscope locks` shows it. The task that held it keeps running, but can no
    longer renew the lock, and a newer download of the same thing may start.
    """
    _settings()
    for key in cache_admin.release_target(get_redis("locks"), target):
        click.echo(f"released {key}")


# ---------------------------------------------------------------- prefetch


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
        left = f" · ~{_duration(pending / rate)} left" if pending >= rate > 0 else ""
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
    took = _duration(time.monotonic() - tally.started)
    click.echo(f"{batch.did} {_count(tally.total, 'sequence')} in {took}: {', '.join(parts)}.")
    for seq_id, error in list(tally.failures.items())[:MAX_FAILURES_SHOWN]:
        click.echo(f"  {seq_id}: {error}")
    if tally.failures:
        ctx.exit(1)


@main.command()
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
    _settings()
    works = [(seq_id, values_work(seq_id)) for seq_id in targets]
    _run_batch(ctx, works, _Batch("downloads", "Prefetched", OUTCOMES))


# ---------------------------------------------------------------- refresh

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class _Duration(click.ParamType):
    """A duration in seconds, written 90s, 30m, 12h, 7d or 2w (bare numbers: seconds)."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"([0-9]{1,9})([smhdw]?)", str(value).strip())
        if not match:
            self.fail(f"{value!r} is not a duration such as 90s, 30m, 12h, 7d or 2w", param, ctx)
        return int(match[1]) * _UNITS[match[2] or "s"]


def _period(seconds: float) -> str:
    """A setting's duration the way it reads best: 7d, 12h, 30m or 90s."""
    seconds = round(seconds)
    for unit in "dhm":
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


@main.command()
@click.argument("targets", nargs=-1, metavar="[ID_OR_RANGE...]", callback=_targets)
@click.option("--all", "everything", is_flag=True, help="Check every cached sequence.")
@click.option(
    "--older-than",
    type=_Duration(),
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
    settings = _settings()
    if everything and targets:
        raise click.UsageError("--all checks every cached sequence: name none with it")
    if not (targets or everything or older_than is not None):
        raise click.UsageError("name sequences, or pass --all or --older-than")
    chosen = cache_admin.refresh_targets(settings.database_url, older_than, targets or None)
    skipped = len(targets) - len(chosen) if targets else 0
    if skipped:
        reason = "not cached" if older_than is None else "not cached or checked recently"
        click.echo(f"Leaving {_count(skipped, 'named sequence')} alone ({reason}).")
    if not chosen:
        click.echo("Nothing to check.")
        return
    works = [(seq_id, refresh_work(seq_id, older_than or 0)) for seq_id in chosen]
    batch = _Batch("checks", "Checked", REFRESH_OUTCOMES, "failed (their cached data is kept)")
    _run_batch(ctx, works, batch)


# ---------------------------------------------------------------- index


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


_SOURCES = {
    "bulk": "the bulk files (names.gz, stripped.gz) of",
    "oeisdata": "the oeisdata checkout",
}


@main.command()
@click.option(
    "--source",
    type=click.Choice(INDEX_SOURCES),
    help="Build from the OEIS's bulk files or the oeisdata checkout (default: "
    "BACKSCOPE_INDEX_SOURCE; auto is the checkout when BACKSCOPE_OEISDATA_DIR is set).",
)
@click.option("--full", is_flag=True, help="Read and rewrite every entry, changed or not.")
@click.option("--remove", is_flag=True, help="Delete the index: searches go to the OEIS again.")
@_yes
def index(source: str | None, full: bool, remove: bool, yes: bool) -> None:
    """Build or update the local search index of the whole OEIS.

    Searches (and the names of sequences) are then answered from PostgreSQL with no
    OEIS request. From the bulk files it costs two downloads (about 40 MB), none when
    they have not changed since the last build; from an oeisdata checkout, none. Only
    what changed since the last build is written, in one transaction: a build that
    fails leaves the previous index serving. Beat runs it every
    BACKSCOPE_INDEX_INTERVAL seconds.
    """
    settings = _settings()
    from shared.db import session_scope
    from shared.oeis.client import OEISClient
    from shared.oeis.ratelimit import RateLimiter
    from shared.search import indexer

    if remove:
        _confirm(settings, "delete the search index in {db}", yes)
        with session_scope() as session:
            removed = indexer.remove(session)
        click.echo(f"Removed the search index ({_count(removed, 'entry', 'entries')}).")
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
    entries = _count(result.entries, "entry", "entries")
    where = f"{_SOURCES[result.source]} {result.location}"
    click.echo(
        f"Indexed {entries} from {where} in {_duration(result.seconds)}: "
        f"{result.added} added, {result.changed} changed, {result.removed} removed."
    )


def _index_status(state: Any) -> str:
    if state is None:
        return "none: searches go to the OEIS (`backscope index` builds the index)"
    when = state.built_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    entries = _count(state.entries, "entry", "entries")
    return (
        f"{entries} from {_SOURCES[state.source]} {state.location},"
        f" built {when} ({_duration(state.age)} ago) in {_duration(state.seconds)},"
        f" {state.changed} changed"
    )


# ---------------------------------------------------------------- status


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
    older = _period(refresh_after)
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


@main.command()
def status() -> None:
    """Show revision, cache, queues, workers, locks.

    The database's migration revision against the code's head, how many sequences
    are cached, how many of them were not checked against the OEIS for longer than
    BACKSCOPE_REFRESH_AFTER, what the search index holds (from which source, built
    when), how many tasks wait in each queue, which workers answer a ping, and how
    many locks are held.
    """
    settings = _settings()
    db = cache_admin.database_status(settings.database_url, settings.refresh_after)
    rows = [("postgres", db.description), ("revision", _revision(db))]
    if db.revision:
        rows.append(("cached", f"{_count(db.sequences, 'sequence')}, {db.with_values} with values"))
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


if __name__ == "__main__":
    sys.exit(main())

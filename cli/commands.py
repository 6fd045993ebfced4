"""The `backscope` command line: database set-up and maintenance.

The operations themselves live in shared/cache_admin.py (the Celery tasks in
worker/tasks/maintenance.py call the same functions). Commands import the Celery side
(shared.queue_admin) only when they run, so `backscope --help` and configuration
errors do not depend on the Celery app loading.

Every command that needs PostgreSQL or Redis gets them through `_settings()`: when the
configured ones do not answer, project-local ones stand in for the command's duration
(shared/embedded.py). `backscope services COMMAND` does the same for a whole stack.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from alembic.util import CommandError
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from shared import cache_admin, database_admin, embedded
from shared.config import ConfigError, Settings, get_settings, redacted
from shared.lock import FINISHED_STATES, list_locks
from shared.redis_db import get_redis
from shared.work import values_work

# Seconds between looks at prefetched tasks; progress lines every this long without a tty.
POLL_INTERVAL = 0.5
PLAIN_PROGRESS_EVERY = 5.0
BAR_WIDTH = 24
# What each task outcome means, for the prefetch summary (see shared/ingest.py).
OUTCOMES = {
    "stored": "downloaded",
    "cached": "already cached",
    "missing": "not in the OEIS",
    "refused": "refused as stale (the cache was cleared meanwhile)",
    "skipped": "left to another task",
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
    (shared/embedded.py), and leaves them when the command ends."""
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
    and BACKSCOPE_REDIS_URL naming them. When COMMAND ends (Ctrl-C ends it) they stop,
    unless another process still uses them; their data stays for the next run. `make
    run`, `make demo` and the other make targets that run the stack go through it.

    Example: backscope services -- honcho start -f Procfile
    """
    _settings()
    ctx.exit(_run(list(command)))


# ---------------------------------------------------------------- safety


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


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
    from shared.queue_admin import drop_queued_work

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
    """Show progress until every task (task id -> sequence id) has finished."""
    from shared.queue_admin import task_states

    redraw = sys.stdout.isatty()
    pending = dict(tasks)
    shown_at = 0.0
    while True:
        tally.running = 0
        for task_id, (state, result) in task_states(list(pending)).items():
            if state == "SUCCESS":
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


def _summary(tally: _Tally) -> str:
    parts = [f"{n} {OUTCOMES.get(outcome, outcome)}" for outcome, n in tally.outcomes.items()]
    if tally.failures:
        parts.append(f"{len(tally.failures)} failed")
    took = _duration(time.monotonic() - tally.started)
    return f"Prefetched {_count(tally.total, 'sequence')} in {took}: {', '.join(parts)}."


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
    from shared.queue_admin import enqueue

    tally = _Tally(len(targets))
    tasks: dict[str, str] = {}  # task id -> sequence id
    try:
        for seq_id in targets:
            tasks[enqueue(values_work(seq_id))] = seq_id
        click.echo(f"Queued downloads of {len(targets)} sequences.")
        _watch(tasks, tally)
    except KeyboardInterrupt:
        unqueued = len(targets) - len(tasks)
        click.echo(
            f"\nStopped watching; {len(tasks) - tally.finished} downloads are not finished "
            "yet. They stay queued and the workers will run them (`backscope status` shows "
            "the queue)." + (f" {unqueued} were never queued." if unqueued else "")
        )
        ctx.exit(130)
    click.echo(_summary(tally))
    for seq_id, error in list(tally.failures.items())[:MAX_FAILURES_SHOWN]:
        click.echo(f"  {seq_id}: {error}")
    if tally.failures:
        ctx.exit(1)


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


def _workers(hosts: set[str]) -> str:
    if not hosts:
        return "none answering (`make worker` starts one)"
    return f"{len(hosts)} answering: {', '.join(sorted(hosts))}"


@main.command()
def status() -> None:
    """Show revision, cache, queues, workers, locks.

    The database's migration revision against the code's head, how many sequences
    are cached, how many tasks wait in each queue, which workers answer a ping, and
    how many locks are held.
    """
    settings = _settings()
    db = cache_admin.database_status(settings.database_url)
    rows = [("postgres", db.description), ("revision", _revision(db))]
    if db.revision:
        rows.append(("cached", f"{_count(db.sequences, 'sequence')}, {db.with_values} with values"))
    client = get_redis("locks")
    try:
        client.ping()
    except RedisError as exc:
        rows.append(("redis", f"cannot reach {redacted(settings.redis_url)}: {exc}"))
    else:
        from shared.queue_admin import live_workers, queue_lengths

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

"""Commands that delete cached data or release locks: clear-db, reset-db, forget, locks.

The operations themselves live in shared/admin/cache.py; a destructive one first says
which database it changes, and in production asks (cli/common.py: confirm).
"""

from __future__ import annotations

from collections.abc import Callable

import click

from cli.common import command_settings, confirm, count, duration, yes_option
from shared.admin import cache as cache_admin
from shared.redis_db import get_redis
from shared.work.lock import list_locks


def _drop_queued() -> Callable[[], int]:
    from shared.admin.queue import drop_queued_work

    return drop_queued_work


@click.command("clear-db")
@yes_option
def clear_db(yes: bool) -> None:
    """Delete all cached data; keep the schema.

    Use it when cached data is in the way. Queued downloads (and other queued work) are
    dropped and every lock released first; a download still running cannot store its
    result afterwards.
    """
    settings = command_settings()
    confirm(settings, "delete all cached data in {db} (the schema stays)", yes)
    cleared = cache_admin.clear(settings.database_url, get_redis("locks"), _drop_queued())
    click.echo(
        f"Dropped {count(cleared.dropped_tasks, 'queued task')}, released "
        f"{count(len(cleared.released_locks), 'lock')} and deleted all cached data."
    )


@click.command("reset-db")
@yes_option
def reset_db(yes: bool) -> None:
    """Rebuild the database from the migrations.

    Drops the database and builds it again from the committed migrations. Use it to
    start over, e.g. when the database holds a schema the migrations do not know.
    Creates the database if it does not exist. Never touches alembic/versions.
    """
    settings = command_settings()
    confirm(settings, "drop {db} and rebuild it from the migrations", yes)
    done = cache_admin.reset(settings.database_url, get_redis("locks"), _drop_queued())
    click.echo(
        f"Dropped {count(done.dropped_tasks, 'queued task')}, released "
        f"{count(len(done.released_locks), 'lock')} and rebuilt the database at revision "
        f"{done.revision}."
    )


def _ids(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    try:
        return cache_admin.parse_ids(value)
    except cache_admin.MaintenanceError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


@click.command()
@click.argument("ids", nargs=-1, required=True, metavar="ID...", callback=_ids)
@yes_option
def forget(ids: list[str], yes: bool) -> None:
    """Forget sequences so they download again.

    Deletes everything cached about them (values, metadata, factors) and releases their locks;
    other sequences are untouched.

    Example: backscope forget A000045 A000040
    """
    settings = command_settings()
    confirm(settings, "delete the cached data of " + ", ".join(ids) + " in {db}", yes)
    done = cache_admin.forget(settings.database_url, get_redis("locks"), ids)
    deleted = ", ".join(done.deleted) or "none of them were cached"
    click.echo(f"Deleted: {deleted}. Released {count(len(done.released_locks), 'lock')}.")


# ---------------------------------------------------------------- locks


@click.group(invoke_without_command=True)
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
    command_settings()
    held = list_locks(get_redis("locks"))
    if not held:
        click.echo("No locks held.")
        return
    rows = [("KEY", "OWNER TASK", "AGE", "TTL LEFT", "FENCING TOKEN")] + [
        (i.key, i.owner, duration(i.age), duration(i.ttl), str(i.fence)) for i in held
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
    command_settings()
    for key in cache_admin.release_target(get_redis("locks"), target):
        click.echo(f"released {key}")

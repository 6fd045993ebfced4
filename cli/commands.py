"""The `backscope` command line: the group, and the commands that set up and run the
stack (migrate, reset-metrics, services).

The other commands live in modules named for what they do, and are added to the group
here: cli/maintenance.py (clear-db, reset-db, forget, locks), cli/batches.py (prefetch,
refresh), cli/index.py (index), cli/status.py (status); what they share (settings, the
production guard, counts and durations) is in cli/common.py. The operations themselves
live in shared/admin/cache.py (the Celery tasks in worker/tasks/maintenance.py call the
same functions). Commands import the Celery side (shared.admin.queue) only when they
run, so `backscope --help` and configuration errors do not depend on the Celery app
loading.

Every command that needs PostgreSQL or Redis gets them through
cli/common.py's `command_settings()`: when the configured ones do not answer,
project-local ones stand in for the command's duration (cli/embedded.py).
`backscope services COMMAND` does the same for a whole stack.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

import click
from alembic.util import CommandError
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from cli.batches import prefetch, refresh
from cli.common import command_settings, read_settings
from cli.index import index
from cli.local_common import EmbeddedError
from cli.maintenance import clear_db, forget, locks, reset_db
from cli.status import status
from shared.admin import cache as cache_admin
from shared.admin import database as database_admin
from shared.config import redacted


class _Group(click.Group):
    """Reports an unreachable service or a refused operation in one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (cache_admin.MaintenanceError, EmbeddedError) as exc:
            raise click.ClickException(str(exc)) from exc
        except (RedisError, BrokerError) as exc:
            url = redacted(read_settings().redis_url)
            raise click.ClickException(f"cannot reach Redis at {url}: {exc}") from exc
        except DBAPIError as exc:  # unreachable, or refused (say, no CREATE DATABASE right)
            where = database_admin.describe(read_settings().database_url)
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
    url = command_settings().database_url
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
    command_settings()
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
        returncode = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - returncode if returncode < 0 else returncode


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
    command_settings()
    ctx.exit(_run(list(command)))


# The commands of the modules named for what they do (this module's docstring).
main.add_command(clear_db)
main.add_command(reset_db)
main.add_command(forget)
main.add_command(locks)
main.add_command(prefetch)
main.add_command(refresh)
main.add_command(index)
main.add_command(status)


if __name__ == "__main__":
    sys.exit(main())

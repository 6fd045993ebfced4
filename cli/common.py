"""What the `backscope` commands share: their settings (with PostgreSQL and Redis
answering), the production guard before a destructive command, and how counts and
durations read."""

from __future__ import annotations

import re
import sys
from typing import Any

import click

from cli import embedded
from shared.admin import database as database_admin
from shared.config import ConfigError, Settings, get_settings

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def read_settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from exc


def command_settings() -> Settings:
    """The settings, with PostgreSQL and Redis answering: the first call in a command
    starts project-local servers where they stand in for the configured ones
    (cli/embedded.py), and leaves them when the command ends."""
    settings = read_settings()
    root = click.get_current_context().find_root()
    if "backscope.services" not in root.meta:
        root.meta["backscope.services"] = True
        settings = root.with_resource(embedded.provide(settings))
    return settings


# ---------------------------------------------------------------- safety


def has_terminal() -> bool:
    """Whether someone can answer a prompt (tests pretend there is one)."""
    return sys.stdin.isatty()


def confirm(settings: Settings, what: str, yes: bool) -> None:
    """Say which database is about to change ("{db}" in `what`); in production, make the
    operator confirm."""
    click.echo(f"About to {what.format(db=database_admin.describe(settings.database_url))}.")
    if not settings.production or yes:
        return
    name = database_admin.database_name(settings.database_url)
    if not has_terminal():
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


yes_option = click.option(
    "--yes",
    "-y",
    is_flag=True,
    help="Go ahead without asking. Only production asks (BACKSCOPE_ENV=production): "
    "type the database name, or pass --yes; with no terminal it refuses without --yes.",
)


# ---------------------------------------------------------------- words


def count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class Duration(click.ParamType):
    """A duration in seconds, written 90s, 30m, 12h, 7d or 2w (bare numbers: seconds)."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"([0-9]{1,9})([smhdw]?)", str(value).strip())
        if not match:
            self.fail(f"{value!r} is not a duration such as 90s, 30m, 12h, 7d or 2w", param, ctx)
        return int(match[1]) * _UNITS[match[2] or "s"]


def period(seconds: float) -> str:
    """A setting's duration the way it reads best: 7d, 12h, 30m or 90s."""
    seconds = round(seconds)
    for unit in "dhm":
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"

"""The `backscope` command line: database set-up and maintenance."""

from __future__ import annotations

import sys

import click

from shared import schema
from shared.config import ConfigError, Settings, get_settings


def _settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Backscope: fetch OEIS sequences, cache them in PostgreSQL, serve them as JSON.

    Settings come from BACKSCOPE_* environment variables (and .env in development).
    """


@main.command()
def migrate() -> None:
    """Create the database if it is missing and apply every committed migration."""
    url = _settings().database_url
    if schema.create_database(url):
        click.echo(f"created {schema.describe(url)}")
    schema.upgrade(url)
    click.echo(f"{schema.describe(url)} is at revision {schema.current_revision(url)}")


if __name__ == "__main__":
    sys.exit(main())

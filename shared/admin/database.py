"""Creating the database and running the committed migrations (never regenerating them)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from shared.config import CHECKOUT


def alembic_config(database_url: str) -> Config:
    config = Config(str(CHECKOUT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def _server_engine(database_url: str):
    """An engine on the server's `postgres` database, for CREATE/DROP DATABASE."""
    url = make_url(database_url).set(database="postgres")
    return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def check_server(database_url: str) -> None:
    """Raise sqlalchemy's OperationalError unless the database server answers."""
    engine = _server_engine(database_url)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def database_name(database_url: str) -> str:
    return make_url(database_url).database or ""


def describe(database_url: str) -> str:
    """Host and database name, for telling an operator what a command will change."""
    url = make_url(database_url)
    return f"database {url.database!r} on {url.host or 'localhost'}:{url.port or 5432}"


def create_database(database_url: str) -> bool:
    """Create the database if it does not exist; True if it was created."""
    name = database_name(database_url)
    engine = _server_engine(database_url)
    with engine.connect() as connection:
        exists = connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        )
        if not exists:
            quoted = connection.dialect.identifier_preparer.quote(name)
            connection.execute(text(f"CREATE DATABASE {quoted}"))
    engine.dispose()
    return not exists


def drop_database(database_url: str) -> None:
    """Drop the database, ending every other session connected to it.

    WITH (FORCE) ends them and drops in one step, so a process that reconnects at once
    (the API's change listener does) cannot get in between (PostgreSQL 13 and later).
    """
    engine = _server_engine(database_url)
    with engine.connect() as connection:
        quoted = connection.dialect.identifier_preparer.quote(database_name(database_url))
        connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    engine.dispose()


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def current_revision(database_url: str) -> str | None:
    engine = create_engine(database_url, poolclass=NullPool)
    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    engine.dispose()
    return revision

"""The SQLAlchemy engine and sessions, created lazily from the settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from shared.config import get_settings

# What a query raises when the database cannot be reached (or no pooled connection
# frees up in time): the API answers 503 (api/errors.py).
UNREACHABLE: tuple[type[Exception], ...] = (OperationalError, PoolTimeout)


@cache
def get_engine() -> Engine:
    settings = get_settings()
    return create_engine(
        settings.database_url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        connect_args={"connect_timeout": 5, "application_name": "backscope"},
    )


# Statements every read connection prepares once (name -> (argument types, SQL with $n
# parameters)), so the hot path skips planning: shared/store.py registers them.
PREPARED: dict[str, tuple[str, str]] = {}


@cache
def get_read_engine() -> Engine:
    """An engine for the API's reads: autocommit, so a query is one round trip (no
    BEGIN, no ROLLBACK when the connection goes back to the pool), and no pre-ping
    round trip either: a connection that died is reported as the database being
    unavailable once, and SQLAlchemy then replaces the pool's connections."""
    engine = create_engine(
        get_settings().database_url,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
        pool_size=10,
        max_overflow=10,
        connect_args={"connect_timeout": 5, "application_name": "backscope-api"},
    )

    @event.listens_for(engine, "connect")
    def prepare(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            for name, (types, sql) in PREPARED.items():
                cursor.execute(f"PREPARE {name} {types} AS {sql}")

    return engine


def listen_connection() -> Any:
    """A DB-API connection of its own (outside every pool), in autocommit, for LISTEN.

    A connection whose server vanished without a word must fail soon, not after the
    kernel's 15 minutes of retransmissions: TCP keepalives cover an idle connection and
    tcp_user_timeout a query waiting for its answer (shared/readcache.py checks the
    connection with a query when it has been quiet for a few seconds).
    """
    engine = get_engine()
    args, params = engine.dialect.create_connect_args(engine.url)
    connection = engine.dialect.loaded_dbapi.connect(
        *args,
        **{
            **params,
            "connect_timeout": 5,
            "application_name": "backscope-api-listener",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 10_000,  # milliseconds
        },
    )
    connection.autocommit = True
    return connection


@cache
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


def dispose_engine() -> None:
    """Forget the engine (and its pooled connections), e.g. after a worker process forks."""
    for engine in (get_engine, get_read_engine):
        if engine.cache_info().currsize:
            engine().dispose(close=False)
        engine.cache_clear()
    _session_factory.cache_clear()


@contextmanager
def session_scope() -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error, always close."""
    session = _session_factory()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()

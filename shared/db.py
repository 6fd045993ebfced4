"""The SQLAlchemy engine and sessions, created lazily from the settings.

Each process has one bounded pool of PostgreSQL connections, which sessions and the
API's reads share: an API process takes BACKSCOPE_DB_POOL_SIZE connections at most,
plus the one that listens for changes (listen_connection); a Celery pool process runs
one task at a time and takes one (docs/deploy.md, "PostgreSQL connections", sizes
max_connections from them). A thread holds one connection at a time (it never reads,
nor opens a session, while a session of its own holds one), so no pool size deadlocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from shared.config import get_settings

# Every change to the cached data is announced with NOTIFY on this channel, naming the
# sequence, or EVERYTHING when tables are emptied (alembic migration 0004; the search
# index build sends EVERYTHING too); api/readcache.py listens.
CHANGES_CHANNEL = "backscope_changes"
EVERYTHING = "*"
# What a query raises when the database cannot be reached (or no pooled connection
# frees up in time): the API answers 503 (api/errors.py).
UNREACHABLE: tuple[type[Exception], ...] = (OperationalError, PoolTimeout)
# Seconds a thread waits for a pooled connection before giving up (PoolTimeout): the
# API then answers 503 rather than hold the thread while the database is swamped.
POOL_TIMEOUT = 2.0


# Statements every connection prepares once (name -> (argument types, SQL with $n
# parameters)), so the API's hot path skips planning: shared/store/reads.py registers them.
PREPARED: dict[str, tuple[str, str]] = {}


@dataclass(frozen=True)
class Pool:
    """How a process connects."""

    name: str  # the connections' application_name, as pg_stat_activity shows them
    size: int  # the most connections open at once
    # Test each connection as it is taken from the pool, which costs a round trip;
    # without, a connection that died (say, PostgreSQL restarted) fails one query, and
    # SQLAlchemy then replaces every connection of the pool.
    pre_ping: bool = True


def api_pool() -> Pool:
    """The API's: no ping before each use, which would add a round trip to every read."""
    return Pool("backscope-api", get_settings().db_pool_size, pre_ping=False)


# A Celery pool process runs one task at a time (worker/app.py).
WORKER_POOL = Pool("backscope-worker", 1)
_pool: Pool | None = None  # None: Pool("backscope", BACKSCOPE_DB_POOL_SIZE) (CLI, beat)


def use_pool(pool: Pool) -> None:
    """Connect as `pool` from now on: a process's entry point says so before its first
    query (the API in create_app, a Celery pool process after it forks)."""
    global _pool
    if pool != _pool:
        dispose_engine()
        _pool = pool


def _current_pool() -> Pool:
    return _pool or Pool("backscope", get_settings().db_pool_size)


@cache
def get_engine() -> Engine:
    pool = _current_pool()
    engine = create_engine(
        get_settings().database_url,
        pool_pre_ping=pool.pre_ping,
        pool_size=pool.size,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT,
        connect_args={"connect_timeout": 5, "application_name": pool.name},
    )

    @event.listens_for(engine, "connect")
    def prepare(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            for name, (types, sql) in PREPARED.items():
                cursor.execute(f"PREPARE {name} {types} AS {sql}")
        dbapi_connection.commit()

    @event.listens_for(engine, "checkin")
    def end_autocommit(connection: Any, _record: Any) -> None:
        # A read (get_read_engine) left it in autocommit; sessions need transactions.
        if connection is not None and not connection.closed and connection.autocommit:
            connection.autocommit = False

    return engine


@cache
def get_read_engine() -> Engine:
    """The API's reads, on the same pool as sessions: each connection in autocommit
    while a read holds it, so a query is one round trip (no BEGIN, no ROLLBACK when
    the connection goes back to the pool).

    psycopg2's `autocommit` attribute is set directly, without a round trip (and set
    back when the connection returns to the pool). SQLAlchemy's isolation_level option
    would send a SET with every return: a second round trip for every read.
    """
    engine = get_engine().execution_options()

    @event.listens_for(engine, "engine_connect")
    def autocommit(connection: Connection) -> None:
        connection.connection.dbapi_connection.autocommit = True

    return engine


def listen_connection() -> Any:
    """A DB-API connection of its own (outside the pool), in autocommit, for LISTEN.

    A connection whose server vanished without a word must fail soon, not after the
    kernel's 15 minutes of retransmissions: TCP keepalives cover an idle connection and
    tcp_user_timeout a query waiting for its answer (api/readcache.py checks the
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
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)
    for made in (get_engine, get_read_engine, _session_factory):
        made.cache_clear()


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

"""Maintenance operations: clear the cache, rebuild the database, forget sequences,
release locks, and say what state things are in.

The `backscope` command line (cli/commands.py) and the backscope.maintenance.* Celery
tasks (worker/tasks/maintenance.py) both call these. Nothing here imports Celery: dropping
queued work is passed in as a callable by the caller, which owns the Celery app.

Why the order of steps matters when clearing or forgetting: locks are released first,
then the current fencing token is read and recorded as the floor in the same
transaction that deletes the data. Every task that was queued or running before then
holds a token at or below that floor, so its write is refused (shared/store/writes.py);
anything started afterwards is a fresh request and may store its result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from redis import Redis
from sqlalchemy import create_engine, func, inspect, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from shared.admin import database as database_admin
from shared.config import Settings
from shared.ids import InvalidId, format_id, id_number, normalize_id
from shared.models import Sequence, SequenceValues
from shared.store import writes
from shared.store.revisions import RefreshBacklog, refresh_backlog, refresh_candidates
from shared.work.lock import LOCK_PREFIX, LockInfo, current_fence, list_locks, release_value

#: The most sequences one prefetch may ask for.
MAX_PREFETCH = 10_000


class MaintenanceError(Exception):
    """An operation cannot run as asked; the message says why in one line."""


class NotConfirmed(MaintenanceError):
    """A destructive operation in production without the operator's confirmation."""


@contextmanager
def _session(database_url: str) -> Iterator[Session]:
    """A one-off session on `database_url` that commits on success.

    Not the pooled engine of shared.db: maintenance may target a database the
    process was not configured for, and a reset drops it from under any pool.
    """
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with Session(engine) as session, session.begin():
            yield session
    finally:
        engine.dispose()


def require_confirmation(settings: Settings, confirm: str | None) -> None:
    """In production, refuse unless `confirm` is the name of the database to change."""
    name = database_admin.database_name(settings.database_url)
    if settings.production and confirm != name:
        raise NotConfirmed(
            f"BACKSCOPE_ENV=production: confirm by passing the database name {name!r}"
        )


# ---------------------------------------------------------------- ids and ranges


def _expand(target: str) -> range:
    """The id numbers named by "A000045" or by a range "A000001-A000100"."""
    first, sep, last = target.partition("-")
    try:
        start = id_number(normalize_id(first.strip()))
        end = id_number(normalize_id(last.strip())) if sep else start
    except InvalidId as exc:
        raise MaintenanceError(str(exc)) from None
    if end < start:
        raise MaintenanceError(f"range {target!r} runs backwards: write the lower id first")
    return range(start, end + 1)


def parse_targets(targets: Iterable[str]) -> list[str]:
    """Ids from ids and ranges, in order, without repeats; at most MAX_PREFETCH of them."""
    numbers: dict[int, None] = {}
    for target in targets:
        span = _expand(target)
        if len(span) > MAX_PREFETCH:
            raise MaintenanceError(
                f"range {target!r} names {len(span):,} sequences; "
                f"at most {MAX_PREFETCH:,} at a time"
            )
        numbers.update(dict.fromkeys(span))
        if len(numbers) > MAX_PREFETCH:
            raise MaintenanceError(
                f"more than {MAX_PREFETCH:,} sequences; at most {MAX_PREFETCH:,} at a time"
            )
    return [format_id(number) for number in numbers]


def parse_ids(raw_ids: Iterable[str]) -> list[str]:
    """Validated, canonical ids without repeats; MaintenanceError names a bad one."""
    try:
        return list(dict.fromkeys(normalize_id(raw.strip()) for raw in raw_ids))
    except InvalidId as exc:
        raise MaintenanceError(str(exc)) from None


# ---------------------------------------------------------------- locks


def sequence_locks(client: Redis, seq_ids: Iterable[str]) -> list[LockInfo]:
    """Every lock held for these sequences, whatever its kind (values, metadata, ...)."""
    suffixes = tuple(f":{seq_id}" for seq_id in seq_ids)
    return [info for info in list_locks(client) if suffixes and info.key.endswith(suffixes)]


def release_all(client: Redis, locks: Iterable[LockInfo]) -> list[str]:
    """Release these locks (each only if unchanged since read); the keys released."""
    return [info.key for info in locks if release_value(client, info)]


def release_target(client: Redis, target: str) -> list[str]:
    """Release one lock by key, or every lock of a sequence by its id."""
    try:
        found = sequence_locks(client, [normalize_id(target)])
    except InvalidId:
        if not target.startswith(LOCK_PREFIX):
            raise MaintenanceError(
                f"{target[:60]!r} is neither a sequence id (A000045) "
                f"nor a lock key ({LOCK_PREFIX}...)"
            ) from None
        found = [info for info in list_locks(client) if info.key == target]
    released = release_all(client, found)
    if not released:
        raise MaintenanceError(f"no lock held for {target!r} (it may have expired already)")
    return released


# ---------------------------------------------------------------- the operations


@dataclass(frozen=True)
class Cleared:
    dropped_tasks: int
    released_locks: list[str]
    floor: int  # writes under a fencing token up to this one are refused from now on


def clear(database_url: str, locks: Redis, drop_queued: Callable[[], int]) -> Cleared:
    """Delete all cached data and keep the schema (alembic_version included).

    Queued work is dropped first and every lock released, so nothing half-done survives;
    a download still running writes nothing afterwards (see the module docstring).
    """
    with _session(database_url) as session:
        session.connection()  # the database answers before anything else is touched
        dropped = drop_queued()
        released = release_all(locks, list_locks(locks))
        floor = current_fence(locks)
        writes.clear_all(session, floor)
    return Cleared(dropped, released, floor)


@dataclass(frozen=True)
class Reset:
    dropped_tasks: int
    released_locks: list[str]
    revision: str | None


def reset(database_url: str, locks: Redis, drop_queued: Callable[[], int]) -> Reset:
    """Drop the database and build it again from the committed migrations.

    The rebuilt database starts with the fence floor at the current token, so a
    download that was running when it was dropped cannot write into the new one.
    """
    database_admin.check_server(database_url)  # it answers before anything else is touched
    dropped = drop_queued()
    released = release_all(locks, list_locks(locks))
    floor = current_fence(locks)
    database_admin.drop_database(database_url)
    database_admin.create_database(database_url)
    database_admin.upgrade(database_url)
    with _session(database_url) as session:
        writes.clear_all(session, floor)
    return Reset(dropped, released, database_admin.current_revision(database_url))


@dataclass(frozen=True)
class Forgotten:
    deleted: list[str]  # the ids that had cached data
    released_locks: list[str]


def forget(database_url: str, locks: Redis, seq_ids: list[str]) -> Forgotten:
    """Delete these sequences' cached data and release their locks; others untouched."""
    with _session(database_url) as session:
        session.connection()  # the database answers before the locks are released
        released = release_all(locks, sequence_locks(locks, seq_ids))
        floor = current_fence(locks)
        present = list(session.scalars(select(Sequence.id).where(Sequence.id.in_(seq_ids))))
        writes.forget(session, seq_ids, floor)
    return Forgotten(sorted(present), released)


@dataclass(frozen=True)
class DatabaseStatus:
    description: str
    revision: str | None
    head: str | None
    error: str | None = None  # why the database could not be read
    with_values: int = 0
    sequences: int = 0
    # None when the schema predates refreshing (migration 0006) or nobody asked.
    refresh: RefreshBacklog | None = None


def database_status(database_url: str, refresh_after: float | None = None) -> DatabaseStatus:
    """Revision against head and how much is cached (and, given `refresh_after`, how
    many cached sequences wait for a check); never raises for a database problem."""
    description, head = database_admin.describe(database_url), database_admin.head_revision()
    backlog = None
    try:
        revision = database_admin.current_revision(database_url)
        with _session(database_url) as session:
            inspector = inspect(session.connection())
            if revision is None or not inspector.has_table(SequenceValues.__tablename__):
                return DatabaseStatus(description, revision, head)
            sequences = session.scalar(select(func.count()).select_from(Sequence)) or 0
            with_values = session.scalar(select(func.count()).select_from(SequenceValues)) or 0
            columns = {column["name"] for column in inspector.get_columns(Sequence.__tablename__)}
            if refresh_after is not None and "checked_at" in columns:
                backlog = refresh_backlog(session, refresh_after)
    except SQLAlchemyError as exc:
        message = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return DatabaseStatus(description, None, head, error=message)
    return DatabaseStatus(description, revision, head, None, with_values, sequences, backlog)


def refresh_targets(
    database_url: str, older_than: float | None, seq_ids: list[str] | None
) -> list[str]:
    """The cached sequences a `backscope refresh` checks, oldest check first: those of
    `seq_ids` (all cached ones when None) last checked more than `older_than` seconds
    ago (or never; any time when None)."""
    with _session(database_url) as session:
        return refresh_candidates(session, older_than, seq_ids=seq_ids)

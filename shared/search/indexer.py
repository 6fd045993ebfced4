"""Building the local search index (`backscope index`, and beat's daily task).

A build compares every entry the source has with what the index holds and writes only
what changed: new and changed entries, entries gone from the source, and the in-degree
(`cited`) of the entries whose citations changed. It all happens in one transaction, so
a build that fails half-way leaves the previous index serving, never a partial one, and
two builds never run at once (a transaction-level advisory lock). At commit the API
processes are told to drop the search answers and names they hold in memory.

From the bulk files, the build first asks the OEIS whether they changed since the last
build (If-None-Match / If-Modified-Since): an unchanged file costs one small answer.
"""

from __future__ import annotations

import csv
import io
import logging
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import CHANGES_CHANNEL, EVERYTHING, session_scope
from shared.models import SearchIndex
from shared.oeis.client import OEISClient
from shared.search.sources import BULK_FILES, Candidate, IndexRow, bulk_entries, seq_files
from shared.store.writes import refresh_document

log = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key: one build at a time.
_BUILD_GUARD = 0x696E6478  # "indx"
COPY_BATCH = 5000
# A build that writes more entries than this analyzes the table before it commits.
ANALYZE_AFTER = 1000
NULL_TEXT = "\\N"
# Quoted: "offset" is a keyword.
_COLUMNS = [f'"{field.name}"' for field in fields(IndexRow)]
_NULLABLE = ['"keywords"', '"xrefs"', '"author"', '"offset"', '"revision"', '"modified"', '"stamp"']
# How popular an entry is: floor(log2(1 + cited)), plus 3 for keyword core, 1 for nice.
_POPULARITY = """
    floor(log(2.0, 1 + {cited}::numeric))::integer
    + CASE WHEN ',' || coalesce(keywords, '') || ',' LIKE '%,core,%' THEN 3 ELSE 0 END
    + CASE WHEN ',' || coalesce(keywords, '') || ',' LIKE '%,nice,%' THEN 1 ELSE 0 END
"""

# phase ("download names.gz", "read", "write"), done, total
Progress = Callable[[str, int, int], None]


def _quiet(phase: str, done: int, total: int) -> None:
    """No progress shown."""


class IndexBusy(Exception):
    """Another build is running."""


@dataclass(frozen=True)
class BuildResult:
    source: str
    location: str
    entries: int
    added: int
    changed: int
    removed: int
    seconds: float


def source_of(settings: Settings, source: str | None = None) -> str:
    """The source a build uses: `source` if given, else BACKSCOPE_INDEX_SOURCE, where
    "auto" means the oeisdata checkout when one is configured, else the bulk files."""
    chosen = source or settings.index_source
    if chosen == "auto":
        return "oeisdata" if settings.oeisdata_dir else "bulk"
    return chosen


def _array(items: Iterable[str]) -> str:
    """A PostgreSQL array literal."""
    quoted = (item.replace("\\", "\\\\").replace('"', '\\"') for item in items)
    return "{" + ",".join(f'"{item}"' for item in quoted) + "}"


def _csv_value(value: object) -> object:
    if value is None:
        return NULL_TEXT
    if isinstance(value, list):
        return _array(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    return value


class _Copy:
    """Rows COPYed into a table in batches, so a full build never holds every row at
    once. CSV with every string quoted; None is written as NULL_TEXT, which PostgreSQL
    reads as NULL in the columns that may be NULL."""

    def __init__(
        self, session: Session, table: str, columns: list[str], nullable: list[str] = ()
    ) -> None:
        self.cursor = session.connection().connection.driver_connection.cursor()
        options = f"FORMAT csv, NULL '{NULL_TEXT}'"
        if nullable:
            options += f", FORCE_NULL ({', '.join(nullable)})"
        self.sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH ({options})"
        self._start()

    def _start(self) -> None:
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
        self.pending = 0

    def add(self, row: Iterable[object]) -> None:
        self.writer.writerow([_csv_value(value) for value in row])
        self.pending += 1
        if self.pending == COPY_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.buffer.seek(0)
            self.cursor.copy_expert(self.sql, self.buffer)
        self._start()


@dataclass
class _Changes:
    rows: list[str]  # the ids of new or changed entries
    added: int  # how many of them are new
    restamped: list[tuple[str, str]]  # (id, stamp): same content, new file stamp
    removed: list[str]
    seen: int  # entries the source has


def _compare(
    session: Session, candidates: Iterable[Candidate], progress: Progress, full: bool
) -> _Changes:
    """What differs between the source's entries and the index's (everything, when
    `full`); the new and changed rows go to the temporary table `incoming_entries`."""
    session.execute(
        text(
            "CREATE TEMP TABLE incoming_entries"
            " (LIKE search_entries INCLUDING DEFAULTS) ON COMMIT DROP"
        )
    )
    incoming = _Copy(session, "incoming_entries", _COLUMNS, _NULLABLE)
    known = {
        seq_id: ("", None) if full else (digest, stamp)
        for seq_id, digest, stamp in session.execute(
            text("SELECT id, digest, stamp FROM search_entries")
        )
    }
    changes = _Changes([], 0, [], [], 0)
    seen: set[str] = set()
    for candidate in candidates:
        seen.add(candidate.id)
        old = known.get(candidate.id)
        if old is not None and candidate.stamp is not None and old[1] == candidate.stamp:
            continue
        digest = candidate.digest()
        if old is not None and old[0] == digest:
            if candidate.stamp != old[1]:
                changes.restamped.append((candidate.id, candidate.stamp or ""))
            continue
        row = candidate.row()
        if row is not None:  # an unusable entry keeps the version indexed before, if any
            incoming.add(astuple(row))
            changes.rows.append(row.id)
            changes.added += old is None
            if len(changes.rows) % COPY_BATCH == 0:
                progress("changed", len(changes.rows), 0)
    incoming.flush()
    changes.seen = len(seen)
    changes.removed = sorted(known.keys() - seen)
    return changes


_UPSERT = f"""
    INSERT INTO search_entries ({", ".join(_COLUMNS)})
    SELECT {", ".join(_COLUMNS)} FROM incoming_entries
    ON CONFLICT (id) DO UPDATE SET
        {", ".join(f"{column} = excluded.{column}" for column in _COLUMNS if column != '"id"')}
"""

# Every entry's in-degree from the citations of the entries that are not dead; only
# rows whose count or popularity changes are written.
_CITED = f"""
    UPDATE search_entries AS e
    SET cited = c.n, popularity = {_POPULARITY.format(cited="c.n")}
    FROM (
        SELECT s.id, count(x.cite) AS n
        FROM search_entries AS s
        LEFT JOIN (SELECT unnest(cites) AS cite FROM search_entries WHERE NOT dead) AS x
            ON x.cite = s.id
        GROUP BY s.id
    ) AS c
    WHERE c.id = e.id
      AND (e.cited <> c.n OR e.popularity <> {_POPULARITY.format(cited="c.n")})
"""


def _write(session: Session, changes: _Changes, progress: Progress) -> None:
    """Apply what _compare found, and count the citations again."""
    progress("write", 0, 3)
    session.execute(text(_UPSERT))
    if changes.removed:
        session.execute(
            text("DELETE FROM search_entries WHERE id = ANY(:ids)"), {"ids": changes.removed}
        )
    progress("write", 1, 3)
    if changes.restamped:
        session.execute(
            text("CREATE TEMP TABLE incoming_stamps (id text, stamp text) ON COMMIT DROP")
        )
        stamps = _Copy(session, "incoming_stamps", ["id", "stamp"])
        for row in changes.restamped:
            stamps.add(row)
        stamps.flush()
        session.execute(
            text(
                "UPDATE search_entries AS e SET stamp = i.stamp"
                " FROM incoming_stamps AS i WHERE i.id = e.id"
            )
        )
    progress("write", 2, 3)
    session.execute(text(_CITED))
    if len(changes.rows) + len(changes.removed) > ANALYZE_AFTER:
        # Fresh statistics at commit: the planner's choice between the word index and
        # the popularity order depends on them (autovacuum may come much later).
        session.execute(text("ANALYZE search_entries"))
    progress("write", 3, 3)


def _renamed_documents(session: Session, seq_ids: list[str]) -> None:
    """Rebuild the ready-made answers of cached sequences that take their name from
    the index (their own metadata is not loaded) and whose indexed name changed."""
    found = session.scalars(
        text(
            "SELECT v.id FROM sequence_values AS v JOIN sequences AS s ON s.id = v.id"
            " WHERE s.meta_fetched_at IS NULL AND v.id = ANY(:ids)"
        ),
        {"ids": seq_ids},
    )
    for seq_id in found:
        refresh_document(session, seq_id)


def _fetch(
    client: OEISClient, folder: Path, name: str, validators: dict[str, str], progress: Progress
) -> dict[str, str] | None:
    with open(folder / name, "wb") as into:
        return client.download(
            f"/{name}",
            into,
            validators,
            lambda done, total: progress(f"download {name}", done, total or done),
        )


def _download(
    client: OEISClient, folder: Path, validators: dict[str, str], progress: Progress
) -> dict[str, str] | None:
    """Download both bulk files into `folder` and return their validators (keys
    "names.gz:etag", ...); None if neither changed since `validators`."""
    got = {
        name: _fetch(
            client,
            folder,
            name,
            {key.split(":", 1)[1]: v for key, v in validators.items() if key.startswith(name)},
            progress,
        )
        for name in BULK_FILES
    }
    if all(found is None for found in got.values()):
        return None
    for name, found in got.items():
        if found is None:  # not modified, but the build reads both files
            got[name] = _fetch(client, folder, name, {}, progress)
    return {f"{name}:{key}": v for name, found in got.items() for key, v in (found or {}).items()}


def _changes(
    session: Session,
    settings: Settings,
    client: OEISClient,
    source: str,
    validators: dict[str, str],
    progress: Progress,
    full: bool,
) -> tuple[_Changes | None, dict[str, str]]:
    """What changed in `source` since the index was built, and the bulk files'
    validators; None if the bulk files have not changed."""
    if source == "oeisdata":
        if settings.oeisdata_dir is None:
            raise ValueError("BACKSCOPE_OEISDATA_DIR is not set")
        files = seq_files(settings.oeisdata_dir, lambda done, total: progress("read", done, total))
        return _compare(session, files, progress, full), {}
    with tempfile.TemporaryDirectory(prefix="backscope-index-") as name:
        folder = Path(name)
        found = _download(client, folder, validators, progress)
        if found is None:
            return None, validators
        entries = bulk_entries(
            folder / BULK_FILES[0],
            folder / BULK_FILES[1],
            lambda done, total: progress("read", done, total),
        )
        return _compare(session, entries, progress, full), found


def build(
    settings: Settings,
    client: OEISClient,
    source: str | None = None,
    full: bool = False,
    progress: Progress = _quiet,
) -> BuildResult:
    """Build or update the index from `source` (see source_of) in one transaction.

    `full` reads and rewrites every entry, even if the bulk files say they have not
    changed. Raises IndexBusy if another build is running, and shared.errors for a
    source that fails; then the previous index stays as it was.
    """
    source = source_of(settings, source)
    started = time.monotonic()
    with session_scope() as session:
        if not session.scalar(select(func.pg_try_advisory_xact_lock(_BUILD_GUARD))):
            raise IndexBusy("another index build is running")
        state = session.get(SearchIndex, 1)
        same_source = state is not None and state.source == source
        previous = state.validators if same_source and not full and state else {}
        changes, validators = _changes(session, settings, client, source, previous, progress, full)
        if changes is None:  # the bulk files have not changed: the index is current
            changes = _Changes([], 0, [], [], state.entries if state else 0)
        else:
            _write(session, changes, progress)
        changed_ids = changes.rows + changes.removed
        _renamed_documents(session, changed_ids)
        result = BuildResult(
            source=source,
            location=settings.oeis_url if source == "bulk" else str(settings.oeisdata_dir),
            entries=changes.seen,
            added=changes.added,
            changed=len(changes.rows) - changes.added,
            removed=len(changes.removed),
            seconds=time.monotonic() - started,
        )
        values = {
            "source": result.source,
            "location": result.location,
            "entries": result.entries,
            "built_at": func.now(),
            "seconds": result.seconds,
            "changed": len(changed_ids),
            "validators": validators,
        }
        if state is None:
            session.add(SearchIndex(id=1, **values))
        else:
            for key, value in values.items():
                setattr(state, key, value)
        if changed_ids or not same_source:
            session.execute(select(func.pg_notify(CHANGES_CHANNEL, EVERYTHING)))
    log.info("index.built", extra=result.__dict__)
    return result


def remove(session: Session) -> int:
    """Delete the index (searches go to the OEIS again); how many entries it held."""
    session.execute(select(func.pg_advisory_xact_lock(_BUILD_GUARD)))
    removed = session.execute(text("DELETE FROM search_entries")).rowcount
    session.execute(text("DELETE FROM search_index"))
    session.execute(select(func.pg_notify(CHANGES_CHANNEL, EVERYTHING)))
    return removed


@dataclass(frozen=True)
class IndexStatus:
    source: str
    location: str
    entries: int
    built_at: object
    seconds: float
    changed: int
    age: float  # seconds since the build


def status(session: Session) -> IndexStatus | None:
    """What the index holds, or None if none was built."""
    state = session.get(SearchIndex, 1)
    if state is None:
        return None
    age = session.scalar(select(func.extract("epoch", func.now() - SearchIndex.built_at)))
    return IndexStatus(
        state.source,
        state.location,
        state.entries,
        state.built_at,
        state.seconds,
        state.changed,
        float(age or 0),
    )

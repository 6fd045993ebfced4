"""The API's in-memory cache of hot-path lookups (api/readcache.py), against the real
database: kept until PostgreSQL reports a change, never used while it cannot listen."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import psycopg2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from api.readcache import Listener, ReadCache
from shared.admin import database as database_admin
from shared.db import listen_connection, session_scope
from shared.oeis.parsing import BFile, Entry
from shared.redis_db import get_redis
from shared.store.reads import Cached, read_cached
from shared.store.writes import clear_all, forget, store_factors, store_metadata, store_values
from shared.work.lock import current_fence
from tests.helpers import wait_until


class CountingLoad:
    """read_cached, counting the lookups that reach the database."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, seq_id: str) -> Cached | None:
        self.calls += 1
        return read_cached(seq_id)


class Gate:
    """Listening connections that a test can cut, and keep from coming back."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.backends: list[int] = []

    def connect(self):
        if not self.open.is_set():
            raise ConnectionError("the test keeps the cache from listening")
        connection = listen_connection()
        self.backends.append(connection.get_backend_pid())
        return connection

    def cut(self) -> None:
        """Close the gate and end the listening connection from the server's side."""
        self.open.clear()
        with session_scope() as session:
            for pid in self.backends:
                session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


class Observed(ReadCache):
    """A ReadCache that records the change notifications it has handled, and each time
    its listening connection went live or stopped being so; it listens through a Gate."""

    def __init__(self, load, max_bytes: int = 2**20, size=lambda _: 100) -> None:
        self.gate = Gate()
        self.listener = Listener(self.gate.connect)
        self.heard: list[str] = []
        self.went_live: list[bool] = []
        super().__init__(load, self.listener, max_bytes=max_bytes, size=size)

    def changed(self, key: str) -> None:
        super().changed(key)
        self.heard.append(key)

    def _set_live(self, live: bool) -> None:
        super()._set_live(live)
        self.went_live.append(live)

    def start(self) -> Observed:
        self.get("A000000")  # the first lookup starts the listening thread
        wait_until(lambda: self.live, 30, "the cache to listen")
        return self

    def write(self, change) -> None:
        """Make a change in its own transaction and wait until the news arrives."""
        self.heard.clear()
        with session_scope() as session:
            change(session)
        wait_until(lambda: self.heard, 30, "the change notification")


_last_token = 0


def token() -> int:
    """A fencing token newer than any handed out so far (here or by the lock)."""
    global _last_token
    _last_token = max(_last_token, current_fence(get_redis("locks"))) + 1
    return _last_token


def values(seq_id: str, terms: list[str]):
    return lambda session: store_values(session, seq_id, BFile(0, terms), token=token())


@pytest.fixture
def caches(database) -> Iterator[Callable[..., Observed]]:
    """Make caches for the test; afterwards they stop listening (their threads live on,
    waiting to connect again, but hold no connection)."""
    made: list[Observed] = []

    def make(load, **options) -> Observed:
        made.append(Observed(load, **options))
        return made[-1]

    yield make
    for reads in made:
        reads.gate.cut()


@pytest.fixture
def cache(caches):
    load = CountingLoad()
    return caches(load).start(), load


def test_kept_until_the_sequence_changes(cache) -> None:
    reads, load = cache
    reads.write(values("A000045", ["0", "1", "1"]))
    first = reads.get("A000045")
    calls = load.calls
    assert reads.get("A000045") is first  # from memory
    assert load.calls == calls

    reads.write(values("A000045", ["0", "1", "1", "2"]))
    assert reads.get("A000045").term_count == 4
    assert reads.get("A000045").etag != first.etag


def add_name(session) -> None:
    store_metadata(
        session, Entry("A000045", "Fibonacci numbers.", 0, [], "nonn", ""), token=token()
    )


def add_factorization(session) -> None:
    values_token = session.scalar(text("SELECT token FROM sequence_values WHERE id = 'A000045'"))
    store_factors(session, "A000045", values_token, [(0, "[0,1]")], token=token())


@pytest.mark.parametrize(
    "change, after, everything",
    [
        pytest.param(add_name, "Fibonacci numbers.", False, id="name arrives"),
        pytest.param(add_factorization, 0, False, id="factorization stored"),
        pytest.param(
            lambda session: forget(session, ["A000045"], token=token()), None, False, id="forget"
        ),
        pytest.param(lambda session: clear_all(session, token=token()), None, True, id="clear"),
    ],
)
def test_every_kind_of_change_drops_the_entry(cache, change, after, everything: bool) -> None:
    reads, load = cache
    reads.write(values("A000045", ["0", "1", "1"]))
    reads.write(values("A000040", ["2", "3", "5"]))
    assert reads.get("A000045").name is None
    assert reads.get("A000045").factored_through is None
    reads.get("A000040")

    reads.write(change)
    found = reads.get("A000045")
    if after is None:
        assert found is None
    else:
        assert after in (found.name, found.factored_through)
    # Only the sequence that changed is looked up again (every one after a clear).
    calls = load.calls
    reads.get("A000040")
    assert load.calls == calls + everything


def test_a_lookup_overtaken_by_a_change_is_not_kept(caches) -> None:
    def load(seq_id: str) -> Cached | None:
        found = read_cached(seq_id)  # the old data ...
        if found is not None and found.term_count == 2:
            reads.write(values(seq_id, ["0", "1", "1"]))  # ... replaced, news heard, meanwhile
        return found

    reads = caches(load).start()
    reads.write(values("A000045", ["0", "1"]))
    assert reads.get("A000045").term_count == 2  # answered with what it read ...
    assert reads.get("A000045").term_count == 3  # ... but not kept


def test_not_trusted_while_the_connection_is_lost(caches) -> None:
    load = CountingLoad()
    reads = caches(load).start()
    reads.write(values("A000045", ["0", "1"]))
    reads.get("A000045")
    reads.gate.cut()
    wait_until(lambda: not reads.live, 30, "the loss to be noticed")
    # A change made now is not heard, and every lookup goes to the database.
    with session_scope() as session:
        values("A000045", ["0", "1", "1"])(session)
    calls = load.calls
    assert reads.get("A000045").term_count == 3
    assert reads.get("A000045").term_count == 3
    assert load.calls == calls + 2
    # It connects again by itself, and then keeps answers again.
    reads.gate.open.set()
    wait_until(lambda: reads.live, 60, "the cache to listen again")
    reads.get("A000045")
    calls = load.calls
    assert reads.get("A000045").term_count == 3
    assert load.calls == calls


class Outage:
    """A PostgreSQL cluster of the test's own, a ReadCache reading it, and a switch that
    holds the cache's next attempt to listen again (as if it were still to come)."""

    def __init__(self, server) -> None:
        self.server = server
        url = server.url("backscope")
        database_admin.create_database(url)
        database_admin.upgrade(url)
        self.engine = create_engine(url, connect_args={"connect_timeout": 2})
        self.writer = create_engine(url, poolclass=NullPool)  # as a worker would write
        self.may_listen = threading.Event()
        self.may_listen.set()
        self.reads: ReadCache[str] = ReadCache(
            self.load, Listener(self.connect), (OperationalError,), max_bytes=2**20, size=len
        )

    def load(self, seq_id: str) -> str | None:
        """The terms, as one string: what the cache keeps."""
        with self.engine.connect() as connection:
            terms = connection.scalar(
                text("SELECT terms FROM sequence_values WHERE id = :id"), {"id": seq_id}
            )
        return None if terms is None else ",".join(terms)

    def connect(self):
        self.may_listen.wait()
        connection = psycopg2.connect(
            host="127.0.0.1", port=self.server.port, user="root", dbname="backscope"
        )
        connection.autocommit = True
        return connection

    def store(self, seq_id: str, terms: list[str]) -> None:
        with Session(self.writer) as session, session.begin():
            store_values(session, seq_id, BFile(0, terms), token=token())

    def close(self) -> None:
        """Dispose of the engines; the listening thread waits for good at its next try."""
        self.may_listen.clear()
        self.engine.dispose()
        self.writer.dispose()


@pytest.fixture
def outage(postgres_server) -> Iterator[Outage]:
    outage = Outage(postgres_server)
    yield outage
    outage.close()


def test_held_answers_serve_while_the_database_is_down_and_never_after_a_change(
    outage: Outage,
) -> None:
    database, reads = outage.server, outage.reads
    for seq_id, terms in (("A000045", "0,1"), ("A000040", "2,3"), ("A000142", "1,1,2")):
        outage.store(seq_id, terms.split(","))
    reads.get("A000045")
    wait_until(lambda: reads.live, 10, "the cache to listen")
    for seq_id, terms in (("A000045", "0,1"), ("A000040", "2,3"), ("A000142", "1,1,2")):
        assert reads.get(seq_id) == terms  # kept from now on

    outage.may_listen.clear()
    database.stop()
    wait_until(lambda: not reads.live, 10, "the loss to be noticed")
    # Nothing can change: what is held is still exact.
    assert reads.get("A000045") == "0,1"
    with pytest.raises(OperationalError):
        reads.get("A000001")  # not held

    # Back, not listening yet: changes are not heard, so the database answers ...
    database.start()
    outage.store("A000045", ["0", "1", "1"])
    assert reads.get("A000045") == "0,1,1"
    # ... also when the connection the cache last used died with the old server.
    database.stop()
    database.start()
    outage.store("A000040", ["2", "3", "5"])
    assert reads.get("A000040") == "2,3,5"
    # Those answers are not kept, and the old ones are dropped.
    database.stop()
    for seq_id in ("A000045", "A000040"):
        with pytest.raises(OperationalError):
            reads.get(seq_id)

    # A change made before the cache listens again is not missed when it does.
    database.start()
    outage.store("A000142", ["1", "1", "2", "6"])
    outage.may_listen.set()
    wait_until(lambda: reads.live, 10, "the cache to listen again")
    assert reads.get("A000142") == "1,1,2,6"


def test_not_used_while_the_database_sends_no_notifications(caches) -> None:
    """A database whose change triggers are missing (not yet migrated) or disabled."""
    trigger = "ALTER TABLE factorizations {} TRIGGER factorizations_changed"
    with session_scope() as session:
        session.execute(text(trigger.format("DISABLE")))
    try:
        load = CountingLoad()
        reads = caches(load)
        reads.get("A000045")  # starts the listening thread
        with session_scope() as session:
            values("A000045", ["0", "1"])(session)
        # It connected, found a trigger missing, and did not go live.
        wait_until(lambda: reads.went_live, 30, "the cache to connect and look at the triggers")
        assert True not in reads.went_live
        assert not reads.live
        reads.get("A000045")
        calls = load.calls
        assert reads.get("A000045").term_count == 2
        assert load.calls == calls + 1
    finally:
        with session_scope() as session:
            session.execute(text(trigger.format("ENABLE")))
    wait_until(lambda: reads.live, 60, "the cache to listen once the triggers are there")


def test_nothing_kept_for_missing_sequences(cache) -> None:
    reads, load = cache
    calls = load.calls
    assert reads.get("A000045") is None
    assert reads.get("A000045") is None
    assert load.calls == calls + 2


def test_bounded_in_bytes_the_least_recently_used_going_first(caches) -> None:
    """Entries are weighed by `size` (here a sequence's term count, as a document's
    bytes would be), and what is held never weighs more than the budget."""
    load = CountingLoad()
    reads = caches(load, max_bytes=8000, size=lambda cached: cached.term_count).start()
    ids = [f"A00000{n}" for n in range(1, 10)]
    for seq_id in ids:
        reads.write(values(seq_id, ["1"] * 1000))  # 1000 "bytes" each, nine of them
    reads.write(values("A000010", ["1"] * 1001))  # more than an eighth of the budget

    def held(seq_id: str) -> bool:
        """Whether `seq_id` is answered from memory (and so now the most recent)."""
        calls = load.calls
        reads.get(seq_id)
        return load.calls == calls

    for seq_id in ids[:8]:
        reads.get(seq_id)
    assert all(held(seq_id) for seq_id in ids[:8])  # the budget, full
    assert held("A000001")  # used last: A000002 is now the least recently used
    reads.get("A000009")  # one too many: A000002 goes
    assert held("A000001") and held("A000009")
    assert not held("A000002")  # read again, and kept: A000003 goes for it
    # Too large to keep at all: nothing goes for it.
    reads.get("A000010")
    assert not held("A000010")
    assert all(held(seq_id) for seq_id in ["A000001", "A000002", *ids[3:]])


def test_the_caches_of_a_process_share_one_listening_connection(caches) -> None:
    first = caches(CountingLoad()).start()
    first.write(values("A000045", ["0", "1"]))
    load = CountingLoad()
    others: list[ReadCache[Cached]] = []
    for _ in range(2):
        others.append(ReadCache(load, first.listener, max_bytes=2**20, size=lambda _: 100))
        assert others[-1].live  # listening already; it holds nothing, so trusted at once
        assert others[-1].get("A000045").term_count == 2
    calls = load.calls
    for reads in others:
        assert reads.get("A000045").term_count == 2  # from memory
    assert load.calls == calls
    first.write(values("A000045", ["0", "1", "1"]))
    # The one notification reaches them all.
    wait_until(
        lambda: all(reads.get("A000045").term_count == 3 for reads in others), 30, "the news"
    )
    assert len(first.gate.backends) == 1

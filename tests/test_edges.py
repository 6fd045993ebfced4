"""Edges a careful review found (issue #26): each test here failed before its fix."""

from __future__ import annotations

import gzip
import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event, text

import api.documents
import api.jobs
import api.responses
import api.routes.sequences
from api.documents import DocumentCache, values_slice
from shared.db import get_engine, get_read_engine, session_scope
from shared.errors import UpstreamBadData
from shared.factors import batches
from shared.oeis.parsing import BFile, Entry, canonical_value, parse_bfile
from shared.redis_db import get_redis
from shared.store import ingest
from shared.store.reads import read_cached, read_factors
from shared.store.revisions import refresh_candidates, store_refresh
from shared.store.writes import store_factors, store_metadata, store_values
from shared.work.lock import lock_key
from tests.helpers import wait_until


@pytest.mark.timeout(20)  # the old pattern took minutes on this line (0.16 s at 4k)
def test_a_long_run_of_zeros_is_parsed_in_one_pass() -> None:
    line = "1 " + "0" * 300_000 + "x"
    with pytest.raises(UpstreamBadData, match="non-numeric value on line 1"):
        parse_bfile([line], "A000001")
    assert canonical_value("0" * 300_000 + "7") == "7"
    assert canonical_value("-" + "0" * 300_000) == "0"
    assert [canonical_value(v) for v in ("-007", "00", "-0", "+5", "1-2")] == [
        "-7",
        "0",
        "0",
        None,
        None,
    ]


def test_the_refresh_sweep_reads_sequences_in_index_order(database) -> None:
    with session_scope() as session:
        session.execute(
            text(
                "INSERT INTO sequences (id, name, meta_fetched_at, checked_at)"
                " SELECT 'A' || lpad(n::text, 6, '0'), 'x', now(),"
                "        CASE WHEN n % 7 = 0 THEN NULL"
                "             ELSE now() - n * interval '1 minute' END"
                " FROM generate_series(1, 20000) AS n"
            )
        )
        session.execute(text("ANALYZE sequences"))
    statements: list[str] = []

    def explain(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT SEQUENCES.ID"):
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            statements.append(json.dumps(cursor.fetchone()[0]))

    event.listen(get_engine(), "before_cursor_execute", explain)
    try:
        with session_scope() as session:
            due = refresh_candidates(session, 3600, limit=500, backoff=True)
    finally:
        event.remove(get_engine(), "before_cursor_execute", explain)
    assert len(due) == 500 and due[0] == "A000007"  # never checked comes first
    assert statements and "ix_sequences_checked_at" in statements[0]


def test_checking_whether_values_are_cached_reads_no_terms(database) -> None:
    with session_scope() as session:
        store_values(session, "A000045", BFile(0, ["0", "1", "1"]), 1)
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(get_engine(), "before_cursor_execute", record)
    try:
        assert ingest.download_values(None, "A000045", 2) == "cached"  # no download
    finally:
        event.remove(get_engine(), "before_cursor_execute", record)
    read = " ".join(statements)
    assert "sequence_values.terms" not in read and "sequence_values.document" not in read


def test_metadata_answers_are_gzipped_once(client, monkeypatch) -> None:
    assert client.get("/api/get_oeis_metadata/A000045").status_code == 200
    monkeypatch.setattr(api.responses, "GZIP_MIN_BYTES", 100)  # its answer is ~600 bytes
    compressed: list[int] = []
    real = gzip.compress

    def counting(data: bytes, *args, **kwargs) -> bytes:
        compressed.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(gzip, "compress", counting)
    for _ in range(3):
        answer = client.get("/api/get_oeis_metadata/A000045", headers={"Accept-Encoding": "gzip"})
        assert answer.headers["Content-Encoding"] == "gzip"
    assert len(compressed) == 1


def _factored_then_revised(seq_id: str) -> None:
    """Ten terms, all factored; then a refresh corrects term 5, which drops its
    factorization (the largest factored index stays 10, the last one)."""
    terms = [str(n) for n in range(1, 11)]
    with session_scope() as session:
        store_values(session, seq_id, BFile(1, terms), token=1)
        store_factors(session, seq_id, 1, [(n, f"[{n},1]") for n in range(1, 11)], token=2)
    assert read_cached(seq_id).factored(0)
    revised = [*terms[:4], "55", *terms[5:]]
    entry = Entry(seq_id, "Revised", 1, [], "nonn", "")
    with session_scope() as session:
        assert store_refresh(session, entry, BFile(1, revised), token=3) == "new_terms"


def test_a_revision_reopens_exactly_the_terms_it_changed(database) -> None:
    _factored_then_revised("A000027")
    cached = read_cached("A000027")
    assert cached.factored(4) and not cached.factored(5) and not cached.factored(0)
    limits = batches.Limits(budget=2, max_bits=512)
    assert batches.factor_sequence("A000027", 0, 4, limits) == "stored"
    cached = read_cached("A000027")
    assert cached.factored(0)
    with session_scope() as session:
        factors = read_factors(session, "A000027", 0, 512)
    assert factors.complete and factors.factors[5] == "[5,1;11,1]"


def test_the_factors_route_asks_for_the_holes_a_revision_left(client, short_wait) -> None:
    _factored_then_revised("A000027")
    answer = client.get("/api/get_oeis_factors/A000027/0")
    assert answer.status_code == 200 and answer.get_json()["complete"] is False
    # Factoring is scheduled (no factor worker runs here, so its lock stays held).
    assert get_redis("locks").exists(lock_key("factors", "A000027"))


def _fresh_documents(monkeypatch, max_bytes: int, large_bytes: int) -> DocumentCache:
    cache = DocumentCache(max_bytes, large_bytes)
    monkeypatch.setattr(api.routes.sequences, "documents", cache)
    monkeypatch.setattr(api.responses, "documents", cache)
    return cache


def _store_and_wait(client, terms: dict[str, list[str]]) -> None:
    """Store the values and names (so that no download changes them meanwhile)."""
    with session_scope() as session:
        for token, (seq_id, values) in enumerate(terms.items(), start=1):
            store_values(session, seq_id, BFile(1, values), token=token)
            store_metadata(session, Entry(seq_id, f"Test {seq_id}", 1, [], "", ""), token)
    for seq_id in terms:  # (the header reads no terms)
        wait_until(
            lambda seq_id=seq_id: client.get(f"/api/get_oeis_header/{seq_id}").status_code == 200,
            10,
            f"the API to see {seq_id}",
        )


def test_a_large_document_is_read_once_and_never_takes_the_reserved_threads(
    client, monkeypatch
) -> None:
    """Requests for a document too large to share the budget wait for one read of it,
    only as large readers (the rest are 503 at once), and it is kept afterwards; the
    wait slots, all taken by requests for uncached data, are not needed."""
    cache = _fresh_documents(monkeypatch, max_bytes=8_000, large_bytes=10**7)
    slots = threading.BoundedSemaphore(3)
    monkeypatch.setattr(api.documents, "_large_readers", slots)
    taken = threading.BoundedSemaphore(1)
    taken.acquire()
    monkeypatch.setattr(api.jobs, "wait_slots", lambda: taken)
    _store_and_wait(client, {"A000027": [str(n) for n in range(1, 2001)], "A000045": ["1", "1"]})
    reading, release, reads = threading.Event(), threading.Event(), []
    real = api.routes.sequences.read_document

    def slow(seq_id: str, etag: str) -> str | None:
        if seq_id == "A000027":
            reads.append(etag)
            reading.set()
            release.wait(30)
        return real(seq_id, etag)

    monkeypatch.setattr(api.routes.sequences, "read_document", slow)
    path = "/api/get_oeis_values/A000027/0"
    with ThreadPoolExecutor(10) as pool:
        asked = [pool.submit(client.get, path) for _ in range(10)]
        assert reading.wait(10)
        wait_until(lambda: sum(f.done() for f in asked) == 7, 10, "the requests without a slot")
        refused = [f.result() for f in asked if f.done()]
        assert {(r.status_code, r.headers["Retry-After"]) for r in refused} == {(503, "1")}
        # Meanwhile, another sequence is served.
        assert client.get("/api/get_oeis_values/A000045/0").status_code == 200
        release.set()
        served = [f.result() for f in asked if f.result().status_code == 200]
    assert len(served) == 3 and len({r.data for r in served}) == 1
    assert len(reads) == 1 and len(served[0].get_json()["values"]) == 2000
    assert cache.size > len(served[0].data)  # kept, apart from the small documents
    for _ in range(3):
        slots.acquire()  # every large reader busy: a kept document needs none ...
    assert client.get(path).data == served[0].data and len(reads) == 1
    # ... nor does a small slice of it; a large one, cut and gzipped anew, does.
    monkeypatch.setattr(api.routes.sequences, "LARGE_SLICE", 1000)
    assert client.get("/api/get_oeis_values/A000027/5").status_code == 200
    assert client.get("/api/get_oeis_values/A000027/1999").status_code == 503
    # Gzipped as it was read, in the slot: gzip-accepting requests compress nothing.
    monkeypatch.setattr(gzip, "compress", lambda *args, **kwargs: pytest.fail("compressed"))
    zipped = client.get(path, headers={"Accept-Encoding": "gzip"})
    assert gzip.decompress(zipped.data) == served[0].data


def test_a_loop_over_counts_reads_the_sequence_once_and_evicts_nothing(client, monkeypatch) -> None:
    cache = _fresh_documents(monkeypatch, max_bytes=64 * 2**20, large_bytes=128 * 2**20)
    terms = [str(n * n) for n in range(1, 2001)]
    _store_and_wait(client, {"A000290": terms, "A000045": ["1", "1"]})
    assert client.get("/api/get_oeis_values/A000045/0").status_code == 200
    assert client.get("/api/get_oeis_values/A000290/0").status_code == 200
    held = cache.size
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(get_read_engine(), "before_cursor_execute", record)
    try:
        for count in range(1, 400):
            values = client.get(f"/api/get_oeis_values/A000290/{count}").get_json()["values"]
            assert values == {str(n): terms[n - 1] for n in range(1, count + 1)}
        chunk = client.get("/api/get_oeis_chunk/A000290/1").get_json()["values"]
        assert chunk == {str(n): terms[n - 1] for n in range(1024, 2001)}
    finally:
        event.remove(get_read_engine(), "before_cursor_execute", record)
    # Cut out of the whole document held in memory: nothing read, nothing more kept.
    assert not [s for s in statements if "sequence_values" in s]
    assert cache.size == held


def test_slices_of_a_long_document_hold_exactly_their_terms() -> None:
    """values_slice bisects a long document for where terms begin: every range of
    positions, beyond either end too, holds exactly its terms, whatever the indices."""
    rng = random.Random(26)
    for first_index in (0, 1, -43, 3638334640025):
        values = {str(first_index + n): str(rng.randint(-(10**30), 10**30)) for n in range(3000)}
        name = 'A name with ,"5":" in it'
        answer = {"id": "A000001", "name": name, "values": values}
        whole = json.dumps(answer, separators=(",", ":")).encode()  # as documents are
        keys = list(values)
        for _ in range(200):
            first, last = rng.randint(1, 3002), rng.randint(0, 3002)
            cut = json.loads(values_slice(whole, first_index, first, last))
            assert cut["name"] == name
            assert cut["values"] == {key: values[key] for key in keys[first - 1 : last]}

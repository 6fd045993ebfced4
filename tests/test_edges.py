"""Edges a careful review found (issue #26): each test here failed before its fix."""

from __future__ import annotations

import gzip
import json

import pytest
from sqlalchemy import event, text

import api.responses
from shared import factor_batches, ingest
from shared.db import get_engine, session_scope
from shared.errors import UpstreamBadData
from shared.lock import lock_key
from shared.parsing import BFile, Entry, canonical_value, parse_bfile
from shared.redis_db import get_redis
from shared.store import (
    read_cached,
    read_factors,
    refresh_candidates,
    store_factors,
    store_refresh,
    store_values,
)


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
        assert ingest.fetch_values(None, "A000045", 2) == "cached"  # no download
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
    limits = factor_batches.Limits(budget=2, max_bits=512)
    assert factor_batches.factor_values("A000027", 0, 4, limits) == "stored"
    cached = read_cached("A000027")
    assert cached.factored(0)
    with session_scope() as session:
        factors = read_factors(session, "A000027", 0, 512)
    assert factors.complete and factors.factors[5] == "[5,1;11,1]"


def test_the_factors_route_asks_for_the_holes_a_revision_left(client) -> None:
    _factored_then_revised("A000027")
    answer = client.get("/api/get_oeis_factors/A000027/0")
    assert answer.status_code == 200 and answer.get_json()["complete"] is False
    # Factoring is scheduled (no factor worker runs here, so its lock stays held).
    assert get_redis("locks").exists(lock_key("factors", "A000027"))

"""Edges a careful review found (issue #26): each test here failed before its fix."""

from __future__ import annotations

import gzip
import json

import pytest
from sqlalchemy import event, text

import api.responses
from shared import ingest
from shared.db import get_engine, session_scope
from shared.errors import UpstreamBadData
from shared.parsing import BFile, canonical_value, parse_bfile
from shared.store import refresh_candidates, store_values


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

"""Fenced writes on a real PostgreSQL: older tokens never overwrite newer data."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from sqlalchemy import select

from shared.db import session_scope
from shared.models import Sequence, SequenceValues
from shared.oeis.parsing import BFile, Entry
from shared.store.reads import read_cached
from shared.store.writes import clear_all, forget, store_metadata, store_values


@pytest.fixture
def db(database):
    return database


def stored(seq_id: str) -> tuple[list[str], int] | None:
    with session_scope() as session:
        row = session.get(SequenceValues, seq_id)
        return (row.terms, row.token) if row else None


def test_newer_token_wins_older_is_refused_and_logged(db, caplog) -> None:
    with session_scope() as session:
        assert store_values(session, "A000045", BFile(0, ["0", "1", "1"]), token=20)
    with caplog.at_level(logging.WARNING), session_scope() as session:
        assert not store_values(session, "A000045", BFile(0, ["9"]), token=10)
    assert "store.write_refused" in caplog.messages
    assert stored("A000045") == (["0", "1", "1"], 20)
    with session_scope() as session:
        assert store_values(session, "A000045", BFile(0, ["0", "1"]), token=30)
    assert stored("A000045") == (["0", "1"], 30)


def test_metadata_is_fenced_too(db) -> None:
    entry = Entry("A000045", "Fibonacci numbers", 0, ["Cf. A000032."], "nonn", "")
    with session_scope() as session:
        assert store_metadata(session, entry, token=5)
    with session_scope() as session:
        assert not store_metadata(session, dataclasses.replace(entry, name="stale"), token=4)
    with session_scope() as session:
        assert session.get(Sequence, "A000045").name == "Fibonacci numbers"


def test_clear_refuses_writes_started_before_it(db) -> None:
    with session_scope() as session:
        store_values(session, "A000045", BFile(0, ["0"]), token=100)
    with session_scope() as session:
        clear_all(session, token=150)
    assert stored("A000045") is None
    with session_scope() as session:
        assert not store_values(session, "A000045", BFile(0, ["0"]), token=120)
    assert stored("A000045") is None
    with session_scope() as session:
        assert store_values(session, "A000045", BFile(0, ["0"]), token=151)


def test_forget_removes_only_named_and_fences_them(db) -> None:
    with session_scope() as session:
        for seq_id in ("A000045", "A000040"):
            store_values(session, seq_id, BFile(1, ["2"]), token=10)
    with session_scope() as session:
        assert forget(session, ["A000045"], token=11) == 1
    with session_scope() as session:
        assert read_cached("A000045") is None
        assert read_cached("A000040").term_count == 1
        assert set(session.scalars(select(SequenceValues.id))) == {"A000040"}
    with session_scope() as session:
        assert not store_values(session, "A000045", BFile(1, ["2"]), token=11)
    with session_scope() as session:
        assert store_values(session, "A000040", BFile(1, ["3"]), token=11)

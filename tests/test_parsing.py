"""The OEIS parsers, on hostile input. No services needed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.errors import UpstreamBadData
from shared.ids import InvalidId, normalize_id
from shared.oeis.parsing import canonical_value, parse_bfile, parse_entries, parse_entry

FIXTURES = Path(__file__).parent / "fixtures" / "oeis"


def test_bfile_with_comments_blank_lines_crlf_tabs_and_trailing_spaces() -> None:
    lines = ["# A000045 b-file", "", "0 0\r", "1\t1 ", "  2   1", "# mid comment", "3 2\r"]
    bfile = parse_bfile(lines, "A000045")
    assert bfile.first_index == 0
    assert bfile.terms == ["0", "1", "1", "2"]


def test_bfile_negative_indices_and_values() -> None:
    bfile = parse_bfile(["-2 -8", "-1 -1", "0 0", "1 1"], "A078302")
    assert bfile.first_index == -2
    assert bfile.terms == ["-8", "-1", "0", "1"]


def test_bfile_indices_beyond_32_bits() -> None:
    bfile = parse_bfile(["3638334640025 1", "3638334640026 -2"], "A241292")
    assert (bfile.first_index, bfile.terms) == (3638334640025, ["1", "-2"])
    top = 2**63 - 1
    assert parse_bfile([f"{top} 5"], "A000001").first_index == top


def test_bfile_huge_values_are_kept_exactly() -> None:
    big = "9" * 5000  # beyond Python's default int-to-str digit limit
    assert parse_bfile([f"1 {big}", f"2 -{big}"], "A000001").terms == [big, "-" + big]


@pytest.mark.parametrize(
    "lines, message",
    [
        (["0 1", "2 3"], "skips"),
        (["0 1", "1 x2"], "non-numeric"),
        (["0 1", "1 2 3"], "malformed"),
        (["zero 1"], "not a 64-bit integer on line 1"),
        (["9223372036854775807 1", "9223372036854775808 2"], "not a 64-bit integer on line 2"),
        (["-9223372036854775809 1"], "not a 64-bit integer on line 1"),
        (["# only a comment", ""], "no terms"),
        (["0 1.5"], "non-numeric"),
    ],
)
def test_bfile_malformed(lines: list[str], message: str) -> None:
    with pytest.raises(UpstreamBadData, match=message):
        parse_bfile(lines, "A000001")


def test_real_fixture_bfile_parses() -> None:
    lines = (FIXTURES / "bfiles" / "b000045.txt").read_text().splitlines()
    bfile = parse_bfile(lines, "A000045")
    assert bfile.first_index == 0
    assert bfile.terms[:8] == ["0", "1", "1", "2", "3", "5", "8", "13"]
    assert len(bfile.terms[1000]) == 209


@pytest.mark.parametrize(
    "raw, value",
    [
        ("0", "0"),
        ("-0", "0"),
        ("007", "7"),
        ("-007", "-7"),
        ("12", "12"),
        ("+1", None),
        ("", None),
        ("1e5", None),
        ("٣", None),
    ],
)
def test_canonical_value(raw: str, value: str | None) -> None:
    assert canonical_value(raw) == value


def test_search_current_shape_and_legacy_shape_agree() -> None:
    entry = json.loads((FIXTURES / "entries" / "A000045.json").read_text())
    current = parse_entries([entry])
    legacy = parse_entries(
        {"greeting": "hi", "query": "id:A000045", "count": 1, "start": 0, "results": [entry]}
    )
    assert current == legacy
    (parsed,) = current
    assert parsed.id == "A000045"
    assert parsed.offset == 0
    assert parsed.name.startswith("Fibonacci numbers")
    assert all(line.startswith("Cf.") for line in parsed.xrefs)


@pytest.mark.parametrize("payload", [None, [], {"results": None}, {"count": 0}])
def test_search_with_no_results(payload: object) -> None:
    assert parse_entries(payload) == []


def test_search_that_is_not_a_list_is_bad_data() -> None:
    with pytest.raises(UpstreamBadData):
        parse_entries("<html>")


@pytest.mark.parametrize(
    "item",
    [
        "A000045",
        {"name": "no number"},
        {"number": "45", "name": "number is a string"},
        {"number": True, "name": "number is a bool"},
        {"number": 10**7, "name": "number out of range"},
        {"number": 45, "name": None},
    ],
)
def test_unusable_entries_are_skipped(item: object) -> None:
    assert parse_entry(item) is None


def test_entry_uses_number_not_the_old_id_field_and_survives_odd_fields() -> None:
    entry = parse_entry(
        {
            "number": 45,
            "id": "M0692 N0256",
            "name": "F",
            "offset": "x",
            "xref": "not a list",
            "keyword": 7,
        }
    )
    assert entry is not None
    assert (entry.id, entry.offset, entry.xrefs, entry.keywords) == ("A000045", None, [], "")
    assert (entry.revision, entry.modified) == (None, None)


def test_entry_revision_and_time() -> None:
    entry = parse_entry(
        {"number": 45, "name": "F", "revision": 1523, "time": "2024-07-15T10:00:00-04:00"}
    )
    assert entry is not None
    assert entry.revision == 1523
    assert entry.modified == datetime(2024, 7, 15, 14, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "revision, time",
    [
        ("1523", "yesterday"),
        (True, "2024-07-15T10:00:00"),  # a time without its offset says no instant
        (-1, 1721052000),
        (2**40, None),
    ],
)
def test_unusable_revision_or_time_reads_as_unknown(revision: object, time: object) -> None:
    entry = parse_entry({"number": 45, "name": "F", "revision": revision, "time": time})
    assert entry is not None
    assert (entry.revision, entry.modified) == (None, None)


@pytest.mark.parametrize("raw", ["a000045", "A000045"])
def test_ids_normalised(raw: str) -> None:
    assert normalize_id(raw) == "A000045"


@pytest.mark.parametrize(
    "raw", ["A45", "A0000450", "B000045", "A00004x", "", "A000045 ", "\uff21000045", "A00004\u0665"]
)
def test_bad_ids_rejected(raw: str) -> None:
    with pytest.raises(InvalidId):
        normalize_id(raw)


def test_lone_surrogates_in_json_become_encodable_text() -> None:
    # Valid JSON, but "\ud800" alone is no character: UTF-8 (and so PostgreSQL) refuses it.
    payload = json.loads('{"number": 45, "name": "F\\ud800ib", "xref": ["Cf. \\udfff."]}')
    entry = parse_entry(payload)
    assert entry is not None
    assert (entry.name, entry.xrefs) == ("F?ib", ["Cf. ?."])
    entry.name.encode("utf-8")


def test_nul_characters_never_reach_the_database() -> None:
    entry = parse_entry(
        {
            "number": 45,
            "name": "F\x00ib",
            "xref": ["Cf.\x00 A000032."],
            "keyword": "nonn\x00",
            "author": "\x00",
        }
    )
    assert entry is not None
    assert (entry.name, entry.xrefs, entry.keywords, entry.author) == (
        "Fib",
        ["Cf. A000032."],
        "nonn",
        "",
    )

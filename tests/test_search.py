"""Searching as people type: the local index of the OEIS (shared/search/query.py, built by
shared/search/indexer.py from the fake OEIS's bulk files or an oeisdata tree), and searches
sent to the OEIS when there is no index (never a 202; superseded ones dropped)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from api import jobs
from api.routes import search as search_route
from cli.commands import main
from shared.db import get_engine, session_scope
from shared.errors import UpstreamBadData, UpstreamUnavailable
from shared.oeis.client import OEISClient
from shared.search import indexer, query
from tests.fake_oeis import BULK_HEADER, DEFAULT_FIXTURES, FakeOEIS
from tests.helpers import busy_locks, wait_until

# What the issue asks of real data, and what the fixtures hold of it: real OEIS names
# (tests/fixtures/oeis/catalogue.json and entries/) with the entries that compete.
RANKING = {
    "fibonacci": "A000045",
    "prime numbers": "A000040",
    "catalan": "A000108",
    "squares": "A000290",
    "factorial numbers": "A000142",
    "1,1,2,3,5,8,13": "A000045",
}
MOBIUS = "A008683"  # "Möbius (or Moebius) function mu(n). ..."
DEAD = "A900200"  # "Duplicate of A000045.", keyword dead


def build(settings, source: str | None = None, **options) -> indexer.BuildResult:
    return indexer.build(settings, OEISClient(settings), source, **options)


def find(term: str) -> list[str]:
    with get_engine().connect() as connection:
        return [seq_id for seq_id, _ in query.find(connection, term)]


def entries(fake: FakeOEIS) -> dict[int, dict]:
    """Every entry the fake knows by name: its catalogue and its fixtures."""
    found = fake.catalogue()
    for path in (DEFAULT_FIXTURES / "entries").glob("A*.json"):
        entry = json.loads(path.read_text("utf-8"))
        found[entry["number"]] = entry
    return found


def seq_text(entry: dict, name: str | None = None) -> str:
    """An entry in the OEIS internal format, as oeisdata has it."""
    seq_id = f"A{entry['number']:06d}"
    terms = entry["data"]
    lines = [f"%I {seq_id} #{entry.get('revision', 1)} Jan 15 2024 10:00:00"]
    lines += [f"%S {seq_id} {terms[:70]}"] + ([f"%T {seq_id} {terms[70:]}"] if terms[70:] else [])
    lines.append(f"%N {seq_id} {name or entry['name']}")
    lines += [f"%Y {seq_id} {xref}" for xref in entry.get("xref", [])]
    lines += [f"%K {seq_id} {entry['keyword']}", f"%O {seq_id} {entry.get('offset', '0,1')}"]
    lines.append(f"%A {seq_id} _Someone_, Jan 15 2024")
    return "\n".join(lines) + "\n"


def seq_path(root: Path, seq_id: str) -> Path:
    return root / "seq" / seq_id[:4] / f"{seq_id}.seq"


@pytest.fixture
def oeisdata(tmp_path: Path, fake_oeis: FakeOEIS) -> Path:
    """An oeisdata tree of every entry the fake knows (see with_oeisdata)."""
    root = tmp_path / "oeisdata"
    for number, entry in entries(fake_oeis).items():
        path = seq_path(root, f"A{number:06d}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(seq_text(entry), "utf-8")
    return root


def with_oeisdata(settings, root: Path):
    """The settings with BACKSCOPE_OEISDATA_DIR set to `root`."""
    return dataclasses.replace(settings, oeisdata_dir=root)


def write_bulk(folder: Path, names: list[str], stripped: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("names.gz", names), ("stripped.gz", stripped)):
        (folder / name).write_bytes(gzip.compress((BULK_HEADER + "\n".join(lines) + "\n").encode()))
    return folder


# ------------------------------------------------------------------ parsing terms


@pytest.mark.parametrize(
    ("term", "kind", "detail"),
    [
        ("fibonacci", "words", "'fibonacci':*"),
        ("fibonacci nu", "words", "'fibonacci' & 'nu':*"),
        ("MÖBIUS", "words", "'mobius':*"),
        ('"sophie germain" primes', "words", "'sophie' <-> 'germain' & 'primes':*"),
        ('"sophie germ', "words", "'sophie' <-> 'germ':*"),
        ('"sophie germain"', "words", "'sophie' <-> 'germain'"),
        ("A000045", "id", "A000045"),
        ("a45", "id", "A000045"),
        ("id:A000045", "id", "A000045"),
        ("1,1,2,3,5,8,13", "terms", "%,1,1,2,3,5,8,13%"),
        ("1 -1 002,", "terms", "%,1,-1,2,%"),
    ],
)
def test_each_form_of_search_term_is_understood(term: str, kind: str, detail: str) -> None:
    parsed = query.parse(term)
    assert parsed is not None and parsed.kind == kind
    assert detail in (parsed.match, parsed.seq_id, parsed.pattern)


@pytest.mark.parametrize("term", ["", "   ", "...", "-", '""'])
def test_a_term_with_nothing_to_search_for_finds_nothing(term: str) -> None:
    assert query.parse(term) is None


# ------------------------------------------------------------------ semantics, ranking


@pytest.mark.parametrize("source", ["bulk", "oeisdata"])
def test_the_famous_sequence_comes_first(database, settings, oeisdata, source) -> None:
    settings = with_oeisdata(settings, oeisdata)
    build(settings, source)
    for term, expected in RANKING.items():
        found = find(term)
        assert found[0] == expected, (term, found)
        assert len(found) <= query.RESULTS


def test_search_forms_people_type(database, settings) -> None:
    build(settings, "bulk")
    assert find("fibonacci nu")[0] == "A000045"  # mid-word
    assert find("fib")[0] == "A000045"
    assert find("FIBONACCI Numbers")[0] == "A000045"  # case
    assert find("mobius")[0] == MOBIUS and find("möbius")[0] == MOBIUS  # accents
    assert find("prime fibonacci") == ["A005478"]  # every word must match
    assert find('"sophie germain"') == ["A005384"]
    assert find('"germain sophie"') == []  # a phrase is in order
    assert find('"sophie germ')[0] == "A005384"  # still typing the phrase
    for term in ("A000045", "A45", "id:A000045", "a000045"):
        found = find(term)
        assert found[0] == "A000045"
        assert "A001654" in found  # "... F(n) = A000045(n) ...": cites it
    assert find("1, -1, -1, 0")[0] == MOBIUS  # signs
    assert find("1 -1 -1 0 -1 1")[0] == MOBIUS
    assert find("2,3,5,7,11,13,1") == find("2,3,5,7,11,13,17")[:1] + find("2,3,5,7,11,13,1")[1:]
    assert "A000040" in find("2 3 5 7 11 13 1")  # the last number as a prefix
    assert find("zzzyzzy") == [] and find("A999998") == []


def test_dead_entries_are_never_returned(database, settings, oeisdata) -> None:
    build(with_oeisdata(settings, oeisdata), "oeisdata")
    assert find("duplicate") == []
    assert DEAD not in find("1,1,2,3,5,8,13") and DEAD not in find("A000045")
    assert find("fibonacci")[0] == "A000045"


def test_oeisdata_ranks_by_citations_and_keywords(database, settings, oeisdata) -> None:
    build(with_oeisdata(settings, oeisdata), "oeisdata")
    with session_scope() as session:
        cited, popularity = session.execute(
            text("SELECT cited, popularity FROM search_entries WHERE id = 'A000045'")
        ).one()
    assert cited >= 10  # the %Y lines of the fixtures and the catalogue
    assert popularity >= 4 + 3 + 1  # log2(1 + cited), core, nice


# ------------------------------------------------------------------ building


def test_an_unchanged_bulk_build_downloads_nothing(database, settings, fake_oeis) -> None:
    first = build(settings, "bulk")
    assert first.added == first.entries > 60
    fake_oeis.reset()
    again = build(settings, "bulk")
    assert (again.added, again.changed, again.removed) == (0, 0, 0)
    answers = [(r.path, r.status) for r in fake_oeis.requests]
    assert answers == [("/names.gz", 304), ("/stripped.gz", 304)]
    fake_oeis.publish("A000071", name="Fibonacci numbers minus one.")
    changed = build(settings, "bulk")
    assert (changed.added, changed.changed, changed.removed) == (0, 1, 0)
    assert find("minus one") == ["A000071"]


def test_an_incremental_build_reads_only_what_changed(database, settings, oeisdata) -> None:
    settings = with_oeisdata(settings, oeisdata)
    first = build(settings, "oeisdata")
    fibonacci = seq_path(oeisdata, "A000045")
    entry = json.loads((DEFAULT_FIXTURES / "entries" / "A000045.json").read_text())
    fibonacci.write_text(seq_text(entry, "Fibonacci numbers, renamed for the test."))
    seq_path(oeisdata, "A000290").unlink()
    added = seq_path(oeisdata, "A777777")
    added.parent.mkdir(parents=True, exist_ok=True)
    added.write_text(seq_text({**entry, "number": 777777, "name": "Quuxable numbers."}))
    untouched = seq_path(oeisdata, "A000040")
    os.utime(untouched, ns=(time.time_ns(), time.time_ns()))  # touched, same content
    again = build(settings, "oeisdata")
    assert (again.added, again.changed, again.removed) == (1, 1, 1)
    assert again.entries == first.entries
    assert find("renamed for the test") == ["A000045"]
    assert find("quuxable") == ["A777777"]
    assert "A000290" not in find("squares")
    assert find("the prime numbers")[0] == "A000040"
    same = build(settings, "oeisdata")
    assert (same.added, same.changed, same.removed) == (0, 0, 0)


def test_corrupt_lines_are_skipped_and_the_rest_indexed(
    database, settings, fake_oeis, tmp_path, caplog
) -> None:
    fake_oeis.bulk_dir = write_bulk(
        tmp_path / "bulk",
        [
            "A000001 Number of groups of order n.",
            "this line is not an entry",
            "A000003 " + "x" * 20_000,  # far too long to be a name
            "A000004 The zero sequence.",
            "A000002 Out of order.",
        ],
        ["A000001 ,0,1,1,1,2,1,2,1,5,", "A000004 ,0,zero,0,", "A000005 ,1,2,2,"],
    )
    with caplog.at_level(logging.WARNING):
        result = build(settings, "bulk")
    assert result.entries == 2
    assert find("groups") == ["A000001"] and find("zero sequence") == ["A000004"]
    assert find("0,1,1,1,2") == ["A000001"]
    assert find("0,0") == []  # its terms line was unusable: its name is still indexed
    events = [record.getMessage() for record in caplog.records]
    assert events.count("index.bad_line") == 3 and "index.bad_terms" in events


def test_a_corrupt_file_is_skipped_and_the_rest_indexed(
    database, settings, oeisdata, caplog
) -> None:
    seq_path(oeisdata, "A000290").write_text("%I A000290 #1\n%S A000290 0,1,4,9\n")  # no name
    seq_path(oeisdata, "A000108").write_bytes(b"\xff\xfe not text at all \x00")
    with caplog.at_level(logging.WARNING):
        build(with_oeisdata(settings, oeisdata), "oeisdata")
    assert "A000290" not in find("squares") and find("catalan") != []
    assert find("prime numbers")[0] == "A000040"
    assert [r for r in caplog.records if r.getMessage() == "index.bad_file"]


def test_a_failed_build_leaves_the_old_index_serving(
    database, settings, fake_oeis, tmp_path
) -> None:
    build(settings, "bulk")
    before = find("fibonacci")
    fake_oeis.publish("A000045", name="Renamed in a build that fails.")
    fake_oeis.throttle_always = True
    with pytest.raises(UpstreamUnavailable):
        build(settings, "bulk")
    fake_oeis.throttle_always = False
    names, stripped = fake_oeis.bulk_file("names.gz"), fake_oeis.bulk_file("stripped.gz")
    (tmp_path / "names.gz").write_bytes(names[: len(names) // 2])  # cut short
    (tmp_path / "stripped.gz").write_bytes(stripped)
    fake_oeis.bulk_dir = tmp_path
    with pytest.raises(UpstreamBadData):
        build(settings, "bulk", full=True)
    assert find("fibonacci") == before
    assert find("renamed in a build") == []


def test_one_build_at_a_time(database, settings) -> None:
    with session_scope() as session:
        session.execute(select(func.pg_advisory_xact_lock(indexer._BUILD_GUARD)))
        with pytest.raises(indexer.IndexBusy):
            build(settings, "bulk")


def test_backscope_index_and_status(database, fake_oeis) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["status"], prog_name="backscope")
    assert "index     none: searches go to the OEIS" in result.output
    result = runner.invoke(main, ["index"], prog_name="backscope")
    assert result.exit_code == 0, result.output
    assert "Indexed" in result.output and "from the bulk files" in result.output
    status = runner.invoke(main, ["status"], prog_name="backscope").output
    assert "entries from the bulk files (names.gz, stripped.gz) of http://127.0.0.1:" in status
    fake_oeis.throttle_always = True
    failed = runner.invoke(main, ["index", "--full"], prog_name="backscope")
    assert failed.exit_code == 1 and "the index is as it was" in failed.output
    fake_oeis.throttle_always = False
    removed = runner.invoke(main, ["index", "--remove"], prog_name="backscope")
    assert removed.exit_code == 0 and "Removed the search index" in removed.output
    assert find("fibonacci") == [] and "none:" in runner.invoke(main, ["status"]).output


def test_beat_task_builds_when_the_index_is_old(database, worker) -> None:
    from shared.work.queue import app as celery

    def run(**kwargs) -> str:
        task = celery.send_task("backscope.maintenance.update_index", kwargs=kwargs)
        return task.get(timeout=60)["outcome"]

    assert run(max_age=3600) == "stored"
    assert run(max_age=3600) == "recent"
    assert run() == "unchanged"
    assert find("fibonacci")[0] == "A000045"


# ------------------------------------------------------------------ through the API


def test_indexed_search_and_names_cost_no_oeis_request(client, settings, fake_oeis) -> None:
    """One OEIS request for a cold sequence's first view: its b-file; its name comes
    from the index, and search needs no request at all."""
    build(settings, "bulk")
    fake_oeis.reset()
    answer = client.get("/api/search_oeis/Fibonacci")
    assert answer.status_code == 200
    assert answer.json["results"][0] == [
        "A000045",
        "Fibonacci numbers: F(n) = F(n-1) + F(n-2) with F(0) = 0 and F(1) = 1.",
    ]
    assert client.get("/api/search_oeis/zzzyzzy").json["results"] == []
    values = client.get("/api/get_oeis_name_and_values/A000045")
    assert values.status_code == 200 and values.json["name"].startswith("Fibonacci numbers:")
    first = client.get("/api/get_oeis_values/A000040/5").json
    assert first["name"] == "The prime numbers."
    wait_until(lambda: not busy_locks(), 30, "background work to finish")
    assert fake_oeis.count("/search") == 0
    assert [r.path for r in fake_oeis.requests] == ["/A000045/b000045.txt", "/A000040/b000040.txt"]


def test_a_new_build_replaces_what_the_api_holds(client, settings, fake_oeis) -> None:
    build(settings, "bulk")
    assert client.get("/api/search_oeis/minus one").json["results"] == []
    assert client.get("/api/get_oeis_values/A000071/3").json["name"] == "a(n) = Fibonacci(n) - 1."
    fake_oeis.publish("A000071", name="Fibonacci numbers minus one.")
    build(settings, "bulk")

    def renamed() -> bool:
        found = client.get("/api/search_oeis/minus one").json["results"]
        name = client.get("/api/get_oeis_values/A000071/3").json["name"]
        return found == [["A000071", "Fibonacci numbers minus one."]] and name == found[0][1]

    wait_until(renamed, 10, "the API to drop its old answers")


def type_word(client, word: str, address: str, answers: list) -> None:
    """One person typing `word` at 150 ms a key; every keystroke is a request."""
    threads = []
    for end in range(1, len(word) + 1):

        def ask(prefix: str = word[:end]) -> None:
            response = client.get(
                f"/api/search_oeis/{prefix}", environ_base={"REMOTE_ADDR": address}
            )
            answers.append((address, prefix, response.status_code, response.json))

        thread = threading.Thread(target=ask)
        thread.start()
        threads.append(thread)
        time.sleep(0.15)
    for thread in threads:
        thread.join(60)


def test_without_an_index_typing_costs_a_search_or_two_per_person(client, fake_oeis) -> None:
    fake_oeis.latency = 1.0  # about what the real OEIS takes to search
    words = {"127.0.1.1": "fibonacci", "127.0.1.2": "prime", "127.0.1.3": "factorial"}
    answers: list = []
    people = [
        threading.Thread(target=type_word, args=(client, word, address, answers))
        for address, word in words.items()
    ]
    for person in people:
        person.start()
    for person in people:
        person.join(90)
    assert len(answers) == sum(len(word) for word in words.values())
    assert all(status != 202 for _, _, status, _ in answers)
    assert all(status in (200, 503) for _, _, status, _ in answers)
    for address, word in words.items():
        final = [a for a in answers if a[0] == address and a[1] == word]
        assert final[0][2] == 200, final
    searched = [r.query["q"] for r in fake_oeis.requests if r.path == "/search"]
    assert len(searched) <= 2 * len(words), searched
    assert set(words.values()) <= set(searched)


def test_a_search_is_never_answered_202(client, fake_oeis, monkeypatch) -> None:
    fake_oeis.hang = True
    no_slot = threading.BoundedSemaphore(1)
    no_slot.acquire()
    monkeypatch.setattr(jobs, "wait_slots", lambda: no_slot)
    busy = client.get("/api/search_oeis/fibonacci")  # every waiting thread taken
    assert busy.status_code == 503 and busy.headers["Retry-After"] and busy.json["error"]
    monkeypatch.undo()
    quick = dataclasses.replace(search_route.get_settings(), search_wait=0.5)
    monkeypatch.setattr(search_route, "get_settings", lambda: quick)
    slow = client.get("/api/search_oeis/catalan")  # the OEIS does not answer in time
    assert slow.status_code == 503 and "try again" in slow.json["error"]
    assert int(slow.headers["Retry-After"]) > 0
    fake_oeis.hang = False


def test_with_an_index_ten_people_typing_cost_the_oeis_nothing(client, settings, fake_oeis) -> None:
    build(settings, "bulk")
    fake_oeis.reset()
    fake_oeis.latency = 1.0  # were anything sent to the OEIS, it would show
    words = ["fibonacci", "catalan", "squares", "prime", "factorial"] * 2
    answers: list = []
    people = [
        threading.Thread(target=type_word, args=(client, word, f"127.0.2.{n}", answers))
        for n, word in enumerate(words, 1)
    ]
    for person in people:
        person.start()
    for person in people:
        person.join(90)
    assert len(answers) == sum(len(word) for word in words)
    assert {status for _, _, status, _ in answers} == {200}
    finals = {prefix: body["results"][0][0] for _, prefix, _, body in answers if prefix in words}
    assert finals["fibonacci"] == "A000045" and finals["catalan"] == "A000108"
    assert fake_oeis.count("/search") == 0


def test_metadata_comes_from_an_index_built_from_oeisdata(
    client, settings, oeisdata, fake_oeis
) -> None:
    build(with_oeisdata(settings, oeisdata), "oeisdata")
    fake_oeis.reset()
    answer = client.get("/api/get_oeis_metadata/A000045")
    assert answer.status_code == 200
    assert answer.json["name"].startswith("Fibonacci numbers:")
    assert "Cf. A000032 (Lucas numbers)" in answer.json["xrefs"]
    assert answer.json["revision"] == 1523
    queries = [r.query.get("q", "") for r in fake_oeis.requests if r.path == "/search"]
    assert not [q for q in queries if q.startswith("id:")], queries  # the name and xrefs
    assert "A000045" in queries  # back-references still come from the OEIS's search

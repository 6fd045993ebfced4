"""Tests of the fake OEIS itself (tests/fake_oeis.py) and of its fixtures."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests

from tests.fake_oeis import BIG_DIGITS, MALFORMED_LINE, FakeOEIS
from tests.helpers import wait_until

TIMEOUT = 5


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOEIS]:
    """One fake for the whole module (starting one is cheap, but not free)."""
    with FakeOEIS() as fake:
        yield fake


@pytest.fixture
def oeis(server: FakeOEIS) -> Iterator[FakeOEIS]:
    """The shared fake, with clean counters and default switches for each test."""
    server.reset()
    yield server
    server.reset()


def get(oeis: FakeOEIS, path: str, **params: str) -> requests.Response:
    return requests.get(oeis.url + path, params=params, timeout=TIMEOUT)


def search(oeis: FakeOEIS, q: str, start: int | None = None) -> requests.Response:
    params = {"q": q, "fmt": "json"}
    if start is not None:
        params["start"] = str(start)
    return get(oeis, "/search", **params)


def parse_bfile(text: str) -> list[tuple[int, int]]:
    """A strict little b-file parser for checking fixtures."""
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        n, v = line.split()
        pairs.append((int(n), int(v)))
    return pairs


# ---------------------------------------------------------------------- b-files


def test_bfile_is_plain_text_with_the_values(oeis: FakeOEIS) -> None:
    r = get(oeis, "/A000045/b000045.txt")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.text.startswith("# ")
    assert "\r\n" in r.text and " \n" in r.text.replace("\r\n", "\n")
    pairs = parse_bfile(r.text)
    a, b = 0, 1
    for n, value in pairs:
        assert value == a, n
        a, b = b, a + b
    assert [n for n, _ in pairs] == list(range(1001))
    assert len(str(pairs[-1][1])) == 209


@pytest.mark.parametrize(
    ("seq_id", "first", "last", "last_value"),
    [
        ("A000040", 1, 10000, 104729),
        ("A000142", 0, 450, math.factorial(450)),
        ("A000027", 1, 10000, 10000),
        ("A000032", 0, 500, None),
        ("A000071", 0, 500, None),
        ("A000204", 1, 500, None),
        ("A153080", 0, 1000, 13 * 1000 + 2),
        ("A078302", -43, 200, 200**3 - 7 * 200),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_fixture_bfiles(
    oeis: FakeOEIS, seq_id: str, first: int, last: int, last_value: int | None
) -> None:
    r = get(oeis, f"/{seq_id}/b{seq_id[1:]}.txt")
    assert r.status_code == 200
    pairs = parse_bfile(r.text)
    assert [n for n, _ in pairs] == list(range(first, last + 1))
    if last_value is not None:
        assert pairs[-1][1] == last_value
    entry = search(oeis, f"id:{seq_id}").json()[0]
    assert entry["offset"].split(",")[0] == str(first)
    assert entry["data"].split(",")[:3] == [str(v) for _, v in pairs[:3]]


def test_negative_offset_fixture_has_negative_values(oeis: FakeOEIS) -> None:
    pairs = parse_bfile(get(oeis, "/A078302/b078302.txt").text)
    assert pairs[0] == (-43, (-43) ** 3 - 7 * (-43))
    assert pairs[0][1] < 0
    assert "Test fixture" in search(oeis, "id:A078302").json()[0]["name"]


@pytest.mark.parametrize(
    "path",
    [
        "/A000000/b000000.txt",  # unknown id
        "/A000045/b000046.txt",  # directory and file disagree
        "/A45/b45.txt",
        "/A000045",
        "/nothing/here",
    ],
)
def test_unknown_is_404_html(oeis: FakeOEIS, path: str) -> None:
    r = get(oeis, path)
    assert r.status_code == 404
    assert r.headers["Content-Type"].startswith("text/html")
    assert "Sorry, the page you requested was not found" in r.text


def test_malformed_bfile_has_a_non_numeric_line(oeis: FakeOEIS) -> None:
    oeis.malformed.add("A000045")
    lines = get(oeis, "/A000045/b000045.txt").text.splitlines()
    index = lines.index(MALFORMED_LINE)
    assert 100 < index < len(lines) - 100
    with pytest.raises(ValueError):
        parse_bfile("\n".join(lines))
    assert parse_bfile(get(oeis, "/A000040/b000040.txt").text)  # others unaffected


# ---------------------------------------------------------------------- search


def test_id_search_current_shape(oeis: FakeOEIS) -> None:
    r = search(oeis, "id:A000045")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    results = r.json()
    assert isinstance(results, list) and len(results) == 1
    entry = results[0]
    assert entry["number"] == 45
    assert entry["name"] == (
        "Fibonacci numbers: F(n) = F(n-1) + F(n-2) with F(0) = 0 and F(1) = 1."
    )
    assert entry["offset"] == "0,4"
    assert any("A000032" in x and "A000071" in x and "A000204" in x for x in entry["xref"])
    assert search(oeis, "id:A000000").json() is None


def test_id_search_legacy_shape(oeis: FakeOEIS) -> None:
    oeis.legacy_shape = True
    body = search(oeis, "id:A000040").json()
    assert body["greeting"].startswith("Greetings from The On-Line Encyclopedia")
    assert body["query"] == "id:A000040"
    assert body["count"] == 1 and body["start"] == 0
    assert body["results"][0]["name"] == "The prime numbers."
    missing = search(oeis, "id:A000000").json()
    assert missing["count"] == 0 and missing["results"] is None


def test_back_reference_search_pages(oeis: FakeOEIS) -> None:
    page1 = search(oeis, "A000045").json()
    assert len(page1) == 10
    assert page1[0]["number"] == 45
    numbers = {e["number"] for e in page1}
    page2 = search(oeis, "A000045", start=10).json()
    assert page2
    numbers |= {e["number"] for e in page2}
    assert {45, 32, 71, 204} <= numbers
    assert len(numbers) == len(page1) + len(page2)
    assert search(oeis, "A000045", start=10 + len(page2)).json() is None
    assert search(oeis, "A000045", start=1000).json() is None

    oeis.legacy_shape = True
    legacy = search(oeis, "A000045", start=10).json()
    assert legacy["count"] == len(numbers)
    assert [e["number"] for e in legacy["results"]] == [e["number"] for e in page2]


def test_term_search(oeis: FakeOEIS) -> None:
    fib = search(oeis, "fibonacci").json()
    assert {45, 71} <= {e["number"] for e in fib}
    assert search(oeis, "fibonacci", start=10).json()  # more than one page
    assert 40 in {e["number"] for e in search(oeis, "PRIME").json()}
    assert search(oeis, "no such words anywhere").json() is None


def test_search_without_fmt_json_is_html(oeis: FakeOEIS) -> None:
    r = get(oeis, "/search", q="id:A000045")
    assert r.headers["Content-Type"].startswith("text/html")


# ---------------------------------------------------------------------- synthetic


def test_synthetic_sequences(oeis: FakeOEIS) -> None:
    entry = search(oeis, "id:A910005").json()[0]
    assert entry["number"] == 910005
    assert entry["name"] == "Synthetic sequence 5: a(n) = n*6"
    assert entry["offset"] == "0,2"
    pairs = parse_bfile(get(oeis, "/A910005/b910005.txt").text)
    assert pairs == [(n, 6 * n) for n in range(1000)]
    assert search(oeis, "id:A920000").json() is None


def test_big_synthetic_sequence_streams(oeis: FakeOEIS) -> None:
    assert search(oeis, "id:A999999").json()[0]["number"] == 999999
    with requests.get(f"{oeis.url}/A999999/b999999.txt", stream=True, timeout=TIMEOUT) as r:
        assert r.status_code == 200
        assert int(r.headers["Content-Length"]) > 100_000_000
        lines = r.iter_lines()
        first = [next(lines) for _ in range(3)]
    assert first[2] == b"2 " + str(10 ** (BIG_DIGITS - 1) + 2).encode()
    assert get(oeis, "/A000045/b000045.txt").status_code == 200  # still healthy


def test_oversize_bfile_never_ends(oeis: FakeOEIS) -> None:
    oeis.oversize.add("A000040")
    received = 0
    with requests.get(f"{oeis.url}/A000040/b000040.txt", stream=True, timeout=TIMEOUT) as r:
        assert "Content-Length" not in r.headers
        for chunk in r.iter_content(65536):
            received += len(chunk)
            if received > 3_000_000:
                break
    assert received > 3_000_000
    oeis.oversize.clear()
    assert get(oeis, "/A000040/b000040.txt").status_code == 200


# ---------------------------------------------------------------------- failure modes


def test_throttle_then_healthy(oeis: FakeOEIS) -> None:
    oeis.throttle = 2
    oeis.retry_after = 7
    for _ in range(2):
        r = get(oeis, "/A000045/b000045.txt")
        assert r.status_code == 503
        assert r.headers["Content-Type"].startswith("text/html")
        assert r.headers["Retry-After"] == "7"
        assert "You are crawling too fast" in r.text
    assert get(oeis, "/A000045/b000045.txt").status_code == 200
    assert [q.status for q in oeis.requests] == [503, 503, 200]


def test_throttle_always(oeis: FakeOEIS) -> None:
    oeis.throttle_always = True
    assert all(search(oeis, "id:A000045").status_code == 503 for _ in range(3))
    oeis.throttle_always = False
    assert search(oeis, "id:A000045").status_code == 200


def test_hang_ends_by_client_timeout(oeis: FakeOEIS) -> None:
    oeis.hang = True  # for 120 s unless cleared
    with pytest.raises(requests.exceptions.Timeout):
        requests.get(f"{oeis.url}/A000045/b000045.txt", timeout=0.5)
    assert oeis.bfile_downloads("A000045") == 1
    assert oeis.requests[0].status == 0  # never answered
    oeis.hang = False
    assert get(oeis, "/A000045/b000045.txt").status_code == 200


def test_hang_after_bytes_times_out_mid_body(oeis: FakeOEIS) -> None:
    oeis.hang_after_bytes = 100
    with (
        pytest.raises(requests.exceptions.RequestException),
        requests.get(f"{oeis.url}/A000045/b000045.txt", stream=True, timeout=0.5) as r,
    ):
        assert r.status_code == 200
        r.content  # noqa: B018
    oeis.hang_after_bytes = None
    assert get(oeis, "/A000045/b000045.txt").status_code == 200


def test_stop_ends_hung_requests() -> None:
    fake = FakeOEIS().start()
    fake.hang = True  # for 120 s unless cleared
    errors: list[BaseException] = []

    def client() -> None:
        try:
            requests.get(f"{fake.url}/A000045/b000045.txt", timeout=60)
        except requests.exceptions.RequestException as exc:
            errors.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        wait_until(lambda: fake.count() == 1, 30, "the request to arrive")
    finally:
        fake.stop()
    thread.join(timeout=50)
    # The request ended without an answer, neither by the client's timeout nor the fake's.
    assert not thread.is_alive()
    assert errors and not isinstance(errors[0], requests.exceptions.Timeout), errors
    assert fake.requests[0].status == 0


def test_latency(oeis: FakeOEIS) -> None:
    oeis.latency = 0.2
    started = time.monotonic()
    assert search(oeis, "id:A000045").status_code == 200
    assert time.monotonic() - started >= 0.2


# ---------------------------------------------------------------------- counters, control


def test_counters(oeis: FakeOEIS) -> None:
    started = time.time()
    get(oeis, "/A000045/b000045.txt")
    get(oeis, "/A000045/b000045.txt")
    get(oeis, "/A000000/b000000.txt")
    search(oeis, "id:A000045")
    assert oeis.count() == 4
    assert oeis.count("/search") == 1
    assert oeis.count("/A000045/") == 2
    assert oeis.bfile_downloads("A000045") == 2
    assert oeis.bfile_downloads("A000000") == 1
    assert oeis.bfile_downloads("A000040") == 0
    last = oeis.requests[-1]
    assert last.path == "/search"
    assert last.query == {"q": "id:A000045", "fmt": "json"}
    assert last.status == 200
    assert started <= oeis.requests[0].time <= last.time <= time.time()


# ---------------------------------------------------------------------- new revisions


def test_publish_a_new_revision(oeis: FakeOEIS) -> None:
    before = search(oeis, "id:A000045").json()[0]
    entry = oeis.publish("A000045", append=[1, 2], change={3: 7}, name="Fibonacci, edited")
    assert search(oeis, "id:A000045").json()[0] == entry
    assert entry["revision"] == before["revision"] + 1
    modified = datetime.fromisoformat(entry["time"])
    assert abs(modified - datetime.now().astimezone()) < timedelta(seconds=5)
    assert (entry["name"], entry["xref"]) == ("Fibonacci, edited", before["xref"])
    pairs = parse_bfile(get(oeis, "/A000045/b000045.txt").text)
    assert pairs[:5] == [(0, 0), (1, 1), (2, 1), (3, 7), (4, 3)]
    assert pairs[-3:] == [(1000, pairs[1000][1]), (1001, 1), (1002, 2)]
    assert [e["number"] for e in search(oeis, "fibonacci, edited").json()] == [45]
    # Revisions build on each other; a synthetic sequence can be edited too.
    assert oeis.publish("A000045", change={0: 5})["revision"] == before["revision"] + 2
    assert parse_bfile(get(oeis, "/A000045/b000045.txt").text)[:4] == [
        (0, 5),
        (1, 1),
        (2, 1),
        (3, 7),
    ]
    oeis.publish("A910001", append=[0])
    assert parse_bfile(get(oeis, "/A910001/b910001.txt").text)[-1] == (1000, 0)
    # Faults still apply to the new revision.
    oeis.malformed.add("A000045")
    assert MALFORMED_LINE in get(oeis, "/A000045/b000045.txt").text


@pytest.mark.parametrize(
    "seq_id, edit",
    [
        ("A000000", {}),  # unknown
        ("A999999", {"append": [1]}),  # streamed, never held whole
        ("A000045", {"change": {1001: 1}}),  # no such index
        ("A000045", {"append": ["one"]}),
    ],
)
def test_publish_refuses_what_it_cannot_do(oeis: FakeOEIS, seq_id: str, edit: dict) -> None:
    with pytest.raises(ValueError):
        oeis.publish(seq_id, **edit)
    assert search(oeis, "id:A000045").json()[0]["revision"] == 1523


def test_reset_forgets_published_revisions(oeis: FakeOEIS) -> None:
    oeis.publish("A000040", change={1: 3}, name="Primes?")
    oeis.reset()
    assert search(oeis, "id:A000040").json()[0]["name"] == "The prime numbers."
    assert parse_bfile(get(oeis, "/A000040/b000040.txt").text)[0] == (1, 2)


def test_control_over_http(oeis: FakeOEIS) -> None:
    get(oeis, "/A000045/b000045.txt")
    stats = get(oeis, "/_fake/stats").json()
    assert [r["path"] for r in stats["requests"]] == ["/A000045/b000045.txt"]
    assert set(stats["requests"][0]) == {"time", "path", "query", "status"}

    r = requests.post(
        f"{oeis.url}/_fake/config",
        json={"throttle": 1, "malformed": ["A000040"], "legacy_shape": True, "latency": 0},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200
    assert oeis.throttle == 1 and oeis.malformed == {"A000040"} and oeis.legacy_shape
    bad = requests.post(f"{oeis.url}/_fake/config", json={"nope": 1}, timeout=TIMEOUT)
    assert bad.status_code == 400

    assert requests.post(f"{oeis.url}/_fake/reset", timeout=TIMEOUT).status_code == 200
    assert oeis.throttle == 0 and not oeis.malformed and not oeis.legacy_shape
    assert oeis.count() == 0  # control paths are not counted, and reset cleared the rest

    published = requests.post(
        f"{oeis.url}/_fake/publish",
        json={"id": "A000045", "append": [1], "change": {"0": 2}, "name": "F"},
        timeout=TIMEOUT,
    )
    assert published.status_code == 200
    assert published.json() == search(oeis, "id:A000045").json()[0]
    assert published.json()["name"] == "F"
    assert parse_bfile(get(oeis, "/A000045/b000045.txt").text)[0] == (0, 2)
    unknown = requests.post(f"{oeis.url}/_fake/publish", json={"id": "A000000"}, timeout=TIMEOUT)
    assert unknown.status_code == 400


def test_standalone_mode() -> None:
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_oeis", "--port", "0"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(f"{url}/A000045/b000045.txt", timeout=TIMEOUT).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0

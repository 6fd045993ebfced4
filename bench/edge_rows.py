"""`make bench` rows for the edges a review found (issue #26).

- values by count: one sequence (A000040, 10,000 terms) asked for with a random count
  every time, against one count asked for again and again, in the same run (the aim:
  at least half the rate: every count is cut out of the one document held);
- reads of another sequence while 32 clients (127.0.5.N) read one 10 MB sequence
  (A999998, 10,000 terms of 1000 digits) over and over, gzipped as a browser asks: the
  small read's rate and p99 beside the same load alone, and how the big reads were
  answered;
- parsing one 1 MB b-file line of zeros followed by a letter, against the pattern used
  before (`(-?)0*([0-9]+)`, quadratic: timed on shorter lines, 1 MB extrapolated).
"""

from __future__ import annotations

import http.client
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

from shared.errors import UpstreamBadData
from shared.oeis.parsing import parse_bfile

COUNTED = "A000040"  # 10,000 primes
COUNTED_TERMS = 10_000
WIDE = "/api/get_oeis_values/A999998/0"  # about 10 MB
OTHER = "/api/get_oeis_values/A000045/10"
WIDE_CLIENTS = 32
LINE_BYTES = 2**20
OLD_VALUE = re.compile(r"(-?)0*([0-9]+)")

Load = Callable[..., tuple[float, float, float]]
Row = tuple[str, str, str, str]


def count_rows(base: str, load: Load, connections: int, seconds: int) -> list[Row]:
    """One count, then random counts, of the same sequence."""
    one = f"/api/get_oeis_values/{COUNTED}/{COUNTED_TERMS // 2}"
    counts = [f"/api/get_oeis_values/{COUNTED}/{n}" for n in range(1, COUNTED_TERMS + 1)]
    random.shuffle(counts)
    same = load(base + one, 2, connections, seconds)
    varied = load(base + one, 2, connections, seconds, paths=counts)
    rows = []
    for label, (rate, p50, p99) in (("one count", same), ("random counts", varied)):
        rows.append(
            (
                f"{COUNTED} values, {label} (1-{COUNTED_TERMS:,})",
                f"{rate:,.0f} req/s",
                f"p50 {p50:.1f} ms",
                f"p99 {p99:.1f} ms",
            )
        )
    rows.append((f"  (random counts: {varied[0] / same[0]:.2f}x one count)", "", "", ""))
    return rows


def _read_wide(base: str, source: str, stop: threading.Event, statuses: Counter) -> None:
    parts = urlsplit(base)
    while not stop.is_set():
        connection = http.client.HTTPConnection(
            parts.hostname, parts.port or 80, timeout=60, source_address=(source, 0)
        )
        try:
            connection.request("GET", WIDE, headers={"Accept-Encoding": "gzip"})
            response = connection.getresponse()
            response.read()
            statuses[response.status] += 1
        except OSError:
            statuses[0] += 1
        finally:
            connection.close()


def wide_rows(base: str, load: Load, connections: int, seconds: int) -> list[Row]:
    """The small read of another sequence alone, then while WIDE_CLIENTS read WIDE."""
    quiet = load(base + OTHER, 2, connections, seconds)
    statuses: Counter = Counter()
    stop = threading.Event()
    readers = [
        threading.Thread(target=_read_wide, args=(base, f"127.0.5.{n}", stop, statuses))
        for n in range(1, WIDE_CLIENTS + 1)
    ]
    for reader in readers:
        reader.start()
    try:
        time.sleep(1)  # the big reads are under way
        busy = load(base + OTHER, 2, connections, seconds)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    answered = ", ".join(f"{n} x {status or 'no answer'}" for status, n in sorted(statuses.items()))
    return [
        ("other sequence's small read, alone", *_cells(quiet)),
        (f"  same, {WIDE_CLIENTS} clients reading a 10 MB sequence", *_cells(busy)),
        (f"      (the 10 MB reads: {answered})", "", "", ""),
    ]


def _cells(measured: tuple[float, float, float]) -> tuple[str, str, str]:
    rate, p50, p99 = measured
    return f"{rate:,.0f} req/s", f"p50 {p50:.1f} ms", f"p99 {p99:.1f} ms"


def _zeros_line(size: int) -> str:
    return "1 " + "0" * (size - 3) + "x"


def parsing_rows() -> list[Row]:
    """Parsing a pathological line now, and with the pattern used before."""
    started = time.perf_counter()
    try:
        parse_bfile([_zeros_line(LINE_BYTES)], "A000001")
    except UpstreamBadData:
        now = time.perf_counter() - started
    else:
        raise SystemExit("a line of zeros and a letter parsed as a number")
    timed = []
    for size in (4096, 8192, 16384):
        line = _zeros_line(size).split()[1]
        started = time.perf_counter()
        OLD_VALUE.fullmatch(line)
        timed.append((size, time.perf_counter() - started))
    size, seconds = timed[-1]
    extrapolated = seconds * (LINE_BYTES / size) ** 2  # quadratic
    before = ", ".join(f"{s // 1024} KB {t:.2f} s" for s, t in timed)
    return [
        ("parse a 1 MB line of zeros and a letter", f"{now * 1000:.1f} ms", "", ""),
        (f"  before: {before}; 1 MB extrapolated", f"{extrapolated / 3600:.1f} h", "", ""),
    ]

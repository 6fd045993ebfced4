"""`make bench`: measure a running Backscope stack against the fake OEIS.

Starts nothing itself: run `make bench-stack` (or any stack whose BACKSCOPE_OEIS_URL is
a fake OEIS, `python -m tests.fake_oeis`) first. Before the load tests it waits (up to
--settle seconds) for the stack's background work, such as factoring, to finish, and
says so in the table's heading. Prints one table:

- cached small read and cached 10,000-term read: req/s, p50, p99 (wrk when installed,
  otherwise a Python load generator), 2 threads x 16 connections for 15 s;
- the review's edges (bench/edge_rows.py): random counts against one count of a
  sequence, reads of another sequence while 32 clients read a 10 MB one, and parsing
  a 1 MB pathological b-file line;
- a cold burst: 50 concurrent clients ask for one uncached sequence while the OEIS takes
  2 s to answer: upstream downloads, clients served, wall time;
- cold single-request latency with an instant OEIS: p50 over 20 uncached sequences;
- overload: cached reads of the small sequence by 4 clients while 40 other clients wait
  for uncached sequences from an OEIS that takes 25 s (answered, p50, p99); and how long
  another client's fresh request takes after one client's flood of 1,500 abandoned
  requests for unknown sequences (behind the 40 abandoned downloads: people still
  waiting go first); and how many of one client's 64 simultaneous cold requests start
  work (bench/burst_rows.py: at most BACKSCOPE_CLIENT_WORK_LIMIT);
- cached small read again while a Prometheus-like scraper GETs /metrics every second
  (scrapes must not slow cached reads; the scrape count and its slowest time shown);
- cached chunk read: like the others, for `get_oeis_chunk` (1,024 terms of A000040);
- 80 identical requests at once, as one FactorStacks page of the front end sends, for
  the factors of a sequence nobody asked for (downloaded and factored meanwhile), then
  for the same cached answer: p50, p99 and how many times the API built the answer;
- ingest of the j-function-like A000521 (a 3.7 MB b-file): seconds and workers' peak RSS;
- cached small read while a factor task runs: A000521 is forgotten and asked for again,
  so its hundreds of 20-155-digit terms are factored (up to BACKSCOPE_FACTOR_BUDGET
  each) throughout the load; the row says whether the task ran during the whole load
  and how many terms it factored meanwhile (needs the stack's settings, as `make bench`
  passes them); as root, also with the API and the factor worker in cgroups of their
  own at each factor worker weight of bench/cgroups.py, in alternated rounds (medians);
- peak memory of a download worker process after ingesting a 100,000-term b-file of 1,000-digit
  values (A999999; needs BACKSCOPE_OEIS_MAX_BYTES above its ~100 MB, as bench-stack sets);
- search (bench/search_rows.py, last, half an hour or more): the local search index over
  a synthetic OEIS of 390,000 entries that the fake OEIS serves (DEMO_OEIS_BULK_DIR):
  full and incremental builds from the bulk files and an oeisdata tree (seconds, peak
  RSS), its size on disk, a cold pass over 1,000 different search terms, the same under
  wrk against the cached small read, and --typists people typing at once with the index
  and without it (the OEIS taking 1 s).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import burst_rows  # bench/burst_rows.py, beside this script
import cgroups  # bench/cgroups.py, beside this script
import edge_rows  # bench/edge_rows.py, beside this script
import requests
import search_rows  # bench/search_rows.py, beside this script

SMALL = "/api/get_oeis_values/A000045/10"
LARGE = "/api/get_oeis_name_and_values/A000040"
BIG_ID = "A999999"
J_ID = "A000521"  # j-function-like: 10,000 terms up to ~550 digits, a 3.7 MB b-file
CHUNK = "/api/get_oeis_chunk/A000040/3"  # 1,024 of the 10,000 primes
# The front end's other calls, against the values read of the same sequence.
VALUES_27 = "/api/get_oeis_name_and_values/A000027"  # 10,000 terms
FACTORS_27 = "/api/get_oeis_factors/A000027/10000"
SEARCH = "/api/search_oeis/fibonacci"
# What one FactorStacks page of the front end sends at once, all identical.
IDENTICAL = 80
# Factored in the background while the small read is measured: hundreds of terms take
# up to the factor budget each, so the task outlasts the load.
FACTORING_ID = J_ID
METADATA = "/api/get_oeis_metadata/A000045"
# The factor worker's CPU weight in the cgroup rows (bench/cgroups.py).
CGROUP_LABELS = {
    "default": "default weight",
    "idle": "CPUWeight=idle (deploy/)",
    "shares 2": "cpu_shares: 2 (compose)",
}


def get_until_done(base: str, path: str, timeout: float = 120) -> requests.Response:
    """GET, following 202 answers (as the front end does) until a final answer."""
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        while True:
            response = session.get(base + path, timeout=timeout)
            if response.status_code != 202 or time.monotonic() > deadline:
                return response
            time.sleep(0.2)


# ----------------------------------------------------------------- load generation


def wrk(
    url: str, threads: int, connections: int, seconds: int, paths: list[str] | None = None
) -> tuple[float, float, float]:
    """wrk's rate, p50 and p99 (ms) for `url`, or for `paths` on its server in turn."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if paths:
            script.write(f"paths = {{{', '.join(json.dumps(p) for p in paths)}}}\n")
            script.write("n = 0\n")
            script.write("request = function()\n  n = n % #paths + 1\n")
            script.write("  return wrk.format(nil, paths[n])\nend\n")
            script.flush()
            command += ["-s", script.name]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))

    def percentile(label: str) -> float:
        value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", output).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    return rate, percentile("50"), percentile("99")


def python_load(
    url: str, threads: int, connections: int, seconds: int, paths: list[str] | None = None
) -> tuple[float, float, float]:
    """A keep-alive load generator for machines without wrk (slower than wrk itself)."""
    parts = urlsplit(url)
    choices = paths or [parts.path]
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)
        mine = []
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            connection.request("GET", random.choice(choices))
            connection.getresponse().read()
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            latencies.extend(mine)

    with ThreadPoolExecutor(connections) as pool:
        for _ in range(connections):
            pool.submit(client)
    latencies.sort()
    return (
        len(latencies) / seconds,
        latencies[len(latencies) // 2],
        latencies[int(len(latencies) * 0.99)],
    )


class Scraper:
    """GET /metrics every `interval` seconds in a thread, as Prometheus would, while a
    load runs; counts the scrapes that answered 200 and keeps the slowest."""

    def __init__(self, base: str, interval: float = 1.0) -> None:
        self.url = base + "/metrics"
        self.interval = interval
        self.answered = 0
        self.slowest = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self.stop.wait(self.interval):
                started = time.perf_counter()
                if session.get(self.url, timeout=10).status_code == 200:
                    self.answered += 1
                self.slowest = max(self.slowest, time.perf_counter() - started)

    def __enter__(self) -> Scraper:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


# ----------------------------------------------------------------------- scenarios


def fake(oeis: str, path: str, body: dict | None = None) -> dict:
    if body is None:
        return requests.get(oeis + path, timeout=10).json()
    return requests.post(oeis + path, json=body, timeout=10).json()


def downloads(oeis: str, seq_id: str) -> int:
    path = f"/{seq_id}/b{seq_id[1:]}.txt"
    return sum(1 for r in fake(oeis, "/_fake/stats")["requests"] if r["path"] == path)


def uncached_ids(count: int) -> list[str]:
    """Synthetic sequences (A910000-A919999: a(n) = n*(N+1)) this stack has likely not seen."""
    return [f"A{n}" for n in random.sample(range(910000, 920000), count)]


def expected_values(seq_id: str) -> dict[str, str]:
    k = int(seq_id[1:]) - 910000 + 1
    return {str(n): str(n * k) for n in range(1000)}


def cold_burst(base: str, oeis: str) -> tuple[int, int, float]:
    (seq_id,) = uncached_ids(1)
    fake(oeis, "/_fake/config", {"latency": 2.0})
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(50) as pool:
            answers = list(
                pool.map(
                    lambda _: get_until_done(base, f"/api/get_oeis_name_and_values/{seq_id}"),
                    range(50),
                )
            )
        wall = time.monotonic() - started
    finally:
        fake(oeis, "/_fake/config", {"latency": 0.0})
    served = sum(
        1 for a in answers if a.status_code == 200 and a.json()["values"] == expected_values(seq_id)
    )
    return downloads(oeis, seq_id), served, wall


def cold_latency(base: str) -> float:
    times = []
    for seq_id in uncached_ids(20):
        started = time.perf_counter()
        response = get_until_done(base, f"/api/get_oeis_values/{seq_id}/0")
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return statistics.median(times)


def factors_complete(base: str, timeout: float = 300) -> None:
    """Wait until every factor of FACTORS_27 is stored (the bench reads the cached answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = requests.get(base + FACTORS_27, timeout=60)
        if response.status_code == 200 and response.json()["complete"]:
            return
        time.sleep(1)
    raise SystemExit(
        f"{FACTORS_27} still incomplete after {timeout} s: is a factor worker running?"
    )


def get_from(base: str, path: str, source: str, timeout: float) -> tuple[int, float]:
    """GET `path` from the loopback address `source` (a client of its own); (status,
    milliseconds). Status 0 when no answer came within `timeout`."""
    parts = urlsplit(base)
    started = time.perf_counter()
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port or 80, timeout=timeout, source_address=(source, 0)
    )
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        status = response.status
    except OSError:
        status = 0
    finally:
        connection.close()
    return status, (time.perf_counter() - started) * 1000


def overload_reads(base: str, oeis: str, seconds: int) -> tuple[int, int, float, float]:
    """40 clients (127.0.1.N) ask for 40 uncached sequences while the OEIS takes 25 s;
    meanwhile 4 clients (127.0.2.N) read the cached small sequence. Returns the cached
    reads answered 200 within 10 s, their total, p50 and p99 in ms."""
    fake(oeis, "/_fake/config", {"latency": 25.0})
    reads: list[tuple[int, float]] = []
    stop_at = time.monotonic() + seconds

    def reader(n: int) -> None:
        while time.monotonic() < stop_at:
            reads.append(get_from(base, SMALL, f"127.0.2.{n}", 10))

    try:
        with ThreadPoolExecutor(44) as pool:
            for n, seq_id in enumerate(uncached_ids(40), start=1):
                pool.submit(
                    get_from, base, f"/api/get_oeis_name_and_values/{seq_id}", f"127.0.1.{n}", 60
                )
            time.sleep(1)  # the cold requests are in
            for n in range(1, 5):
                pool.submit(reader, n)
    finally:
        fake(oeis, "/_fake/config", {"latency": 0.0})
    times = sorted(ms for status, ms in reads if status == 200)
    if not times:
        return 0, len(reads), 0.0, 0.0
    return len(times), len(reads), times[len(times) // 2], times[int(len(times) * 0.99)]


def after_flood(base: str) -> tuple[int, float]:
    """One client (127.0.3.1) asks for 1,500 different unknown sequences, giving up on each
    after 0.5 s; then another client (127.0.3.2) asks for a fresh sequence: its status and
    seconds to the answer."""
    first = random.randrange(800000, 898000)
    with ThreadPoolExecutor(16) as pool:
        for n in range(1500):
            pool.submit(get_from, base, f"/api/get_oeis_values/A{first + n}/5", "127.0.3.1", 0.5)
    (seq_id,) = uncached_ids(1)
    status, ms = get_from(base, f"/api/get_oeis_name_and_values/{seq_id}", "127.0.3.2", 60)
    return status, ms / 1000


def documents_built(base: str, kind: str) -> float:
    """How many `kind` answers the API processes have built from the database so far."""
    text = requests.get(base + "/metrics", timeout=30).text
    pattern = rf'^backscope_documents_built_total{{kind="{kind}"}} ([0-9.e+]+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def identical_requests(base: str, path: str) -> tuple[float, float, str, str]:
    """IDENTICAL clients GET the factors `path` at the same moment, following 202 answers:
    p50 and p99 in ms to their answers, how many were complete, and how many complete
    and partial answers the API built meanwhile (one complete build per API process is
    the aim, however many clients)."""
    before = {kind: documents_built(base, kind) for kind in ("factors", "factors_partial")}
    start = threading.Barrier(IDENTICAL)

    def one(_: int) -> tuple[bool, float]:
        start.wait()
        started = time.perf_counter()
        response = get_until_done(base, path)
        complete = response.status_code == 200 and response.json()["complete"]
        return complete, (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(IDENTICAL) as pool:
        answers = list(pool.map(one, range(IDENTICAL)))
    times = sorted(ms for _, ms in answers)
    built = {kind: round(documents_built(base, kind) - count) for kind, count in before.items()}
    return (
        times[len(times) // 2],
        times[int(len(times) * 0.99)],
        f"{sum(complete for complete, _ in answers)}/{IDENTICAL} complete",
        f"built {built['factors']} + {built['factors_partial']} partial",
    )


def factored_terms(seq_id: str) -> int:
    """How many of `seq_id`'s terms have a stored factorization."""
    from sqlalchemy import func, select

    from shared.db import session_scope
    from shared.models import Factorization

    with session_scope() as session:
        query = select(func.count()).select_from(Factorization).where(Factorization.id == seq_id)
        return session.scalar(query)


def start_factoring(base: str) -> None:
    """Have FACTORING_ID factored from now on: it is forgotten and asked for again, and
    its download schedules the factoring of every term."""
    from shared.admin.cache import forget
    from shared.config import get_settings
    from shared.redis_db import get_redis

    forget(get_settings().database_url, get_redis("locks"), [FACTORING_ID])
    assert get_until_done(base, f"/api/get_oeis_values/{FACTORING_ID}/3").status_code == 200
    deadline = time.monotonic() + 60
    while f"factors:{FACTORING_ID}" not in background_work():
        if time.monotonic() > deadline:
            raise SystemExit(f"no factor task for {FACTORING_ID} within 60 s: a factor worker?")
        time.sleep(0.2)
    time.sleep(2)  # past the first terms, which need no time at all


def reads_while_factoring(
    base: str, load: Callable[..., tuple[float, float, float]], connections: int, seconds: int
) -> tuple[float, float, float, bool, int]:
    """The cached small read under `load` while FACTORING_ID is factored (start_factoring).
    Returns rate, p50, p99, whether the factor task ran throughout the load and how many
    terms it factored meanwhile."""
    lock = f"factors:{FACTORING_ID}"
    checks: list[bool] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.25):
            checks.append(lock in background_work())

    watcher = threading.Thread(target=watch, daemon=True)
    before = factored_terms(FACTORING_ID)
    watcher.start()
    try:
        rate, p50, p99 = load(base + SMALL, 2, connections, seconds)
    finally:
        stop.set()
        watcher.join()
    return rate, p50, p99, all(checks), factored_terms(FACTORING_ID) - before


def factoring_rows(
    base: str,
    load: Callable[..., tuple[float, float, float]],
    connections: int,
    seconds: int,
    rounds: int,
) -> list[tuple[str, str, str, str]]:
    """The cached small read while FACTORING_ID is factored: with the stack as it runs
    (one scheduling group, where BACKSCOPE_FACTOR_NICE orders the processes) and, as
    root, with the factor worker in a cgroup of its own at each weight of
    cgroups.WEIGHTS, as under systemd or Docker. The arrangements take turns for
    `rounds` rounds, so the machine's slower minutes fall on all of them alike; each row
    gives medians, and the range of the p99."""
    start_factoring(base)
    reason = cgroups.unavailable()
    arrangements: list[str | None] = [None, *([] if reason else cgroups.WEIGHTS)]
    rows = []
    results: dict[str | None, list[tuple[float, float, float, bool, int]]] = {
        arrangement: [] for arrangement in arrangements
    }
    for _ in range(rounds):
        for arrangement in arrangements:
            if arrangement is None:
                measured = reads_while_factoring(base, load, connections, seconds)
            else:
                with cgroups.SeparateGroups() as separate:
                    separate.weigh_factors(arrangement)
                    measured = reads_while_factoring(base, load, connections, seconds)
            results[arrangement].append(measured)
    for arrangement, measured in results.items():
        label = "cached small read, factor task running"
        if arrangement is not None:
            label = f"  same, factor worker in its own cgroup, {CGROUP_LABELS[arrangement]}"
        rates, p50s, p99s, throughout, factored = zip(*measured, strict=True)
        rows.append(
            (
                label,
                f"{statistics.median(rates):,.0f} req/s",
                f"p50 {statistics.median(p50s):.1f} ms",
                f"p99 {statistics.median(p99s):.1f} ms ({min(p99s):.1f}-{max(p99s):.1f})",
            )
        )
        note = (
            f"factor task ran throughout {sum(throughout)}/{rounds} loads, "
            f"{statistics.median(factored):.0f} terms factored per load"
        )
        rows.append((f"      ({note})", "", "", ""))
    if reason:
        rows.append(
            (f"  (factor worker in a cgroup of its own: not measured, {reason})", "", "", "")
        )
    return rows


def worker_peak_rss_mb() -> float:
    """The largest peak RSS (VmHWM) among this machine's Celery download workers."""
    peak = 0
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            if b"celery" not in cmdline or b"downloads" not in cmdline:
                continue
            status = (proc / "status").read_text()
        except OSError:
            continue
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        if match:
            peak = max(peak, int(match.group(1)))
    return peak / 1024


def ingest(base: str, seq_id: str, label: str) -> tuple[str, str, str, str]:
    """The row for asking for a sequence `make bench` forgot first: status, seconds and
    the download workers' peak RSS."""
    started = time.monotonic()
    response = get_until_done(base, f"/api/get_oeis_values/{seq_id}/3", timeout=600)
    seconds = time.monotonic() - started
    return (
        label,
        f"HTTP {response.status_code}",
        f"{seconds:.1f} s",
        f"worker peak RSS {worker_peak_rss_mb():.0f} MB",
    )


def background_work() -> list[str]:
    """The work locks held in the stack's Redis (downloads, factoring under way)."""
    from shared.redis_db import get_redis
    from shared.work.lock import list_locks

    return [info.key.removeprefix("backscope:lock:") for info in list_locks(get_redis("locks"))]


def settle(seconds: float) -> str:
    """Wait up to `seconds` for the stack's background work to finish, so the load tests
    measure the API rather than factoring that earlier requests started (on 2 cores it
    takes a core); say how that went. Needs the stack's BACKSCOPE_REDIS_URL (make bench
    passes bench-stack's)."""
    if seconds <= 0 or "BACKSCOPE_REDIS_URL" not in os.environ:
        return "background work not checked"
    started = time.monotonic()
    while (busy := background_work()) and time.monotonic() - started < seconds:
        time.sleep(1)
    waited = time.monotonic() - started
    if busy:
        return f"background work still running after {waited:.0f} s: {', '.join(busy[:3])}"
    return f"quiet stack (waited {waited:.0f} s for background work)"


ROW_GROUPS = (
    "reads",
    "edges",
    "cold",
    "identical",
    "overload",
    "ingest",
    "factoring",
    "big",
    "search",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("BENCH_URL", "http://127.0.0.1:5000"))
    parser.add_argument("--oeis", default=os.environ.get("BENCH_OEIS_URL", "http://127.0.0.1:8099"))
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--skip-big", action="store_true", help="skip the 100 MB ingest")
    parser.add_argument(
        "--rows",
        default=",".join(ROW_GROUPS),
        help=f"the groups of rows to measure, in this order: {','.join(ROW_GROUPS)}",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the factoring rows (medians shown)"
    )
    parser.add_argument(
        "--settle", type=float, default=120, help="seconds to wait for background work first"
    )
    parser.add_argument(
        "--typists", type=int, default=10, help="people typing at once in the search rows"
    )
    parser.add_argument(
        "--search-entries",
        type=int,
        default=search_rows.ENTRIES,
        help="entries of the synthetic OEIS of the search rows",
    )
    parser.add_argument(
        "--search-no-oeisdata",
        action="store_true",
        help="search rows: no oeisdata tree, builds from the bulk files only",
    )
    args = parser.parse_args()
    base = args.url.rstrip("/")
    groups = set(args.rows.split(","))
    if args.skip_big:
        groups.discard("big")
    if unknown := groups - set(ROW_GROUPS):
        parser.error(f"unknown row groups: {', '.join(sorted(unknown))}")
    if not 1 <= args.typists <= 254:
        parser.error("--typists must be 1-254 (one loopback address each)")

    for path in (SMALL, LARGE, CHUNK, VALUES_27, SEARCH, METADATA):  # cached first
        assert get_until_done(base, path).status_code == 200, path
    factors_complete(base)
    quiet = settle(args.settle)
    load = wrk if shutil.which("wrk") else python_load
    tool = "wrk" if load is wrk else "python"
    rows = []
    reads = (
        ("cached small read", SMALL),
        ("cached 10k-term read", LARGE),
        ("cached chunk read (1,024 terms)", CHUNK),
        ("cached A000027 values (10k terms)", VALUES_27),
        ("cached A000027 factors (10k terms)", FACTORS_27),
        ("cached search", SEARCH),
        ("cached metadata", METADATA),
    )
    for label, path in reads if "reads" in groups else ():
        rate, p50, p99 = load(base + path, 2, args.connections, args.seconds)
        rows.append((label, f"{rate:,.0f} req/s", f"p50 {p50:.1f} ms", f"p99 {p99:.1f} ms"))
        if path == SMALL:
            with Scraper(base) as scraper:
                rate, p50, p99 = load(base + path, 2, args.connections, args.seconds)
            rows.append(
                (
                    f"  same, /metrics scraped every 1 s ({scraper.answered} scrapes, "
                    f"slowest {scraper.slowest * 1000:.0f} ms)",
                    f"{rate:,.0f} req/s",
                    f"p50 {p50:.1f} ms",
                    f"p99 {p99:.1f} ms",
                )
            )
    if "edges" in groups:
        assert get_until_done(base, edge_rows.WIDE, timeout=300).status_code == 200
        rows += edge_rows.count_rows(base, load, args.connections, args.seconds)
        rows += edge_rows.wide_rows(base, load, args.connections, args.seconds)
        rows += edge_rows.parsing_rows()
    if "cold" in groups:
        count, served, wall = cold_burst(base, args.oeis)
        rows.append(
            (
                "cold burst, 50 clients, OEIS 2 s",
                f"{count} download(s)",
                f"{served}/50 served",
                f"{wall:.1f} s wall",
            )
        )
        rows.append(
            ("cold single request, instant OEIS", f"p50 {cold_latency(base):.0f} ms", "", "")
        )
    if "identical" in groups:
        (seq_id,) = uncached_ids(1)
        path = f"/api/get_oeis_factors/{seq_id}/1000"
        for label in ("uncached", "cached"):
            p50, p99, complete, built = identical_requests(base, path)
            rows.append(
                (
                    f"{IDENTICAL} identical factor requests, {label}",
                    f"{complete}, {built}",
                    f"p50 {p50:.1f} ms",
                    f"p99 {p99:.1f} ms",
                )
            )
    if "overload" in groups:
        answered, total, p50, p99 = overload_reads(base, args.oeis, args.seconds)
        rows.append(
            (
                "cached reads, 40 cold requests hanging",
                f"{answered}/{total} answered",
                f"p50 {p50:.1f} ms",
                f"p99 {p99:.1f} ms",
            )
        )
        status, seconds = after_flood(base)
        rows.append(("fresh request after a 1,500 flood", f"HTTP {status}", f"{seconds:.1f} s", ""))
        limit = int(os.environ.get("BACKSCOPE_CLIENT_WORK_LIMIT", "12"))
        rows.append(burst_rows.burst_row(base, args.oeis.rstrip("/"), limit, get_from))
    if "ingest" in groups:
        rows.append(ingest(base, J_ID, "ingest A000521 (3.7 MB)"))
    if "factoring" in groups:
        rows += factoring_rows(base, load, args.connections, args.seconds, args.rounds)
    if "big" in groups:
        rows.append(ingest(base, BIG_ID, "ingest 100k terms x 1000 digits"))
    if "search" in groups:
        rows += search_rows.rows(
            search_rows.Options(
                base=base,
                oeis=args.oeis.rstrip("/"),
                seconds=args.seconds,
                connections=args.connections,
                typists=args.typists,
                entries=args.search_entries,
                oeisdata=not args.search_no_oeisdata,
                fake=fake,
            )
        )
    print(
        f"\nBackscope at {base} (load: {tool}, 2 threads x {args.connections} connections, "
        f"{args.seconds} s; {quiet})"
    )
    # A row with only its first cell is a note: it does not widen the first column.
    measured = [row for row in rows if any(row[1:])] or rows
    widths = [max(len(row[i]) for row in measured) for i in range(4)]
    for row in rows:
        if not any(row[1:]):
            print("  " + row[0])
            continue
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()

"""The "search" rows of `make bench` (bench.py --rows search): the local search index
over a synthetic OEIS of full size, and searching it.

Needs the stack of `make bench-stack`, whose fake OEIS serves the bulk files in
DEMO_OEIS_BULK_DIR (`--bulk-dir`), and the stack's settings in the environment (as
`make bench` passes them): the rows run `backscope index` themselves, against the same
database. In order:

- the synthetic OEIS (bench/synthetic_oeis.py: 390,000 entries, bulk files and an
  oeisdata tree) is generated into DEMO_OEIS_BULK_DIR unless it is there already;
- index builds, each timed with the peak RSS of the `backscope index` process: the
  index is removed (and the table's files emptied with VACUUM FULL, so that the build
  starts as a first deployment's would), then built from the bulk files (`--full`);
  updated after 1,000
  entries changed (`synthetic_oeis.py --changed 1000`: 800 modified, 100 removed, 100
  added) and after the data went back to the base; the same from the oeisdata tree
  (BACKSCOPE_OEISDATA_DIR=<dir>/oeisdata; the first build from it rewrites every
  entry, since a source's digests are its own); and back to the bulk files with
  `--full` over the existing index. After every build `VACUUM (ANALYZE)
  search_entries` runs (not counted), as autovacuum would: without statistics
  PostgreSQL plans these searches badly, and this machine's PostgreSQL may have
  autovacuum off (the row says so);
- the size on disk of `search_entries` and of each of its indexes, after the first
  build and after the rewrites;
- a cold pass over 1,000 different search terms drawn from the synthetic names and
  terms (words, prefixes, two and three words, quoted phrases, A-numbers, runs of
  terms), one request each: p50, p99, how many answered 200, per kind of term; then
  the cached small read and, right after it, the 1,000 terms cycled under wrk (after a
  warm-up, so both API processes hold every answer): req/s, p50, p99, and the ratio;
- typing: --typists people at once, each from a loopback address of its own, one
  request per keystroke every 150 ms, the fake OEIS taking 1 s per answer; with the
  index, and without it (`backscope index --remove`, words no earlier search cached),
  after which the index is built again and the fake's latency reset.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

Row = tuple[str, str, str, str]

HERE = Path(__file__).resolve().parent
GENERATOR = HERE / "synthetic_oeis.py"
ENTRIES = 390_000
CHANGED = 1_000
TERMS = 1_000  # different search terms in the mix
SMALL = "/api/get_oeis_values/A000045/10"
SEARCH = "/api/search_oeis/"
KEY_INTERVAL = 0.15  # seconds between keystrokes
FINAL_WITHIN = 2.0  # a final word must be answered within this many seconds
OEIS_LATENCY = 1.0  # the fake OEIS's latency during the typing rows
WARM_UP = 5  # seconds of wrk over the mix before it is measured
# Words people type, all of which occur in the synthetic names.
TYPED = (
    "fibonacci",
    "catalan",
    "factorial",
    "partitions",
    "squarefree",
    "triangular",
    "binomial",
    "divisors",
    "permutations",
    "polynomial",
)
# How many terms of each kind the mix holds (they add up to TERMS).
MIX = {
    "word": 250,
    "prefix": 200,
    "two words": 200,
    "three words": 130,
    "quoted": 20,
    "A-number": 100,
    "terms": 100,
}
_TOKEN = re.compile(r"[^\W_]+")
_INDEXED = re.compile(
    r"Indexed ([\d,]+) entr(?:y|ies) from .* in \S+: (\d+) added, (\d+) changed, (\d+) removed\."
)
# Runs a command, then writes the largest peak RSS among its processes (kB) to a file.
_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[2:]).returncode\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)


def note(message: str) -> None:
    """Progress on stderr: the group takes half an hour or more."""
    print(f"[search {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_average() -> float:
    """The machine's 1-minute load average: on 2 cores, above 2 means others ran too."""
    return os.getloadavg()[0]


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)] if ordered else 0.0


# ------------------------------------------------------------------ the synthetic OEIS


def synthetic_state(folder: Path) -> tuple[int, int] | None:
    """(entries, changed) of the bulk files in `folder`, from names.gz's header."""
    try:
        with gzip.open(folder / "names.gz", "rt", encoding="utf-8") as names:
            head = names.read(400)
        if not (folder / "stripped.gz").is_file():
            return None
    except OSError:
        return None
    found = re.search(r"seed 1, (\d+) entries, (\d+) changed", head)
    return (int(found[1]), int(found[2])) if found else None


def tree_state(folder: Path) -> tuple[int, int] | None:
    try:
        marker = json.loads((folder / "oeisdata" / "synthetic_oeis.json").read_text())
    except (OSError, ValueError):
        return None
    if not marker.get("complete") or marker.get("seed") != 1:
        return None
    return marker.get("entries"), marker.get("changed")


def generate(folder: Path, entries: int, changed: int, oeisdata: bool) -> tuple[float, str]:
    """Run bench/synthetic_oeis.py; (seconds, its summary line)."""
    command = [sys.executable, str(GENERATOR), str(folder), "--entries", str(entries)]
    if changed:
        command += ["--changed", str(changed)]
    if not oeisdata:
        command.append("--no-oeisdata")
    note(f"generating: {' '.join(command[1:])}")
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"synthetic_oeis.py failed:\n{done.stdout}{done.stderr}")
    return time.monotonic() - started, done.stdout.strip().splitlines()[-1]


def served_by_fake(oeis: str, folder: Path) -> bool:
    """Whether the fake OEIS serves `folder`'s names.gz (its ETag is the file's MD5)."""
    import hashlib

    tag = f'"{hashlib.md5((folder / "names.gz").read_bytes()).hexdigest()}"'
    parts = urlsplit(oeis)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=60)
    try:
        connection.request("GET", "/names.gz", headers={"If-None-Match": tag})
        response = connection.getresponse()
        response.read()
        return response.status == 304
    finally:
        connection.close()


# ------------------------------------------------------------------ index builds


@dataclass
class Built:
    seconds: float
    rss_mb: float
    entries: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    output: str = ""

    def counts(self) -> str:
        return f"{self.changed} changed, {self.added} added, {self.removed} removed"


def backscope_index(*args: str, env: dict[str, str] | None = None) -> Built:
    """Run `backscope index ARGS` (retrying while another build runs): wall seconds,
    peak RSS and what it says it did."""
    executable = shutil.which("backscope") or str(Path(sys.executable).with_name("backscope"))
    environment = {**os.environ, **(env or {})}
    for _ in range(120):
        with tempfile.NamedTemporaryFile("r", prefix="bench-rss-", suffix=".txt") as rss:
            command = [sys.executable, "-c", _RSS_WRAPPER, rss.name, executable, "index", *args]
            started = time.monotonic()
            done = subprocess.run(
                command, capture_output=True, text=True, env=environment, check=False
            )
            seconds = time.monotonic() - started
            peak = rss.read().strip()
        output = done.stdout + done.stderr
        if done.returncode == 0:
            break
        if "another index build is running" not in output:
            raise SystemExit(f"backscope index {' '.join(args)} failed:\n{output[-3000:]}")
        note("another index build is running; waiting")
        time.sleep(5)
    else:
        raise SystemExit("another index build kept running for 10 minutes")
    built = Built(seconds, int(peak or 0) / 1024, output=output)
    found = _INDEXED.search(output)
    if found:
        built.entries = int(found[1].replace(",", ""))
        built.added, built.changed, built.removed = (int(found[i]) for i in (2, 3, 4))
    return built


class Database:
    """The stack's database, for VACUUM and sizes (autocommit: VACUUM needs it)."""

    def __init__(self) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        from shared.config import get_settings

        self.engine = create_engine(
            get_settings().database_url, isolation_level="AUTOCOMMIT", poolclass=NullPool
        )

    def scalar(self, sql: str) -> object:
        from sqlalchemy import text

        with self.engine.connect() as connection:
            return connection.execute(text(sql)).scalar()

    def autovacuum(self) -> str:
        return str(self.scalar("SHOW autovacuum"))

    def vacuum(self, full: bool = False) -> float:
        """VACUUM (ANALYZE) search_entries, as autovacuum would after a large build; FULL
        after the index was removed, so that the next build starts from empty files."""
        from sqlalchemy import text

        started = time.monotonic()
        with self.engine.connect() as connection:
            connection.execute(text(f"VACUUM ({'FULL, ' if full else ''}ANALYZE) search_entries"))
        return time.monotonic() - started

    def sizes(self) -> tuple[float, float, float, dict[str, float]]:
        """MB on disk: the whole table (with TOAST and indexes), its heap, its indexes,
        and each index."""
        from sqlalchemy import text

        mb = 1024 * 1024
        with self.engine.connect() as connection:
            total, heap, indexes = connection.execute(
                text(
                    "SELECT pg_total_relation_size('search_entries'),"
                    " pg_relation_size('search_entries'), pg_indexes_size('search_entries')"
                )
            ).one()
            each = {
                name.removeprefix("ix_search_entries_"): size / mb
                for name, size in connection.execute(
                    text(
                        "SELECT c.relname, pg_relation_size(i.indexrelid) FROM pg_index AS i"
                        " JOIN pg_class AS c ON c.oid = i.indexrelid"
                        " WHERE i.indrelid = 'search_entries'::regclass ORDER BY 2 DESC"
                    )
                )
            }
        return total / mb, heap / mb, indexes / mb, each


def size_rows(label: str, database: Database) -> list[Row]:
    total, heap, indexes, each = database.sizes()
    listed = ", ".join(f"{name} {size:,.0f}" for name, size in each.items())
    return [
        (label, f"total {total:,.0f} MB", f"table {heap:,.0f} MB", f"indexes {indexes:,.0f} MB"),
        (
            f"  (TOAST and maps {total - heap - indexes:,.0f} MB; indexes in MB: {listed})",
            "",
            "",
            "",
        ),
    ]


# ------------------------------------------------------------------ the search terms


def term_mix(folder: Path, entries: int, seed: int = 1) -> list[tuple[str, str]]:
    """TERMS different (kind, term) pairs, drawn deterministically from the synthetic
    names and terms: MIX says how many of each kind."""
    from shared.search.query import fold
    from shared.store.reads import search_key

    rng = random.Random(f"backscope search mix {seed}")
    names: list[list[str]] = []  # the tokens of every 5th name, as written
    with gzip.open(folder / "names.gz", "rt", encoding="utf-8") as lines:
        for number, line in enumerate(line for line in lines if not line.startswith("#")):
            if number % 5 == 0:
                names.append(_TOKEN.findall(line.split(" ", 1)[1]))
    runs: list[list[str]] = []  # the terms of every 50th entry
    with gzip.open(folder / "stripped.gz", "rt", encoding="utf-8") as lines:
        for number, line in enumerate(line for line in lines if not line.startswith("#")):
            if number % 50 == 0:
                values = line.split(" ", 1)[1].strip().strip(",").split(",")
                if len(values) >= 3:
                    runs.append(values)
    counts: Counter[str] = Counter()
    spelled: dict[str, str] = {}  # folded word -> a spelling seen in the names
    for tokens in names:
        for token in tokens:
            if token.isalpha():
                folded = fold(token)
                counts[folded] += 1
                spelled.setdefault(folded, token)
    ranked = [word for word, _ in counts.most_common()]
    frequent = [word for word in ranked[:300] if len(word) >= 4]
    usable = [word for word in ranked if len(word) >= 3]
    weights = [counts[word] for word in usable]

    def phrase(size: int) -> list[str]:
        while True:
            tokens = rng.choice(names)
            if len(tokens) < size:
                continue
            start = rng.randrange(len(tokens) - size + 1)
            found = tokens[start : start + size]
            if all(t.isalpha() for t in found) and max(len(t) for t in found) >= 3:
                return found

    def typed_part(words: list[str]) -> str:
        """Words as typed, the last one unfinished now and then."""
        last = words[-1]
        if len(last) > 3 and rng.random() < 0.3:
            words = [*words[:-1], last[: rng.randrange(2, len(last))]]
        return " ".join(words)

    def draw(kind: str, index: int) -> str:
        if kind == "word":
            if index < 150:  # as often as they occur
                return spelled[rng.choices(usable, weights)[0]]
            return spelled[rng.choice(usable)]  # any word: most are rare
        if kind == "prefix":
            word = spelled[rng.choice(frequent)]
            return word[: rng.randint(1, min(6, len(word) - 1))]
        if kind == "two words":
            return typed_part(phrase(2))
        if kind == "three words":
            return typed_part(phrase(3))
        if kind == "quoted":
            words = phrase(rng.choice((2, 2, 3)))
            return f'"{" ".join(words)}"' if index < 15 else f'"{typed_part(words)}'
        if kind == "A-number":
            number = rng.randint(1, 2_000) if index < 40 else rng.randint(1, entries)
            return rng.choice(("A{:06d}", "A{}", "a{}", "id:A{:06d}")).format(number)
        values = rng.choice(runs)  # kind == "terms"
        start = 0 if rng.random() < 0.5 else rng.randrange(len(values) - 2)
        size = min(rng.randint(3, 8), len(values) - start)
        text = rng.choice((",", ",", ",", ", ", " ")).join(values[start : start + size])
        if len(text) > 80:
            return ""
        return text + ("," if rng.random() < 0.3 else "")

    seen: set[str] = set()
    mix: list[tuple[str, str]] = []
    for kind, count in MIX.items():
        made = attempts = 0
        while made < count and attempts < count * 200:
            attempts += 1
            term = draw(kind, made)
            key = search_key(term)
            if term and key not in seen and "/" not in term:
                seen.add(key)
                mix.append((kind, term))
                made += 1
    rng.shuffle(mix)
    return mix


def search_path(term: str) -> str:
    return SEARCH + quote(term, safe="")


def cold_pass(base: str, mix: list[tuple[str, str]]) -> list[tuple[str, str, int, float]]:
    """Each term once, one after the other on one keep-alive connection:
    (kind, term, status, ms)."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=60)
    answers = []
    try:
        for kind, term in mix:
            started = time.perf_counter()
            try:
                connection.request("GET", search_path(term))
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                status = 0
            answers.append((kind, term, status, (time.perf_counter() - started) * 1000))
    finally:
        connection.close()
    return answers


def cold_rows(answers: list[tuple[str, str, int, float]]) -> list[Row]:
    times = [t for *_, t in answers]
    ok = sum(1 for _, _, status, _ in answers if status == 200)
    rows = [
        (
            f"search, cold pass, {len(answers):,} different terms",
            f"{ok}/{len(answers)} HTTP 200",
            f"p50 {ms(times, 0.5):.1f} ms",
            f"p99 {ms(times, 0.99):.1f} ms",
        )
    ]
    for kind in MIX:
        mine = [t for k, _, _, t in answers if k == kind]
        rows.append(
            (
                f"  {kind} ({len(mine)})",
                f"max {max(mine):.0f} ms",
                f"p50 {ms(mine, 0.5):.1f} ms",
                f"p99 {ms(mine, 0.99):.1f} ms",
            )
        )
    slowest = sorted(answers, key=lambda a: -a[3])[:3]
    listed = ", ".join(f"{term!r} {t:,.0f} ms" for _, term, _, t in slowest)
    rows.append((f"  (slowest: {listed})", "", "", ""))
    return rows


# ------------------------------------------------------------------ load over many paths


_LUA = """
local paths = {}
for line in io.lines(%s) do paths[#paths + 1] = line end
local threads = 0
function setup(thread)
  thread:set("first", threads)
  threads = threads + 1
end
local i = 0
function init(args)
  i = (first or 0) * math.floor(#paths / 2)
end
function request()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
"""


@dataclass
class Load:
    rate: float
    p50: float
    p99: float
    bad: int = 0  # answers other than 2xx/3xx, and socket errors
    extra: dict[str, int] = field(default_factory=dict)


def wrk_load(base: str, paths: list[str], connections: int, seconds: int) -> Load:
    """wrk -t2 over `paths` in turn (a Lua script), or over the one path."""
    with tempfile.TemporaryDirectory(prefix="bench-search-") as folder:
        command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
        if len(paths) > 1:
            listing = Path(folder) / "paths.txt"
            listing.write_text("".join(path + "\n" for path in paths))
            script = Path(folder) / "paths.lua"
            script.write_text(_LUA % json.dumps(str(listing)))
            command += ["-s", str(script)]
        output = subprocess.run(
            [*command, base + paths[0]], capture_output=True, text=True, check=True
        ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))

    def percentile(label: str) -> float:
        value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", output).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    load = Load(rate, percentile("50"), percentile("99"), int(bad[1]) if bad else 0)
    if errors:
        load.bad += sum(int(n) for n in errors.groups())
    return load


def python_load(base: str, paths: list[str], connections: int, seconds: int) -> Load:
    """The same with threads of keep-alive connections (when wrk is missing; slower)."""
    parts = urlsplit(base)
    latencies: list[float] = []
    bad = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(first: int) -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)
        mine, wrong, i = [], 0, first
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            connection.request("GET", paths[i % len(paths)])
            response = connection.getresponse()
            response.read()
            wrong += response.status >= 400
            mine.append((time.perf_counter() - started) * 1000)
            i += 1
        with lock:
            latencies.extend(mine)
            bad[0] += wrong

    with ThreadPoolExecutor(connections) as pool:
        for n in range(connections):
            pool.submit(client, n * len(paths) // connections)
    return Load(len(latencies) / seconds, ms(latencies, 0.5), ms(latencies, 0.99), bad[0])


# ------------------------------------------------------------------ typing


@dataclass
class Answer:
    status: int  # 0: no answer within the time-out
    ms: float
    error: str = ""  # the JSON error of an answer that is not 200


def get_from(base: str, path: str, source: str, timeout: float) -> Answer:
    """GET `path` from the loopback address `source`, a client of its own."""
    parts = urlsplit(base)
    started = time.perf_counter()
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port or 80, timeout=timeout, source_address=(source, 0)
    )
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        answer = Answer(response.status, 0.0)
        if response.status != 200:
            try:
                answer.error = str(json.loads(body).get("error", ""))
            except (ValueError, AttributeError):
                answer.error = body[:80].decode(errors="replace")
    except (OSError, http.client.HTTPException):
        answer = Answer(0, 0.0)
    finally:
        connection.close()
    answer.ms = (time.perf_counter() - started) * 1000
    return answer


@dataclass
class Typed:
    finals: list[Answer]  # the answer to each person's last keystroke
    others: list[Answer]  # to the keystrokes before
    oeis_searches: int

    @property
    def every(self) -> list[Answer]:
        return self.finals + self.others


def typing(base: str, oeis: str, texts: list[str], subnet: str, fake: Callable[..., dict]) -> Typed:
    """Person i types texts[i] from address `subnet`.(i+1), one request per keystroke
    every KEY_INTERVAL s (not waiting for answers, as the front end does); the people
    start within one keystroke of each other."""

    def oeis_searches() -> int:
        return sum(1 for r in fake(oeis, "/_fake/stats")["requests"] if r["path"] == "/search")

    before = oeis_searches()
    rng = random.Random(f"typing {subnet}")
    start = time.monotonic() + 0.5
    keystrokes = sorted(
        (start + rng.uniform(0, KEY_INTERVAL) * (i > 0) + k * KEY_INTERVAL, i, k)
        for i, text in enumerate(texts)
        for k in range(len(text))
    )
    futures = {}
    with ThreadPoolExecutor(len(keystrokes)) as pool:
        for at, i, k in keystrokes:
            time.sleep(max(0.0, at - time.monotonic()))
            path = search_path(texts[i][: k + 1])
            futures[i, k] = pool.submit(get_from, base, path, f"{subnet}.{i + 1}", 30)
    answers = {key: future.result() for key, future in futures.items()}
    time.sleep(3)  # searches still on their way to the OEIS
    finals = [(i, len(text) - 1) for i, text in enumerate(texts)]
    return Typed(
        finals=[answers[key] for key in finals],
        others=[answer for key, answer in answers.items() if key not in finals],
        oeis_searches=oeis_searches() - before,
    )


def typing_rows(label: str, typed: Typed) -> list[Row]:
    n = len(typed.finals)
    statuses = Counter(answer.status for answer in typed.every)
    in_time = sum(1 for a in typed.finals if a.status == 200 and a.ms <= FINAL_WITHIN * 1000)
    answered = [a.ms for a in typed.finals if a.status == 200]
    every = [a.ms for a in typed.every]
    spread = ""
    if answered and max(answered) < 1000:
        spread = f", in {min(answered):.0f}-{max(answered):.0f} ms"
    elif answered:
        spread = f", in {min(answered) / 1000:.1f}-{max(answered) / 1000:.1f} s"
    rows = [
        (
            f"typing, {n} people at once, {label}",
            f"{in_time}/{n} final words 200 within {FINAL_WITHIN:.0f} s",
            f"{statuses[202]} x 202, {statuses[503]} x 503",
            f"{typed.oeis_searches} OEIS searches",
        ),
        (
            f"  ({len(answered)}/{n} final words answered 200 at all{spread}; "
            f"{len(every)} keystroke requests, p50 {ms(every, 0.5):.0f} ms, "
            f"p99 {ms(every, 0.99):.0f} ms)",
            "",
            "",
            "",
        ),
    ]
    others = ", ".join(
        f"{count} x {status or 'no answer'}"
        for status, count in sorted(statuses.items())
        if status not in (200, 202, 503)
    )
    if others:
        rows.append((f"  (other answers: {others})", "", "", ""))
    # Why 503s came: a final word's, and the keystrokes' before it.
    for who, answers in (("final words", typed.finals), ("earlier keystrokes", typed.others)):
        reasons = Counter(a.error for a in answers if a.status == 503)
        for error, count in reasons.most_common():
            times = [a.ms for a in answers if a.status == 503 and a.error == error]
            rows.append(
                (
                    f"  ({count} {who if count > 1 else who[:-1]}: 503 {error!r} after p50"
                    f" {ms(times, 0.5):,.0f} ms,"
                    f" max {max(times):,.0f} ms)",
                    "",
                    "",
                    "",
                )
            )
    return rows


def run_tag() -> str:
    """Letters that make this run's searches new to the search cache (TTL 7 days)."""
    n, letters = time.time_ns() // 10**6, ""
    for _ in range(5):
        n, digit = divmod(n, 26)
        letters += chr(ord("a") + digit)
    return letters


# ------------------------------------------------------------------ the group


@dataclass
class Options:
    base: str
    oeis: str
    seconds: int
    connections: int
    typists: int
    entries: int
    oeisdata: bool
    fake: Callable[..., dict]


def rows(options: Options) -> list[Row]:
    folder_name = os.environ.get("DEMO_OEIS_BULK_DIR")
    if not folder_name:
        raise SystemExit(
            "the search rows need DEMO_OEIS_BULK_DIR, the folder the bench stack's fake "
            "OEIS serves with --bulk-dir (make bench-stack and make bench set it)"
        )
    folder, entries, wanted = Path(folder_name), options.entries, options.oeisdata
    database = Database()
    table: list[Row] = []
    regenerated: list[float] = []

    def regenerate(changed: int) -> None:
        seconds, _ = generate(folder, entries, changed, wanted)
        regenerated.append(seconds)

    # The synthetic OEIS.
    base_state = (entries, 0)
    if synthetic_state(folder) == base_state and (not wanted or tree_state(folder) == base_state):
        made = "already there"
    else:
        seconds, summary = generate(folder, entries, 0, wanted)
        note(summary)
        made = f"generated in {seconds:.0f} s"
    if not served_by_fake(options.oeis, folder):
        raise SystemExit(
            f"the fake OEIS at {options.oeis} does not serve {folder}/names.gz: start it with "
            f"--bulk-dir {folder} (make bench-stack does, with DEMO_OEIS_BULK_DIR set)"
        )
    mb = {name: (folder / name).stat().st_size / 1e6 for name in ("names.gz", "stripped.gz")}
    tree = f"oeisdata/seq {entries:,} files" if wanted else "no oeisdata tree"
    table.append(
        (
            f"synthetic OEIS, {entries:,} entries ({made})",
            f"names.gz {mb['names.gz']:.1f} MB",
            f"stripped.gz {mb['stripped.gz']:.1f} MB",
            tree,
        )
    )

    # Index builds.
    vacuums: list[float] = []
    loads: list[float] = []

    def build(
        label: str, *args: str, env: dict[str, str] | None = None, counts: bool = True
    ) -> Built:
        note(f"backscope index {' '.join(args)}")
        built = backscope_index(*args, env=env)
        loads.append(load_average())
        vacuums.append(database.vacuum())
        what = built.counts() if counts else f"{built.entries:,} entries"
        table.append((label, what, f"{built.seconds:.0f} s", f"peak RSS {built.rss_mb:.0f} MB"))
        return built

    removed = backscope_index("--remove", "--yes")
    database.vacuum(full=True)
    note(f"removed the index in {removed.seconds:.0f} s")
    build("index build, bulk --full, empty index", "--source", "bulk", "--full", counts=False)
    table += size_rows("  index size on disk, fresh build", database)
    regenerate(CHANGED)
    build(f"index update, bulk, {CHANGED:,} entries changed", "--source", "bulk")
    regenerate(0)
    build("index update, bulk, back to the base", "--source", "bulk")
    if wanted:
        tree_env = {"BACKSCOPE_OEISDATA_DIR": str(folder / "oeisdata")}
        build(
            "index build, oeisdata, every entry rewritten",
            "--source",
            "oeisdata",
            env=tree_env,
            counts=False,
        )
        regenerate(CHANGED)
        build(f"index update, oeisdata, {CHANGED:,} changed", "--source", "oeisdata", env=tree_env)
        regenerate(0)
        build("index update, oeisdata, back to the base", "--source", "oeisdata", env=tree_env)
    build("index rebuild, bulk --full over the index", "--source", "bulk", "--full", counts=False)
    table += size_rows("  index size on disk, after the rewrites", database)
    table.append(
        (
            f"  (after each build VACUUM (ANALYZE) search_entries, {min(vacuums):.0f}-"
            f"{max(vacuums):.0f} s, not counted: autovacuum is {database.autovacuum()} here; "
            f"data regenerated {len(regenerated)} times, {min(regenerated):.0f}-"
            f"{max(regenerated):.0f} s each; index --remove {removed.seconds:.0f} s; load average"
            f" {min(loads):.1f}-{max(loads):.1f} at the end of the builds)",
            "",
            "",
            "",
        )
    )

    # Searching: every API process dropped its answers when the last build committed.
    mix = term_mix(folder, entries)
    note(f"cold pass over {len(mix)} terms")
    loads = [load_average()]
    table += cold_rows(cold_pass(options.base, mix))
    load = wrk_load if shutil.which("wrk") else python_load
    paths = [search_path(term) for _, term in mix]
    note("warm-up, cached small read, search under load")
    load(options.base, paths, options.connections, WARM_UP)
    loads.append(load_average())
    small = load(options.base, [SMALL], options.connections, options.seconds)
    found = load(options.base, paths, options.connections, options.seconds)
    loads.append(load_average())
    tool = "wrk" if load is wrk_load else "python load"
    table.append(
        (
            "cached small read (the baseline)",
            f"{small.rate:,.0f} req/s",
            f"p50 {small.p50:.1f} ms",
            f"p99 {small.p99:.1f} ms",
        )
    )
    table.append(
        (
            f"search, the {len(paths):,} terms in turn ({tool})",
            f"{found.rate:,.0f} req/s",
            f"p50 {found.p50:.1f} ms",
            f"p99 {found.p99:.1f} ms",
        )
    )
    table.append(
        (
            f"  ({found.rate / small.rate:.2f}x the cached small read; {found.bad} errors or "
            f"non-2xx; after a {WARM_UP} s warm-up; load average {loads[0]:.1f} before the cold"
            f" pass, {loads[1]:.1f} before the loads, {loads[2]:.1f} after)",
            "",
            "",
            "",
        )
    )

    # Typing, with the index and without.
    people = options.typists
    fake = options.fake
    fake(options.oeis, "/_fake/config", {"latency": OEIS_LATENCY})
    try:
        texts = [TYPED[i % len(TYPED)] for i in range(people)]
        note(f"{people} people typing, with the index")
        typed = typing(options.base, options.oeis, texts, "127.0.4", fake)
        table += typing_rows(f"with index (load average {load_average():.1f})", typed)
        note("removing the index; typing without it")
        backscope_index("--remove", "--yes")
        tag = run_tag()
        texts = [f"{TYPED[i % len(TYPED)]} {tag}" for i in range(people)]
        typed = typing(options.base, options.oeis, texts, "127.0.5", fake)
        table += typing_rows(f"without index (load average {load_average():.1f})", typed)
    finally:
        fake(options.oeis, "/_fake/config", {"latency": 0.0})
        note("building the index again")
        database.vacuum(full=True)
        rebuilt = backscope_index()
        database.vacuum()
    table.append(
        (
            "  index built again after that (empty index)",
            f"{rebuilt.entries:,} entries",
            f"{rebuilt.seconds:.0f} s",
            f"peak RSS {rebuilt.rss_mb:.0f} MB",
        )
    )
    return table

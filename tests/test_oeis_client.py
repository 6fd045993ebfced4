"""The OEIS client against the fake OEIS: timeouts, size caps, content types, backoff,
the global rate limit and the local oeisdata source."""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from celery.result import AsyncResult

from shared.admin.cache import release_target
from shared.errors import NotFound, UpstreamBadData, UpstreamUnavailable
from shared.oeis.client import OEISClient, retry_after_seconds
from shared.oeis.local import LocalOEIS
from shared.oeis.ratelimit import RateLimiter
from shared.redis_db import get_redis
from shared.work import queue
from shared.work.queue import BACKGROUND
from shared.work.queue import app as celery
from shared.work.units import values_work
from tests.helpers import json_events, wait_until
from worker.tasks.locked import retry_countdown

FIXTURES = Path(__file__).parent / "fixtures" / "oeis" / "entries"


@pytest.fixture
def oeis(settings) -> OEISClient:
    quick = dataclasses.replace(settings, oeis_read_timeout=0.5, oeis_max_bytes=2**20)
    return OEISClient(quick)


def test_hanging_response_ends_by_timeout(oeis, fake_oeis) -> None:
    fake_oeis.hang = True  # for 120 s unless cleared
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match="in time"):
        oeis.bfile("A000045")
    # The client gave up after its read timeout, while the OEIS had still not answered.
    assert time.monotonic() - started >= 0.5
    assert [r.status for r in fake_oeis.requests] == [0]


def test_response_that_stalls_mid_body_ends_by_timeout(oeis, fake_oeis) -> None:
    fake_oeis.hang_after_bytes = 1000
    with pytest.raises(UpstreamUnavailable):
        oeis.bfile("A000040")


def test_oversized_response_is_cut_off_at_the_cap(oeis, fake_oeis) -> None:
    fake_oeis.oversize.add("A000027")
    with pytest.raises(UpstreamBadData, match="exceeds 1048576 bytes"):
        oeis.bfile("A000027")


def test_html_where_json_or_text_expected_is_bad_data(oeis) -> None:
    with pytest.raises(UpstreamBadData, match="text/html"):
        list(oeis._lines("search", "/search", {"q": "prime"}, "application/json"))


def test_unknown_sequence(oeis) -> None:
    with pytest.raises(NotFound):
        oeis.bfile("A000000")
    with pytest.raises(NotFound):
        oeis.entry("A000000")


@pytest.mark.parametrize(
    "header, seconds",
    [
        (None, None),
        ("", None),
        ("7", 7),
        ("99999", 3600),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0),
    ],
)
def test_retry_after_parsing(header, seconds) -> None:
    assert retry_after_seconds(header) == seconds


def test_backoff_grows_and_honours_retry_after() -> None:
    for _ in range(100):
        waits = [retry_countdown(n, None, 1.0) for n in range(5)]
        assert waits == sorted(waits)
        assert all(2**n / 2 <= w <= 2**n for n, w in enumerate(waits))
    assert retry_countdown(0, 30, 1.0) == 30
    # The OEIS may ask for up to an hour; never retry sooner than it asked.
    assert retry_countdown(0, 3600, 1.0) == 3600


def spaced(times: list[float], start: float, rate: float) -> bool:
    """Whether the k-th of `times` (k = 0, 1, ...) came no sooner than k slots after
    `start`: RateLimiter hands out slots 1.1/rate seconds apart, the first no sooner
    than it is asked for, and nothing goes out before its slot. Only a lower bound,
    which a slow machine cannot break."""
    interval = 1.1 / rate
    return all(t >= start + k * interval - 0.01 for k, t in enumerate(sorted(times)))


@pytest.mark.redis
def test_rate_limiter_spaces_requests_across_threads() -> None:
    limiter = RateLimiter(get_redis("ratelimit"), rate=5)
    times: list[float] = []

    def work() -> None:
        for _ in range(4):
            limiter.wait()
            times.append(time.time())

    threads = [threading.Thread(target=work) for _ in range(3)]
    start = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(times) == 12
    assert spaced(times, start, rate=5), [round(t - start, 3) for t in sorted(times)]


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + 1) for start in times)


def test_two_workers_share_one_rate(app, fake_oeis, workers) -> None:
    env = {"BACKSCOPE_OEIS_RATE": "5"}
    workers("rate-a", env=env, concurrency=2)
    workers("rate-b", env=env, concurrency=2)
    ids = [f"A9100{n:02d}" for n in range(30)]
    start = time.time()
    with app.app_context():
        # Work these tests wait for themselves is queued at BACKGROUND: no request marks it as
        # waited for, and interactive work nobody waits for is re-queued (shared/work/waiting.py).
        tasks = [queue.start(values_work(seq_id), BACKGROUND) for seq_id in ids]
    for task in tasks:
        assert AsyncResult(task, app=celery).get(timeout=120)["outcome"] == "stored"
    times = [r.time for r in fake_oeis.requests if r.path.endswith(".txt")]
    assert len(times) == 30
    print(
        f"\n30 downloads over {max(times) - min(times):.1f} s, "
        f"busiest second: {busiest_second(times)} requests"
    )
    # Four processes at 5 requests a second each would need 1.5 s; sharing one rate, the
    # 30 requests are spread over at least 29 slots of 0.22 s.
    assert spaced(times, start, rate=5), [round(t - start, 3) for t in sorted(times)]


def test_throttled_three_times_then_healthy(app, fake_oeis, workers) -> None:
    backoff = workers(
        "backoff",
        env={"BACKSCOPE_OEIS_BACKOFF": "0.5", "BACKSCOPE_OEIS_MAX_ATTEMPTS": "5"},
        concurrency=1,
    )
    fake_oeis.throttle = 3
    fake_oeis.retry_after = 0
    task = queue.start(values_work("A000027"), BACKGROUND)
    assert AsyncResult(task, app=celery).get(timeout=60)["outcome"] == "stored"
    requests = [r for r in fake_oeis.requests if r.path == "/A000027/b000027.txt"]
    assert [r.status for r in requests] == [503, 503, 503, 200]
    gaps = [b.time - a.time for a, b in itertools.pairwise(requests)]
    print(f"\nbackoff gaps: {', '.join(f'{gap:.2f} s' for gap in gaps)}")
    # Each wait the worker chose lies in [base * 2^n / 2, base * 2^n] (base 0.5 here), so
    # they grow; and no retry went out before its wait was over.
    waits = [record["countdown"] for record in json_events(backoff.output(), "task.retry")]
    assert len(waits) == 3, backoff.output()
    for n, wait in enumerate(waits):
        assert 0.5 * 2**n / 2 <= wait <= 0.5 * 2**n, waits
    assert waits[2] > waits[0], waits
    assert all(gap >= wait - 0.01 for gap, wait in zip(gaps, waits, strict=True)), (gaps, waits)


def test_throttled_after_losing_the_lock_retries_cleanly(client, fake_oeis) -> None:
    """A task whose lock was released under it (a clear, a purge, an expiry) and then
    meets a 503 retries, and in the end gives up with the OEIS's error, not a lock error."""
    fake_oeis.throttle_always = True
    fake_oeis.latency = 1.0
    task_id = queue.start(values_work("A000027"), BACKGROUND)
    wait_until(lambda: fake_oeis.count("/A000027") == 1, 60, "the first attempt's request")
    assert release_target(get_redis("locks"), "A000027")  # lost while the request runs
    result = AsyncResult(task_id, app=celery)
    wait_until(lambda: result.state in ("SUCCESS", "FAILURE"), 60, "the task to end")
    assert result.state == "FAILURE"
    assert isinstance(result.result, UpstreamUnavailable), repr(result.result)
    assert fake_oeis.count("/A000027") == 3  # every attempt ran (BACKSCOPE_OEIS_MAX_ATTEMPTS)


# ------------------------------------------------------------- local oeisdata source

SEQ_LINES = {
    "data": "S",
    "name": "N",
    "comment": "C",
    "link": "H",
    "formula": "F",
    "example": "e",
    "maple": "p",
    "mathematica": "t",
    "program": "o",
    "xref": "Y",
    "keyword": "K",
    "offset": "O",
    "author": "A",
}


def identification(entry: dict) -> str:
    """The %I line's text: old ids, then the revision and its time in US Eastern (as
    standard time, UTC-5: how shared/oeis/local.py reads it)."""
    when = datetime.fromisoformat(entry["time"]).astimezone(timezone(timedelta(hours=-5)))
    old_ids = f"{entry['id']} " if entry.get("id") else ""
    return f"{old_ids}#{entry['revision']} {when:%b %d %Y %H:%M:%S}"


def write_oeisdata(root: Path) -> None:
    """An oeisdata-shaped tree (seq/Axxx/Axxxxxx.seq) made from the fixture entries."""
    for path in FIXTURES.glob("A*.json"):
        entry = json.loads(path.read_text())
        seq_id = f"A{entry['number']:06d}"
        lines = [f"%I {seq_id} {identification(entry)}"]
        for field, letter in SEQ_LINES.items():
            values = entry.get(field)
            for value in values if isinstance(values, list) else [values] if values else []:
                lines.append(f"%{letter} {seq_id} {value}")
        target = root / "seq" / seq_id[:4] / f"{seq_id}.seq"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def oeisdata(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("oeisdata")
    write_oeisdata(root)
    return root


@pytest.mark.parametrize("use_rg", [True, False], ids=["ripgrep", "python"])
def test_local_oeisdata_matches_the_web(oeis, fake_oeis, oeisdata, use_rg) -> None:
    local = LocalOEIS(oeisdata, use_rg=use_rg)
    if use_rg and local.rg is None:
        pytest.skip("ripgrep (rg) is not installed")
    for seq_id in ("A000045", "A000040", "A078302", "A153080"):
        assert local.entry(seq_id) == oeis.entry(seq_id)
        assert local.entry(seq_id).revision is not None
        assert local.entry(seq_id).modified is not None
        assert local.mentions(seq_id) == oeis.mentions(seq_id, max_pages=10)
    assert local.mentions("A000045")[0]  # not trivially empty
    with pytest.raises(NotFound):
        local.entry("A000000")
    fake_oeis.reset()
    local.entry("A000045")
    local.mentions("A000045")
    assert fake_oeis.count() == 0  # no web requests at all


def test_local_oeisdata_faults_are_clear_errors(oeisdata, tmp_path) -> None:
    broken = tmp_path / "oeisdata"
    shutil.copytree(oeisdata, broken)
    (broken / "seq" / "A000" / "A000040.seq").unlink()
    (broken / "seq" / "A000" / "A000040.seq").mkdir()  # a directory where a file should be
    with pytest.raises(UpstreamBadData, match="cannot read local entry A000040"):
        LocalOEIS(broken).entry("A000040")
    # The Python scan passes over what it cannot read and finds the rest.
    assert "A000032" in LocalOEIS(broken, use_rg=False).mentions("A000045")[0]
    missing_rg = LocalOEIS(broken, rg=str(tmp_path / "no-such-rg"))
    with pytest.raises(UpstreamBadData, match="ripgrep failed"):
        missing_rg.mentions("A000045")

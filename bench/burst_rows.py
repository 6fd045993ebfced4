"""`make bench` overload row: one client's burst of simultaneous cold requests.

64 requests from one address, each for a different sequence nobody has asked for,
all sent at once while the OEIS hangs (so no download finishes and frees a unit of
the client's budget): how many started work (answered 202 or 200, the others 429),
against BACKSCOPE_CLIENT_WORK_LIMIT (issue #25: reserving and counting are one step).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import requests

BURST = 64


Get = Callable[[str, str, str, float], tuple[int, float]]


def burst(base: str, oeis: str, get: Get, source: str = "127.0.4.1") -> tuple[int, int, int]:
    """(requests that started work, 429s, others) for BURST simultaneous requests;
    `get(base, path, source, timeout)` is bench.py's get_from."""
    first = random.randrange(800000, 898000 - BURST)
    statuses: list[int] = []
    lock = threading.Lock()
    go = threading.Event()

    def ask(n: int) -> None:
        go.wait()
        status, _ = get(base, f"/api/get_oeis_values/A{first + n}/5", source, 60)
        with lock:
            statuses.append(status)

    requests.post(f"{oeis}/_fake/config", json={"hang": True}, timeout=10)
    try:
        threads = [threading.Thread(target=ask, args=(n,)) for n in range(BURST)]
        for thread in threads:
            thread.start()
        go.set()
        for thread in threads:
            thread.join(90)
    finally:
        requests.post(f"{oeis}/_fake/config", json={"hang": False}, timeout=10)
    started = sum(status in (200, 202) for status in statuses)
    over = statuses.count(429)
    return started, over, len(statuses) - started - over


def burst_row(base: str, oeis: str, limit: int, get: Get) -> tuple[str, str, str, str]:
    started, over, other = burst(base, oeis, get)
    return (
        f"{BURST} simultaneous cold requests, one client",
        f"{started} started (limit {limit})",
        f"{over} x 429",
        f"{other} other",
    )

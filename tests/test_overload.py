"""No client can take the service away from the others (issue #11).

The first tests drive the Flask app in this process; the last ones run the real stack
(gunicorn, a Celery worker, the fake OEIS) and act as many clients, each from its own
loopback address (127.0.1.N, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_network

import pytest
from sqlalchemy import text

import api.caches
import api.clients
import api.jobs
import api.routes
from api.clients import client_address
from shared.admin.queue import drop_queued_work, enqueue, queue_lengths
from shared.db import session_scope
from shared.store.reads import search_key
from shared.work.queue import start
from shared.work.units import DOWNLOADS_QUEUE, values_work
from tests.conftest import ROOT
from tests.helpers import wait_until

CLIENT_A = {"REMOTE_ADDR": "127.0.1.1"}
CLIENT_B = {"REMOTE_ADDR": "127.0.1.2"}


@pytest.fixture
def tuned(monkeypatch: pytest.MonkeyPatch, settings):
    """Settings for the API in this process; the wait slots are made afresh."""

    def configure(**changes) -> None:
        tuned_settings = dataclasses.replace(settings, **changes)
        routes = (api.routes.sequences, api.routes.factors, api.routes.search, api.routes.status)
        for module in (api.jobs, api.clients, api.caches, *routes):
            monkeypatch.setattr(module, "get_settings", lambda: tuned_settings)
        api.jobs.wait_slots.cache_clear()

    yield configure
    api.jobs.wait_slots.cache_clear()


def test_a_client_over_its_budget_gets_429_others_and_joins_do_not(
    client, fake_oeis, tuned
) -> None:
    tuned(client_work_limit=3, sync_wait=0.2)
    fake_oeis.hang = True  # downloads stay in flight
    for seq_id in ("A000027", "A000040", "A000045"):
        answer = client.get(f"/api/get_oeis_values/{seq_id}/3", environ_base=CLIENT_A)
        assert answer.status_code == 202, answer.get_json()
    over = client.get("/api/get_oeis_values/A000142/3", environ_base=CLIENT_A)
    assert over.status_code == 429
    assert "in progress" in over.get_json()["error"]
    assert int(over.headers["Retry-After"]) > 0
    # Joining work already in flight costs nothing, even over the budget.
    joined = client.get("/api/get_oeis_values/A000027/5", environ_base=CLIENT_A)
    assert joined.status_code == 202
    # Another client is not held to the first one's budget.
    assert client.get("/api/get_oeis_values/A000142/3", environ_base=CLIENT_B).status_code == 202
    fake_oeis.hang = False
    # Once its work is done, the client may start more.
    wait_until(
        lambda: (
            client.get("/api/get_oeis_values/A000142/3", environ_base=CLIENT_A).status_code == 200
        ),
        60,
        "client A's budget to free up",
    )


def test_a_request_that_finds_no_wait_slot_is_answered_at_once(client, fake_oeis, tuned) -> None:
    tuned(wait_slots=1, sync_wait=60)
    fake_oeis.hang = True
    first: dict[str, int] = {}
    waiter = threading.Thread(
        target=lambda: first.update(status=client.get("/api/get_oeis_values/A000027/3").status_code)
    )
    waiter.start()
    wait_until(lambda: fake_oeis.bfile_downloads("A000027") == 1, 20, "the first download")
    second = client.get("/api/get_oeis_values/A000040/3")
    assert second.status_code == 202  # while the first request still holds the only slot
    assert waiter.is_alive()
    assert second.headers["Location"] == f"/api/tasks/{second.get_json()['task']}"
    fake_oeis.hang = False
    waiter.join(60)
    assert first == {"status": 200}


def test_forwarded_for_is_believed_only_from_trusted_proxies(app, tuned) -> None:
    tuned(trusted_proxies=(ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8")))

    def address(peer: str, forwarded: str | None = None) -> str:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        with app.test_request_context(environ_base={"REMOTE_ADDR": peer}, headers=headers):
            return client_address()

    assert address("127.0.0.5", "1.2.3.4") == "127.0.0.5"  # not a proxy of ours
    assert address("127.0.0.1") == "127.0.0.1"
    assert address("127.0.0.1", "1.2.3.4") == "1.2.3.4"
    assert address("127.0.0.1", "6.6.6.6, 1.2.3.4, 10.1.1.1") == "1.2.3.4"
    assert address("127.0.0.1", "not an address") == "127.0.0.1"


def test_search_terms_are_normalised_and_expire(client, fake_oeis, monkeypatch) -> None:
    first = client.get("/api/search_oeis/Fibonacci%20%20Numbers")
    assert first.status_code == 200
    assert first.get_json()["term"] == "Fibonacci  Numbers"  # as given
    assert first.get_json()["results"][0][0] == "A000045"
    again = client.get("/api/search_oeis/%20fibonacci%20numbers")
    assert again.get_json()["results"] == first.get_json()["results"]
    assert fake_oeis.count("/search") == 1
    assert search_key(" Fibonacci\t NUMBERS ") == "fibonacci numbers"
    # A week and a day later (BACKSCOPE_SEARCH_TTL: a week), for the database and the API.
    with session_scope() as session:
        session.execute(text("UPDATE searches SET fetched_at = now() - interval '8 days'"))
    later = time.time() + 8 * 86400
    monkeypatch.setattr(api.routes.search, "time", lambda: later)
    assert client.get("/api/search_oeis/fibonacci%20numbers").status_code == 200
    assert fake_oeis.count("/search") == 2


def test_bulk_work_waits_for_interactive_work(fake_oeis, workers) -> None:
    bulk = [f"A{910100 + n}" for n in range(5)]
    for seq_id in bulk:
        enqueue(values_work(seq_id))  # as `backscope prefetch` does
    start(values_work("A000027"))  # as a request does, after the prefetch
    workers("lane", concurrency=1)
    wait_until(
        lambda: all(fake_oeis.bfile_downloads(s) for s in [*bulk, "A000027"]), 60, "downloads"
    )
    bfiles = [r.path for r in fake_oeis.requests if r.path.endswith(".txt")]
    assert bfiles[0] == "/A000027/b000027.txt", bfiles


# ------------------------------------------------------------- the real stack


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass
class Server:
    port: int

    def get(self, path: str, source: str, timeout: float) -> tuple[int, dict]:
        """GET `path` from the address `source`; (status, JSON body)."""
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=timeout, source_address=(source, 0)
        )
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            connection.close()


@pytest.fixture
def serve(database: str, tmp_path) -> Iterator:
    """Start gunicorn as `make run` starts it (2 processes), on a free port, with `env`
    on top of this process's environment."""
    started: list[subprocess.Popen] = []
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115 (closed below)

    def start(**env: str) -> Server:
        port = _free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "python:api.gunicorn_conf",
                "api:create_app()",
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "BACKSCOPE_BIND": f"127.0.0.1:{port}",
                "BACKSCOPE_API_WORKERS": "2",
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        running = Server(port)

        def answers() -> bool:
            try:
                return running.get("/api/get_commit", "127.0.0.1", 2)[0] == 200
            except OSError:
                return False

        wait_until(answers, 60, "gunicorn to answer")
        return running

    try:
        yield start
    finally:
        for process in started:
            process.terminate()
            process.wait(30)
        log.close()


@pytest.mark.slow
def test_cached_reads_are_answered_while_forty_cold_requests_hang(
    serve, fake_oeis, workers
) -> None:
    server = serve(BACKSCOPE_SYNC_WAIT="8")
    workers("cold", concurrency=2)
    assert server.get("/api/get_oeis_name_and_values/A000045", "127.0.2.1", 30)[0] == 200
    fake_oeis.hang = True  # every download hangs (until the read timeout, then retries)
    cold: list[int | str] = []
    reads: list[int | str] = []
    # Reads answered while at least half the cold requests were still unanswered (a
    # few cold ones may be answered at once: 202 when their process has no wait slot).
    reads_during: list[int] = []

    def cold_client(n: int) -> None:
        try:  # the API waits BACKSCOPE_SYNC_WAIT (8 s here), then answers 202
            status, _ = server.get(
                f"/api/get_oeis_name_and_values/A{910200 + n}", f"127.0.1.{n}", 40
            )
            cold.append(status)
        except OSError as exc:
            cold.append(type(exc).__name__)

    def reader(n: int) -> None:
        while any(thread.is_alive() for thread in cold_threads):
            try:
                reads.append(server.get("/api/get_oeis_values/A000045/10", f"127.0.2.{n}", 5)[0])
            except OSError as exc:
                reads.append(type(exc).__name__)
            if reads[-1] == 200 and len(cold) < 20:
                reads_during.append(n)
            time.sleep(0.05)  # a person's pace is enough, and leaves the CPU to the rest

    cold_threads = [threading.Thread(target=cold_client, args=(n,)) for n in range(1, 41)]
    threads = [*cold_threads, *(threading.Thread(target=reader, args=(n,)) for n in range(1, 5))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fake_oeis.hang = False
    drop_queued_work()  # the retries of the hung downloads are nobody's business now
    assert reads and set(reads) == {200}, Counter(reads)
    assert reads_during, Counter(reads)
    # Every cold client got an answer, none hung until its own timeout: 202 after the
    # wait, or 503 when its download gave up on the hanging OEIS within the wait.
    assert len(cold) == 40 and set(cold) <= {200, 202, 503}, Counter(cold)


@pytest.mark.slow
def test_a_flood_of_abandoned_cold_requests_does_not_starve_another_client(
    serve, fake_oeis, workers
) -> None:
    server = serve()
    # The OEIS's real rate: the flood's work drains slowly, as it would in production.
    workers("flood", concurrency=2, env={"BACKSCOPE_OEIS_RATE": "2"})
    answered: Counter[int] = Counter()

    def flood(n: int) -> None:
        with contextlib.suppress(OSError):  # a crawler that gives up after half a second
            answered[server.get(f"/api/get_oeis_values/A{800000 + n}/5", "127.0.3.1", 0.5)[0]] += 1

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(flood, range(1500)))
    assert answered[429] > 0, answered
    # Another client's fresh sequence is served at once, not after the flood's work.
    status, body = server.get("/api/get_oeis_name_and_values/A910300", "127.0.3.2", 30)
    assert status == 200, body
    assert len(body["values"]) == 1000

    def flood_drained() -> bool:
        return queue_lengths()[DOWNLOADS_QUEUE] == 0

    wait_until(flood_drained, 60, "the flood's work to drain")

"""GET /metrics: every series after each kind of request and task, counts from several
processes adding up, who may read it; the request id from the API into the tasks; the
cached health answer."""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import api.clients
import api.observe
import api.responses
import api.routes.sequences
from api.documents import DocumentCache
from tests.conftest import ROOT, WorkerProcess
from tests.helpers import wait_until
from tests.test_overload import _free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.content_type.startswith("text/plain")
    return parse(response.text)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


REQUESTS = "backscope_http_requests_total"
VALUES = "api.get_oeis_values"


def test_metrics_count_every_kind_of_request_and_task(client, fake_oeis) -> None:
    before = scrape(client)

    cold = client.get("/api/get_oeis_values/A000045/10")
    assert cold.status_code == 200
    # The name follows in the background and changes the answer's ETag: the API must
    # have it before the next two requests (asked of another endpoint: not counted here).
    wait_until(
        lambda: "[name not yet loaded]" not in client.get("/api/get_oeis_header/A000045").text,
        30,
        "the API to have the name",
    )
    cached = client.get("/api/get_oeis_values/A000045/10")
    assert cached.status_code == 200
    assert (
        client.get(
            "/api/get_oeis_values/A000045/10", headers={"If-None-Match": cached.headers["ETag"]}
        ).status_code
        == 304
    )
    assert client.get("/api/get_oeis_values/A45/10").status_code == 400
    assert client.get("/api/get_oeis_values/A000000/5").status_code == 404
    assert client.get("/no/such/route/A000045").status_code == 404
    fake_oeis.throttle_always = True
    assert client.get("/api/get_oeis_values/A000142/5").status_code == 503
    fake_oeis.throttle_always = False

    def tasks_counted() -> bool:
        now = scrape(client)
        return (
            delta(
                before,
                now,
                "backscope_tasks_total",
                task="backscope.fetch_values",
                outcome="success",
            )
            >= 1
            and delta(
                before,
                now,
                "backscope_tasks_total",
                task="backscope.fetch_values",
                outcome="failure",
            )
            >= 1
        )

    wait_until(tasks_counted, 20, "the worker's task counts")
    after = scrape(client)

    for status, count in (("200", 2), ("304", 1), ("400", 1), ("404", 1), ("503", 1)):
        assert delta(before, after, REQUESTS, endpoint=VALUES, status=status) == count, status
    assert delta(before, after, REQUESTS, endpoint="unknown", status="404") == 1
    assert not any(labels and ("endpoint", "metrics") in labels for _, labels in after)
    assert (
        delta(before, after, "backscope_http_request_duration_seconds_count", endpoint=VALUES) == 6
    )
    cache = "backscope_cache_answers_total"
    assert delta(before, after, cache, endpoint=VALUES, answer="cached") == 1
    assert delta(before, after, cache, endpoint=VALUES, answer="work") == 1
    assert delta(before, after, cache, endpoint=VALUES, answer="not_modified") == 1

    oeis = "backscope_oeis_requests_total"
    assert delta(before, after, oeis, kind="values", outcome="ok") >= 1
    assert delta(before, after, oeis, kind="values", outcome="not_found") == 1
    assert delta(before, after, oeis, kind="values", outcome="throttled") >= 1
    assert delta(before, after, "backscope_oeis_request_duration_seconds_count", kind="values") >= 3
    assert (
        delta(before, after, "backscope_task_duration_seconds_count", task="backscope.fetch_values")
        >= 2
    )

    for queue in ("downloads", "factors", "maintenance"):
        assert ("backscope_queue_length", frozenset({("queue", queue)})) in after
    # Every download schedules its factoring; no test worker here takes the factors queue.
    assert value(after, "backscope_queue_length", queue="factors") >= 1
    assert value(after, "backscope_locks_held") >= 0
    assert ("backscope_locks_held", frozenset()) in after
    assert value(after, "backscope_cached_sequences") == 1  # A000045


def test_documents_built_are_counted_once_per_version(client, monkeypatch) -> None:
    assert client.get("/api/get_oeis_name_and_values/A000045").status_code == 200
    cache = DocumentCache(max_bytes=64 * 2**20, large_bytes=128 * 2**20)  # held: nothing
    monkeypatch.setattr(api.routes.sequences, "documents", cache)
    monkeypatch.setattr(api.responses, "documents", cache)
    before = scrape(client)
    for count in (19, 19, 20, 0):  # slices are cut out of the one document read
        assert client.get(f"/api/get_oeis_values/A000045/{count}").status_code == 200
    built = "backscope_documents_built_total"
    assert delta(before, scrape(client), built, kind="values") == 1


def test_metadata_and_search_are_counted_by_kind(client) -> None:
    before = scrape(client)
    assert client.get("/api/get_oeis_metadata/A000045").status_code == 200
    assert client.get("/api/search_oeis/fibonacci").status_code == 200
    after = scrape(client)
    oeis = "backscope_oeis_requests_total"
    assert delta(before, after, oeis, kind="metadata", outcome="ok") >= 1
    assert delta(before, after, oeis, kind="search", outcome="ok") == 1


@pytest.fixture
def metrics_setting(monkeypatch: pytest.MonkeyPatch, settings):
    """BACKSCOPE_METRICS (and trusted proxies) for the API in this process."""

    def configure(**changes) -> None:
        tuned = dataclasses.replace(settings, **changes)
        monkeypatch.setattr(api.observe, "get_settings", lambda: tuned)
        monkeypatch.setattr(api.clients, "get_settings", lambda: tuned)

    return configure


def test_access_setting_is_honoured(client, metrics_setting) -> None:
    from ipaddress import ip_network

    far = {"REMOTE_ADDR": "192.0.2.7"}
    metrics_setting(metrics="local")
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", environ_base=far).status_code == 403
    # Through a trusted proxy on this machine, the client is the one it names.
    metrics_setting(metrics="local", trusted_proxies=(ip_network("127.0.0.1"),))
    assert client.get("/metrics", headers={"X-Forwarded-For": "192.0.2.7"}).status_code == 403
    assert client.get("/metrics").status_code == 200
    # On a unix socket (nginx in front) the peer has no address: the client is the one
    # X-Forwarded-For names; a process on this machine that names none is local.
    socket_peer = {"REMOTE_ADDR": ""}
    metrics_setting(metrics="local")
    assert client.get("/metrics", environ_base=socket_peer).status_code == 200
    public = {"X-Forwarded-For": "192.0.2.7"}
    assert client.get("/metrics", environ_base=socket_peer, headers=public).status_code == 403
    metrics_setting(metrics="on")
    assert client.get("/metrics", environ_base=far).status_code == 200
    metrics_setting(metrics="off")
    assert client.get("/metrics").status_code == 404


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def gunicorn(database: str, worker: WorkerProcess, tmp_path: Path) -> Iterator[tuple[int, int]]:
    """gunicorn with 2 processes on a free port, counting into this test run's metrics
    directory; (port, master pid)."""
    port = _free_port()
    with open(tmp_path / "gunicorn.log", "w") as log:
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
            env={**os.environ, "BACKSCOPE_BIND": f"127.0.0.1:{port}", "BACKSCOPE_API_WORKERS": "2"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def answers() -> bool:
            try:
                return _get(port, "/api/get_commit")[0] == 200
            except OSError:
                return False

        try:
            wait_until(answers, 60, "gunicorn to answer")
            wait_until(lambda: len(_children(process.pid)) == 2, 30, "two gunicorn workers")
            yield port, process.pid
        finally:
            process.terminate()
            process.wait(30)


@pytest.mark.slow
def test_counts_of_api_processes_and_workers_add_up(client, gunicorn, fake_oeis) -> None:
    port, master = gunicorn

    def scraped() -> Samples:
        status, text = _get(port, "/metrics")
        assert status == 200
        return parse(text)

    commit = "api.get_commit"
    before = scraped()
    for _ in range(30):
        assert _get(port, "/api/get_commit")[0] == 200
    for _ in range(7):
        assert client.get("/api/get_commit").status_code == 200  # this process
    assert _get(port, "/api/get_oeis_values/A000027/5")[0] == 200  # a task in the worker
    wait_until(
        lambda: (
            delta(
                before,
                scraped(),
                "backscope_tasks_total",
                task="backscope.fetch_values",
                outcome="success",
            )
            >= 1
        ),
        20,
        "the worker's count",
    )
    after = scraped()
    assert delta(before, after, REQUESTS, endpoint=commit, status="200") == 37
    # Every process reads the same totals.
    assert value(scrape(client), REQUESTS, endpoint=commit, status="200") == value(
        after, REQUESTS, endpoint=commit, status="200"
    )

    # A gunicorn worker killed and replaced: its counts stay in the totals.
    os.kill(_children(master)[0], signal.SIGKILL)
    wait_until(lambda: len(_children(master)) == 2, 30, "gunicorn to replace its worker")
    assert value(scraped(), REQUESTS, endpoint=commit, status="200") >= value(
        after, REQUESTS, endpoint=commit, status="200"
    )


def test_request_id_is_returned_and_reaches_the_tasks(client, worker, fake_oeis) -> None:
    given = client.get("/api/get_oeis_values/A000040/5", headers={"X-Request-ID": "front-1.a_b"})
    assert given.status_code == 200
    assert given.headers["X-Request-ID"] == "front-1.a_b"
    for bad in ("has space", "x" * 65, "semi;colon"):
        made = client.get("/api/get_commit", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert made != bad and api.observe.REQUEST_ID.fullmatch(made)
    first = client.get("/api/get_commit").headers["X-Request-ID"]
    assert first != client.get("/api/get_commit").headers["X-Request-ID"]

    def task_lines() -> list[dict]:
        lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("request_id") == "front-1.a_b"]

    wait_until(lambda: any(line["event"] == "task.done" for line in task_lines()), 20, "logs")
    events = {line["event"] for line in task_lines()}
    assert "oeis.request" in events  # followed from the request to the OEIS call
    assert all(line.get("task_id") for line in task_lines())


def test_health_is_checked_at_most_every_few_seconds(client) -> None:
    first = client.get("/api/health")
    assert first.status_code == 200
    assert client.get("/api/health").get_json() == first.get_json()

"""Every endpoint's shape and status, through a real worker, PostgreSQL and Redis."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

import api.jobs
from api.caches import cached_reads
from shared.db import EVERYTHING, session_scope
from shared.errors import UpstreamUnavailable
from shared.models import Sequence
from shared.redis_db import get_redis
from shared.work import queue
from shared.work.lock import lock_key, read_lock
from shared.work.units import values_work
from tests.helpers import execute, get_until_200, stored_ids, wait_until

FIB = [0, 1]
while len(FIB) < 1001:
    FIB.append(FIB[-1] + FIB[-2])


def test_name_and_values_shape(client) -> None:
    response = client.get("/api/get_oeis_name_and_values/A000045")
    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == ["id", "name", "values"]
    assert body["id"] == "A000045"
    assert body["name"].startswith("Fibonacci numbers")
    assert list(body["values"]) == [str(n) for n in range(1001)]  # index order, as strings
    assert body["values"] == {str(n): str(f) for n, f in enumerate(FIB)}
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    "seq_id, first, count",
    [("A000045", 0, 1001), ("A000040", 1, 10000), ("A078302", -43, 244)],
)
def test_offsets(client, seq_id: str, first: int, count: int) -> None:
    values = client.get(f"/api/get_oeis_name_and_values/{seq_id}").get_json()["values"]
    keys = list(values)
    assert (keys[0], keys[-1], len(keys)) == (str(first), str(first + count - 1), count)


def test_values_count_zero_beyond_end_and_lowercase(client, fake_oeis) -> None:
    five = client.get("/api/get_oeis_values/a000045/5")
    assert five.status_code == 200
    assert five.get_json()["id"] == "A000045"
    assert five.get_json()["values"] == {"0": "0", "1": "1", "2": "1", "3": "2", "4": "3"}
    everything = client.get("/api/get_oeis_values/A000045/0").get_json()["values"]
    beyond = client.get("/api/get_oeis_values/A000045/999999").get_json()["values"]
    assert len(everything) == len(beyond) == 1001
    assert fake_oeis.bfile_downloads("A000045") == 1


def stored_name(seq_id: str) -> str | None:
    with session_scope() as session:
        sequence = session.get(Sequence, seq_id)
        return sequence.name if sequence else None


def test_values_placeholder_name_then_metadata_in_background(client, fake_oeis) -> None:
    # A values request downloads the values only: it answers with a placeholder name,
    # which clients must not cache, and schedules the metadata without waiting for it.
    response = client.get("/api/get_oeis_values/A000142/3")
    assert response.get_json() == {
        "id": "A000142",
        "name": "A000142 [name not yet loaded]",
        "values": {"0": "1", "1": "1", "2": "2"},
    }
    assert response.headers["Cache-Control"] == "no-cache"
    wait_until(lambda: stored_name("A000142"), 30, "the metadata the values request scheduled")
    named = client.get("/api/get_oeis_name_and_values/A000142")
    assert named.get_json()["name"].startswith("Factorial numbers")
    assert named.headers["Cache-Control"] == "public, max-age=3600"
    assert len(named.get_json()["values"]["450"]) > 1000
    assert fake_oeis.count("/search") == 1  # the name was fetched once, in the background


def test_metadata_shape_and_backrefs_over_two_pages(client, fake_oeis) -> None:
    response = client.get("/api/get_oeis_metadata/A000045")
    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == ["id", "name", "xrefs", "backrefs", "revision", "modified", "checked"]
    # The fixture's revision and time; the values were never downloaded nor checked.
    assert (body["revision"], body["modified"]) == (1523, "2024-01-15T15:00:00+00:00")
    assert body["checked"] is None
    assert body["xrefs"].startswith("Cf. A000032")
    assert "\n" in body["xrefs"]
    assert body["backrefs"] == sorted(body["backrefs"])
    assert "A000045" not in body["backrefs"]
    assert {"A000032", "A000071", "A000204", "A900012"} <= set(body["backrefs"])
    assert fake_oeis.count("/search") >= 3  # id lookup + at least two pages of mentions


def test_search_shape(client) -> None:
    body = client.get("/api/search_oeis/fibonacci").get_json()
    assert body["term"] == "fibonacci"
    assert 1 <= len(body["results"]) <= 10
    assert body["results"][0][0] == "A000045"
    assert all(len(pair) == 2 and pair[0].startswith("A") for pair in body["results"])


def test_search_in_legacy_shape(client, fake_oeis) -> None:
    fake_oeis.legacy_shape = True
    body = client.get("/api/search_oeis/prime numbers").get_json()
    assert body["results"][0] == ["A000040", "The prime numbers."]


def test_search_without_results_is_an_empty_list(client) -> None:
    response = client.get("/api/search_oeis/nothing%20matches%20this%20at%20all")
    assert response.status_code == 200
    assert response.get_json() == {"term": "nothing matches this at all", "results": []}


def test_search_term_too_long(client, fake_oeis) -> None:
    response = client.get("/api/search_oeis/" + "x" * 201)
    assert response.status_code == 400
    assert "200 characters" in response.get_json()["error"]
    assert fake_oeis.count() == 0


def test_get_commit(client) -> None:
    body = client.get("/api/get_commit").get_json()
    assert isinstance(body["short_commit_hash"], str) and body["short_commit_hash"]


def test_health(client) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.get_json()["database"] == "up"


@pytest.mark.parametrize(
    "path",
    [
        "/api/get_oeis_values/A45/10",
        "/api/get_oeis_values/B000045/10",
        "/api/get_oeis_values/A0000450/10",
        "/api/get_oeis_values/A000045/-1",
        "/api/get_oeis_values/A000045/ten",
        "/api/get_oeis_values/A000045/1.5",
        "/api/get_oeis_values/A000045/9999999999",
        "/api/get_oeis_name_and_values/A00004%27",
        "/api/get_oeis_metadata/DROP TABLE",
        "/api/tasks/not a task",
        "/api/search_oeis/a%00b",
        "/api/search_oeis/tab%09here",
    ],
)
def test_bad_input_is_400_json_before_any_work(client, fake_oeis, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 400
    assert isinstance(response.get_json()["error"], str)
    assert fake_oeis.count() == 0
    assert stored_ids() == set()


def test_unknown_endpoint_is_json_404(client) -> None:
    response = client.get("/api/nope")
    assert response.status_code == 404
    assert response.get_json() == {"error": "no such endpoint"}


def test_unknown_sequence_is_404_and_remembered(client, fake_oeis) -> None:
    for path in (
        "/api/get_oeis_values/A000000/5",
        "/api/get_oeis_name_and_values/A000000",
        "/api/get_oeis_metadata/A000000",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "A000000" in response.get_json()["error"]
    assert fake_oeis.count() == 1  # only the first request went upstream


def test_malformed_bfile_is_502_and_nothing_stored(client, fake_oeis) -> None:
    fake_oeis.malformed.add("A000027")
    response = client.get("/api/get_oeis_values/A000027/10")
    assert response.status_code == 502
    assert "malformed line" in response.get_json()["error"]
    assert stored_ids() == set()
    with session_scope() as session:  # no partial sequence row either
        assert session.scalar(select(func.count()).select_from(Sequence)) == 0


def test_throttled_oeis_is_503_with_retry_after_and_nothing_stored(client, fake_oeis) -> None:
    fake_oeis.throttle_always = True
    response = client.get("/api/get_oeis_values/A000027/10")
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert stored_ids() == set()
    assert fake_oeis.bfile_downloads("A000027") == 3  # BACKSCOPE_OEIS_MAX_ATTEMPTS in tests
    assert read_lock(get_redis("locks"), lock_key("values", "A000027")) is None
    fake_oeis.throttle_always = False
    assert client.get("/api/get_oeis_values/A000027/10").status_code == 200


def test_throttled_then_healthy_succeeds_after_retries(client, fake_oeis) -> None:
    fake_oeis.throttle = 2
    response = client.get("/api/get_oeis_values/A000027/3")
    assert response.status_code == 200
    assert response.get_json()["values"] == {"1": "1", "2": "2", "3": "3"}
    statuses = [r.status for r in fake_oeis.requests if r.path == "/A000027/b000027.txt"]
    assert statuses[-1] == 200
    assert [r.status for r in fake_oeis.requests].count(503) == 2


def test_slow_oeis_gives_202_then_200(app, fake_oeis, workers, short_wait) -> None:
    # The OEIS answers nothing until the test says so; the worker waits for it as long
    # as that takes (its read timeout is far longer than the test).
    workers("patient", env={"BACKSCOPE_OEIS_READ_TIMEOUT": "120"})
    client = app.test_client()
    fake_oeis.hang = True
    response = client.get("/api/get_oeis_values/a000027/3")
    assert response.status_code == 202
    body = response.get_json()
    assert body["id"] == "A000027" and body["status"] == "pending"  # normalised, as in a 200
    assert response.headers["Location"] == f"/api/tasks/{body['task']}"
    assert int(response.headers["Retry-After"]) > 0
    task = client.get(response.headers["Location"]).get_json()
    assert task["task"] == body["task"] and task["state"] in ("pending", "running")
    # Repeating the request joins the same task rather than starting another.
    again = client.get("/api/get_oeis_values/A000027/3")
    assert again.status_code == 202 and again.get_json()["task"] == body["task"]
    fake_oeis.hang = False
    response = get_until_200(client, "/api/get_oeis_values/A000027/3")
    assert response.status_code == 200
    assert client.get(f"/api/tasks/{body['task']}").get_json() == {
        "task": body["task"],
        "state": "succeeded",
        "error": None,
    }
    assert fake_oeis.bfile_downloads("A000027") == 1


def test_concurrent_requests_cause_one_download(client, fake_oeis) -> None:
    fake_oeis.latency = 1.0  # so that the requests overlap
    with ThreadPoolExecutor(20) as pool:
        responses = list(
            pool.map(
                lambda _: get_until_200(client, "/api/get_oeis_name_and_values/A000040"), range(20)
            )
        )
    assert [r.status_code for r in responses] == [200] * 20
    assert all(len(r.get_json()["values"]) == 10000 for r in responses)
    assert fake_oeis.bfile_downloads("A000040") == 1
    assert fake_oeis.count("/search") == 1, fake_oeis.requests


def test_cached_data_needs_only_postgres(client, fake_oeis, monkeypatch) -> None:
    assert client.get("/api/get_oeis_name_and_values/A000045").status_code == 200
    # Point the API's Redis at a port where nothing listens: reads still work.
    from redis import Redis

    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    monkeypatch.setattr(api.jobs, "get_redis", lambda use: dead)
    monkeypatch.setattr(queue, "get_redis", lambda use: dead)
    assert client.get("/api/get_oeis_name_and_values/A000045").status_code == 200
    assert client.get("/api/get_oeis_values/A000045/3").status_code == 200
    missing = client.get("/api/get_oeis_values/A000027/3")
    assert missing.status_code == 503
    assert "work queue" in missing.get_json()["error"]
    assert "Retry-After" in missing.headers


API_BACKENDS = (
    "FROM pg_stat_activity "
    "WHERE application_name = 'backscope-api' AND datname = current_database()"
)


def api_backends(settings) -> int:
    """The API's pooled connections to this database (this process's sessions are among
    them: asked on a connection of its own)."""
    engine = create_engine(settings.database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return connection.scalar(text(f"SELECT count(*) {API_BACKENDS}"))
    finally:
        engine.dispose()


def test_dropped_database_connections_are_a_503_then_replaced(client, settings) -> None:
    assert client.get("/api/get_oeis_values/A000045/3").status_code == 200
    assert api_backends(settings) >= 1
    # Say PostgreSQL restarted: the API's pool is dead.
    execute(settings.database_url, f"SELECT pg_terminate_backend(pid) {API_BACKENDS}")
    wait_until(lambda: api_backends(settings) == 0, 30, "the terminated connections to end")
    cached_reads.changed(EVERYTHING)  # so the next request asks the database
    first = client.get("/api/get_oeis_values/A000045/3")
    assert first.status_code == 503, first.get_json()
    assert "database" in first.get_json()["error"] and "Retry-After" in first.headers
    assert client.get("/api/get_oeis_values/A000045/3").status_code == 200


def test_task_status_with_redis_down_is_503(client, monkeypatch) -> None:
    from celery import Celery

    import api.routes.status

    dead = Celery(broker="redis://127.0.0.1:1/0", backend="redis://127.0.0.1:1/1")
    dead.conf.redis_socket_connect_timeout = 0.2
    dead.conf.result_backend_transport_options = {"retry_policy": {"max_retries": 0}}
    monkeypatch.setattr(api.routes.status, "celery", dead)
    response = client.get("/api/tasks/0f4e3b2a-task")
    assert response.status_code == 503
    assert response.get_json() == {"error": "the work queue is unavailable right now"}
    assert "Retry-After" in response.headers


def test_work_in_flight_is_not_asked_for_again_at_once(client, monkeypatch) -> None:
    # The API remembers what it scheduled for SCHEDULE_MEMORY seconds; here for as long
    # as the test takes, however slow the machine, and then forgotten by hand.
    monkeypatch.setattr(api.jobs, "SCHEDULE_MEMORY", 3600.0)
    # A000045 is downloaded and its factoring queued (no factor worker runs here).
    assert client.get("/api/get_oeis_values/A000045/3").status_code == 200
    locks, factoring = get_redis("locks"), lock_key("factors", "A000045")
    assert read_lock(locks, factoring) is not None
    locks.delete(factoring)
    # While it remembers, the API does not ask Redis again ...
    assert client.get("/api/get_oeis_values/A000045/3").status_code == 200
    assert read_lock(locks, factoring) is None
    # ... once it has forgotten, it schedules the work again.
    api.jobs.scheduled_recently.clear()
    assert client.get("/api/get_oeis_values/A000045/3").status_code == 200
    assert read_lock(locks, factoring) is not None


@pytest.mark.redis
@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")  # Celery's
def test_a_task_that_finishes_as_its_lock_is_checked_is_not_abandoned(monkeypatch) -> None:
    """A task releases its lock a moment before its result is stored. A waiter that looks
    in that moment must not take the task for dead and start the work again (a second
    download, say, from an OEIS that has just throttled the first)."""
    task_id, work = "finishing-task", values_work("A000027")
    results = queue.app.backend
    results.store_result(task_id, None, "STARTED")
    looks: list[bool] = []

    def abandoned(work, task_id: str) -> bool:
        looks.append(real(work, task_id))  # its lock is gone already ...
        results.mark_as_failure(task_id, UpstreamUnavailable("throttled"))  # ... it just ended
        return looks[-1]

    real = api.jobs._abandoned
    monkeypatch.setattr(api.jobs, "_abandoned", abandoned)
    with pytest.raises(UpstreamUnavailable, match="throttled"):
        api.jobs.wait({task_id: work}, time.monotonic() + 60)
    assert looks == [True]

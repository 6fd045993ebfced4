"""What the fast read path relies on: ETags that change with the data, 304 for a
client that has the answer, gzip only when accepted."""

from __future__ import annotations

import dataclasses
import gzip
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import api.jobs
import api.responses
import api.routes.sequences
from api.documents import DocumentCache
from shared.db import session_scope
from shared.oeis.parsing import BFile, Entry
from shared.redis_db import get_redis
from shared.store.writes import forget, store_factors, store_metadata, store_values
from shared.work.lock import current_fence
from tests.helpers import wait_until

PATH = "/api/get_oeis_name_and_values/A000045"


def test_document_cache_keeps_large_bodies_apart_from_the_small_ones() -> None:
    cache = DocumentCache(max_bytes=8000, large_bytes=16000)
    for n in range(7):
        cache.put(f"small{n}", b"x" * 1000)
    cache.put("huge", b"y" * 7000)  # fits the budget alone, but would evict all the rest
    assert cache.get("huge") is not None
    assert all(cache.get(f"small{n}") for n in range(7))
    cache.put("small7", b"x" * 1000)
    cache.put("small8", b"x" * 1000)  # over the budget: the least recently used goes
    assert cache.get("small0") is None and cache.get("huge") is not None
    cache.put("huge2", b"z" * 7000)
    cache.put("huge3", b"z" * 7000)  # over the large budget: the oldest large one goes
    assert cache.get("huge") is None and cache.get("small8") is not None
    cache.put("enormous", b"w" * 16001)  # larger than the large budget: never kept
    assert cache.get("enormous") is None and cache.size <= 8000 + 16000


def test_etag_and_304(client) -> None:
    first = client.get(PATH)
    etag = first.headers["ETag"]
    assert first.status_code == 200 and etag
    assert first.headers["Cache-Control"] == "public, max-age=3600"
    again = client.get(PATH, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == etag
    other = client.get(PATH, headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200
    assert other.get_json() == first.get_json()


def test_slices_have_their_own_etag(client) -> None:
    three = client.get("/api/get_oeis_values/A000045/3")
    four = client.get("/api/get_oeis_values/A000045/4")
    assert three.headers["ETag"] != four.headers["ETag"]
    assert (
        client.get(
            "/api/get_oeis_values/A000045/3", headers={"If-None-Match": four.headers["ETag"]}
        ).status_code
        == 200
    )


def test_gzip_only_when_accepted_and_only_for_large_answers(client) -> None:
    plain = client.get(PATH)
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["Vary"] == "Accept-Encoding"
    zipped = client.get(PATH, headers={"Accept-Encoding": "gzip, deflate"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert len(zipped.data) < len(plain.data)
    assert json.loads(gzip.decompress(zipped.data)) == plain.get_json()
    assert zipped.headers["ETag"] != plain.headers["ETag"]  # different bytes, different tag
    refused = client.get(PATH, headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in refused.headers
    small = client.get("/api/get_oeis_values/A000045/2", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in small.headers


def test_document_follows_the_data(client, fake_oeis) -> None:
    before = client.get(PATH)
    # A refetch with more terms (stored under a newer fencing token) ...
    terms = [*before.get_json()["values"].values(), "1" * 300]
    with session_scope() as session:
        assert store_values(
            session, "A000045", BFile(0, terms), token=current_fence(get_redis("locks")) + 10**9
        )
    # (API processes hear of a change a moment after it commits: api/readcache.py.)
    wait_until(
        lambda: (
            client.get(PATH, headers={"If-None-Match": before.headers["ETag"]}).status_code == 200
        ),
        30,
        "the new document",
    )
    after = client.get(PATH, headers={"If-None-Match": before.headers["ETag"]})
    assert after.headers["ETag"] != before.headers["ETag"]
    assert len(after.get_json()["values"]) == len(before.get_json()["values"]) + 1
    # ... and after forgetting, the next request downloads and builds it again.
    with session_scope() as session:
        forget(session, ["A000045"], token=current_fence(get_redis("locks")))
    assert fake_oeis.bfile_downloads("A000045") == 1
    wait_until(lambda: client.get(PATH).get_json() != after.get_json(), 30, "the download")
    again = client.get(PATH)
    assert again.status_code == 200
    assert fake_oeis.bfile_downloads("A000045") == 2
    assert again.get_json() == before.get_json()
    assert again.headers["ETag"] == before.headers["ETag"]  # same data, same tag


def test_factor_documents_follow_the_factorizations(app, monkeypatch, settings) -> None:
    """A complete factors answer is a ready-made document with an ETag; a partial one
    is never cached; more factorizations or a forget change the answer."""
    quick = dataclasses.replace(settings, sync_wait=0.2)  # no factor worker runs here
    monkeypatch.setattr(api.jobs, "get_settings", lambda: quick)
    client = app.test_client()
    with session_scope() as session:
        store_values(session, "A000027", BFile(1, [str(n) for n in range(1, 11)]), token=5)
        # The name too: without it the API schedules its download, and a worker started
        # by an earlier test would store it in the middle of this one, changing the ETag.
        assert store_metadata(session, Entry("A000027", "The naturals.", 1, [], "", ""), token=5)
        store_factors(session, "A000027", 5, [(n, f"[{n},1]") for n in range(1, 6)], token=6)
    wait_until(lambda: client.get("/api/get_oeis_values/A000027/1").status_code == 200, 10, "api")
    five = client.get("/api/get_oeis_factors/A000027/5")
    assert five.get_json()["complete"] is True
    etag = five.headers["ETag"]
    again = client.get("/api/get_oeis_factors/A000027/5", headers={"If-None-Match": etag})
    assert again.status_code == 304  # (gzip: the same send_json as the values answers)
    partial = client.get("/api/get_oeis_factors/A000027/8")
    assert partial.get_json()["complete"] is False and "ETag" not in partial.headers
    assert partial.headers["Cache-Control"] == "no-store"
    with session_scope() as session:
        store_factors(session, "A000027", 5, [(n, f"[{n},1]") for n in range(6, 9)], token=7)

    def complete() -> bool:
        return client.get("/api/get_oeis_factors/A000027/8").get_json()["complete"]

    wait_until(complete, 10, "the API to hear of the new factorizations")
    eight = client.get("/api/get_oeis_factors/A000027/8")
    assert eight.get_json()["factors"]["8"] == "[8,1]" and eight.headers["ETag"] != etag
    with session_scope() as session:
        forget(session, ["A000027"], current_fence(get_redis("locks")))

    def forgotten() -> bool:
        response = client.get("/api/get_oeis_factors/A000027/5")
        return response.headers.get("ETag") != etag

    wait_until(forgotten, 10, "the API to hear of the forget")


def test_identical_concurrent_requests_build_the_document_once(client, monkeypatch) -> None:
    """While one request reads the document, the 19 others asking for it all arrive
    and wait for that one read."""
    # Values and name stored, so the data does not change under the requests.
    assert client.get(PATH).status_code == 200
    cache = DocumentCache(max_bytes=64 * 2**20, large_bytes=128 * 2**20)  # holding nothing
    monkeypatch.setattr(api.routes.sequences, "documents", cache)
    monkeypatch.setattr(api.responses, "documents", cache)
    reads, asked, release = [], [], threading.Event()
    real_read, real_build = api.routes.sequences.read_document, cache.build

    def read(*args):
        reads.append(args)
        release.wait(30)  # until every request has asked for the document
        return real_read(*args)

    def build(*args):
        asked.append(args)
        return real_build(*args)

    monkeypatch.setattr(api.routes.sequences, "read_document", read)
    monkeypatch.setattr(cache, "build", build)
    with ThreadPoolExecutor(20) as pool:
        answers = [pool.submit(client.get, "/api/get_oeis_values/A000045/7") for _ in range(20)]
        wait_until(lambda: len(asked) == 20 and len(reads) == 1, 10, "all 20 to ask at once")
        release.set()
        answers = [answer.result() for answer in answers]
    assert {a.status_code for a in answers} == {200}
    assert len({a.data for a in answers}) == 1
    assert len(reads) == 1

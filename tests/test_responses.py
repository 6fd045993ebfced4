"""What the fast read path relies on: ETags that change with the data, 304 for a
client that has the answer, gzip only when accepted."""

from __future__ import annotations

import gzip
import json

from api.responses import DocumentCache
from shared.db import session_scope
from shared.lock import current_fence
from shared.parsing import BFile
from shared.redis_db import get_redis
from shared.store import forget, store_values
from tests.helpers import wait_until

PATH = "/api/get_oeis_name_and_values/A000045"


def test_document_cache_keeps_no_body_too_large_for_its_share() -> None:
    cache = DocumentCache(max_bytes=8000)
    for n in range(7):
        cache.put(f"small{n}", b"x" * 1000)
    cache.put("huge", b"y" * 7000)  # fits the budget alone, but would evict all the rest
    assert cache.get("huge") is None
    assert all(cache.get(f"small{n}") for n in range(7))
    cache.put("small7", b"x" * 1000)
    cache.put("small8", b"x" * 1000)  # over the budget: the least recently used goes
    assert cache.get("small0") is None and cache.size <= 8000


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
    # (API processes hear of a change a moment after it commits: shared/readcache.py.)
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

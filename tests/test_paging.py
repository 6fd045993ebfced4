"""Every real sequence, however large or far out its indices (issue #12): 64-bit
indices, paged access, and factor answers the front end can always use.

The fake OEIS makes up A241292 (1,200 terms a(n) = (n - 3638334640025)^2 from index
3,638,334,640,025) and a j-function-like A000521 (10,000 terms from index -1, up to
about 550 digits; a 3.7 MB b-file) on the fly.
"""

from __future__ import annotations

import gzip
import json

import pytest

from shared.factors.factorize import NO_FAC
from shared.store.reads import NO_FAC as STORE_NO_FAC
from tests.helpers import get_until_200

FAR = "A241292"
FAR_FIRST = 3638334640025


def test_no_fac_agrees_with_the_maths() -> None:
    assert STORE_NO_FAC == NO_FAC


def test_indices_beyond_32_bits_on_every_endpoint(client, short_wait) -> None:
    # (No factor worker here: the factors answer is the partial one, after a short wait.)
    body = get_until_200(client, f"/api/get_oeis_name_and_values/{FAR}").get_json()
    assert list(body["values"])[:3] == ["3638334640025", "3638334640026", "3638334640027"]
    assert body["values"]["3638334640027"] == "4"
    assert len(body["values"]) == 1200
    short = client.get(f"/api/get_oeis_values/{FAR}/2").get_json()
    assert short["values"] == {"3638334640025": "0", "3638334640026": "1"}
    factors = client.get(f"/api/get_oeis_factors/{FAR}/3").get_json()
    assert list(factors["factors"]) == ["3638334640025", "3638334640026", "3638334640027"]
    header = client.get(f"/api/get_oeis_header/{FAR}").get_json()
    assert header == {
        "id": FAR,
        "name": body["name"],
        "first": "3638334640025",
        "last": "3638334641224",
        "chunk_size": 1024,
    }


def chunk(client, seq_id: str, n: int | str) -> dict[str, str]:
    response = client.get(f"/api/get_oeis_chunk/{seq_id}/{n}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["values"]


def span(values: dict[str, str]) -> tuple[str, str, int]:
    """(first index, last index, count) of a values object."""
    indices = list(values)
    return indices[0], indices[-1], len(indices)


def test_chunk_boundaries(client) -> None:
    get_until_200(client, f"/api/get_oeis_values/{FAR}/1")
    first_chunk = FAR_FIRST // 1024  # 3553061171: indices ...639104 to ...640127
    first = chunk(client, FAR, first_chunk)
    assert span(first) == ("3638334640025", "3638334640127", 103)
    middle = chunk(client, FAR, first_chunk + 1)
    assert span(middle) == ("3638334640128", "3638334641151", 1024)
    last = chunk(client, FAR, first_chunk + 2)
    assert span(last) == ("3638334641152", "3638334641224", 1200 - 103 - 1024)
    assert chunk(client, FAR, first_chunk + 3) == {}  # past the end
    assert chunk(client, FAR, 0) == {}  # before the start
    # A negative chunk: A078302's terms -43..-40 are in chunk -1.
    negative = chunk(client, "A078302", -1)
    assert span(negative) == ("-43", "-1", 43)
    assert span(chunk(client, "A078302", 0))[0] == "0"
    assert chunk(client, "A078302", -2) == {}


@pytest.mark.parametrize("n", ["1.5", "x", "", "--1", "1" * 19])
def test_chunk_number_must_be_a_whole_number(client, fake_oeis, n: str) -> None:
    response = client.get(f"/api/get_oeis_chunk/A000045/{n}")
    assert response.status_code in (400, 404)  # an empty n does not match the route at all
    assert "error" in response.get_json()
    assert fake_oeis.count() == 0  # rejected before any work


def test_paged_endpoints_unknown_sequence_is_404(client) -> None:
    assert client.get("/api/get_oeis_header/A000000").status_code == 404
    assert client.get("/api/get_oeis_chunk/A000000/0").status_code == 404


def test_chunks_have_etags_and_gzip(client) -> None:
    # Values and name stored first, so that the data does not change between requests.
    get_until_200(client, "/api/get_oeis_name_and_values/A000045")
    path = "/api/get_oeis_chunk/A000045/0"
    first = get_until_200(client, path)
    etag = first.headers["ETag"]
    assert client.get(path, headers={"If-None-Match": etag}).status_code == 304
    zipped = client.get(path, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(zipped.data)) == first.get_json()
    assert len(first.get_json()["values"]) == 1001
    assert client.get("/api/get_oeis_chunk/A000045/1").headers["ETag"] != etag


def test_values_above_the_limit_are_no_fac_at_once(client, short_wait) -> None:
    """No factor worker runs here: big terms of the j-function-like sequence are "no_fac"
    straight away, the small ones wait for factoring."""
    assert get_until_200(client, "/api/get_oeis_values/A000521/3").status_code == 200
    response = client.get("/api/get_oeis_factors/A000521/0")
    assert response.status_code == 200
    body = response.get_json()
    assert body["complete"] is False
    assert len(body["factors"]) == 10_000
    assert body["factors"]["2"] == "no_fac_yet"  # small: factoring would get it
    assert body["factors"]["9998"] == NO_FAC  # 546 digits, far above 2^512
    assert list(body["factors"])[:2] == ["-1", "0"]


def test_a000521_values_are_exact(client) -> None:
    from tests.fake_oeis import _j_value

    body = get_until_200(client, "/api/get_oeis_name_and_values/A000521").get_json()
    assert len(body["values"]) == 10_000
    assert body["values"]["-1"] == "1" and body["values"]["0"] == "744"
    assert body["values"]["9998"] == str(_j_value(9998))

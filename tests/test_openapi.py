"""The OpenAPI description (api/openapi/) is valid, covers exactly the routes, bounds
the parameters as the code does, and the answers of every operation conform to it.

Every test that uses the `client` fixture checks its answers against the description too
(tests/conformance.py); these tests make sure each operation is exercised, and that the
check itself catches an answer the description does not allow.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import threading
from html.parser import HTMLParser

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from openapi_spec_validator import OpenAPIV31SpecValidator
from werkzeug.serving import make_server
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

import api.jobs
from api.errors import BadRequest
from api.openapi import description
from api.routes.search import check_term
from api.routes.sequences import CHUNK, parse_count
from shared.ids import InvalidId, normalize_id
from tests.conformance import check_response, flask_to_openapi
from tests.helpers import get_until_200


def _pattern(path: str, name: str) -> str:
    parameters = description()["paths"][path]["get"]["parameters"]
    return next(p["schema"] for p in parameters if p["name"] == name)["pattern"]


def _described(pattern: str, value: str) -> bool:
    """Whether `value` matches the JSON Schema `pattern`. Its dialect is ECMA-262, where
    `$` matches only at the very end; Python's `$` also matches before a final newline,
    so the final `$` is checked as `\\Z`."""
    assert pattern.endswith("$"), pattern
    return re.search(pattern.removesuffix("$") + r"\Z", value) is not None


def _accepts(check, value: str) -> bool:
    try:
        check(value)
    except (BadRequest, InvalidId):
        return False
    return True


def test_the_served_description_is_valid_openapi_3_1(client) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    OpenAPIV31SpecValidator(document).validate()  # raises on anything invalid


def test_every_route_is_described_and_nothing_else(app) -> None:
    """Same paths, methods and parameter names; each operationId names its view."""
    routes = {
        flask_to_openapi(rule.rule): {"get": rule.endpoint.split(".")[-1]}
        for rule in app.url_map.iter_rules()
        if not rule.endpoint.startswith("swagger_ui.")  # the page for people
        for method in rule.methods
        if method == "GET"
    }
    described = {
        path: {method: operation["operationId"] for method, operation in operations.items()}
        for path, operations in description()["paths"].items()
    }
    assert routes == described


@given(st.text(max_size=12) | st.from_regex(r"[Aa][0-9]{5,7}", fullmatch=True))
@example("A000045\n")
def test_the_id_pattern_accepts_exactly_what_the_api_does(raw: str) -> None:
    pattern = _pattern("/api/get_oeis_metadata/{seq_id}", "seq_id")
    assert _described(pattern, raw) == _accepts(normalize_id, raw)


@given(st.text(max_size=12) | st.from_regex(r"-?[0-9]{1,12}", fullmatch=True))
@example("5\n")
def test_the_count_and_chunk_patterns_accept_exactly_what_the_api_does(raw: str) -> None:
    count = _pattern("/api/get_oeis_values/{seq_id}/{count}", "count")
    assert _described(count, raw) == _accepts(parse_count, raw)
    chunk = _pattern("/api/get_oeis_chunk/{seq_id}/{chunk}", "chunk")
    assert _described(chunk, raw) == bool(CHUNK.fullmatch(raw))


@given(st.text(max_size=210) | st.text(st.characters(codec="ascii"), min_size=195, max_size=205))
@example("0\n")  # found by Hypothesis in CI: Python's `$` matched before the newline
def test_the_term_bounds_accept_exactly_what_the_api_does(term: str) -> None:
    schema = next(
        p["schema"] for p in description()["paths"]["/api/search_oeis/{term}"]["get"]["parameters"]
    )
    described = schema["minLength"] <= len(term) <= schema["maxLength"] and _described(
        schema["pattern"], term
    )
    assert described == _accepts(check_term, term)


def test_every_operation_answers_as_described(client, fake_oeis, monkeypatch, settings) -> None:
    """Each operation's answers, each checked by the conforming client."""
    values = get_until_200(client, "/api/get_oeis_name_and_values/A000045")
    assert values.status_code == 200
    unchanged = client.get(
        "/api/get_oeis_name_and_values/A000045", headers={"If-None-Match": values.headers["ETag"]}
    )
    assert unchanged.status_code == 304
    for path in (
        "/api/get_oeis_values/A000045/10",
        "/api/get_oeis_metadata/a000045",
        "/api/get_oeis_header/A000045",
        "/api/get_oeis_chunk/A000045/0",
        "/api/get_oeis_chunk/A000045/-3",
        "/api/search_oeis/fibonacci",
        "/api/search_oeis/a/b",  # a term may hold a '/'
        "/api/get_commit",
        "/api/health",
        "/api/openapi.json",
        "/metrics",
    ):
        assert get_until_200(client, path).status_code == 200, path
    # No factor worker here: the answer is the partial one ("no_fac_yet", Retry-After),
    # after a short wait rather than the whole BACKSCOPE_SYNC_WAIT;
    # tests/test_factors.py's complete ones go through this check too.
    with monkeypatch.context() as short:
        quick = dataclasses.replace(settings, sync_wait=0.2)
        short.setattr(api.jobs, "get_settings", lambda: quick)
        factors = get_until_200(client, "/api/get_oeis_factors/A000045/30")
    assert factors.status_code == 200 and "Retry-After" in factors.headers
    zipped = client.get(
        "/api/get_oeis_name_and_values/A000045", headers={"Accept-Encoding": "gzip"}
    )
    assert zipped.headers["Content-Encoding"] == "gzip"  # checked once unzipped
    task = client.get("/api/tasks/some-task-id")
    assert task.get_json()["state"] == "pending"
    for path, status in (
        ("/api/get_oeis_values/A000000/5", 404),
        ("/api/get_oeis_factors/A000000/0", 404),
        ("/api/get_oeis_values/A45/5", 400),
        ("/api/get_oeis_values/A000045/-1", 400),
        ("/api/get_oeis_chunk/A000045/0x1", 400),
        ("/api/search_oeis/" + "x" * 201, 400),
        ("/api/search_oeis/%20", 400),
        ("/api/tasks/" + "x" * 101, 400),
        ("/api/no_such_thing", 404),
    ):
        assert client.get(path).status_code == status, path


def test_the_check_catches_what_the_description_does_not_allow(app) -> None:
    request = Request(EnvironBuilder(path="/api/get_oeis_values/A000045/1").get_environ())
    good = Response(
        '{"id":"A000045","name":"Fibonacci","values":{"0":"0"}}', mimetype="application/json"
    )
    check_response(app.url_map, request, good)
    wrong = (
        Response('{"id":"A000045","values":{"0":"0"}}', mimetype="application/json"),  # no name
        Response('{"id":"A000045","name":"F","values":{"0":0}}', mimetype="application/json"),
        Response('{"error":"teapot"}', status=418, mimetype="application/json"),
        Response("not json", status=400, mimetype="text/html"),
    )
    for response in wrong:
        with pytest.raises(AssertionError, match="does not allow"):
            check_response(app.url_map, request, response)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("src", "href") and value]


def test_the_docs_page_needs_nothing_from_outside(client) -> None:
    assert client.get("/api/docs").status_code == 308  # to /api/docs/
    page = client.get("/api/docs/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/api/openapi.json" in html
    assert '"validatorUrl": null' in html  # no badge from validator.swagger.io
    parser = _Links()
    parser.feed(html)
    assert parser.links
    for link in parser.links:
        assert link.startswith("/api/docs/"), link  # nothing from a CDN
        with client.get(link) as asset:  # a file: closed after
            assert asset.status_code == 200, link


def test_the_docs_page_shows_every_operation_in_a_browser(app) -> None:
    """Headless Chromium renders the page; every operation of the description is on it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does)")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rendered = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                "--virtual-time-budget=20000",  # until the description is fetched and drawn
                "--dump-dom",
                f"http://127.0.0.1:{server.port}/api/docs/",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    finally:
        server.shutdown()
    drawn = set(re.findall(r'data-path="([^"]+)"', rendered))  # by the page's scripts
    assert drawn == set(description()["paths"])

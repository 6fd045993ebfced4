"""Every answer the tests get from the API checked against its OpenAPI description
(api/openapi/), so that the description cannot drift from what the code sends.

`ConformingClient` is the test client of the `app` fixture: each response of every API
test goes through `check_response`, which fails the test if its status, headers or body
are not what the description says for that operation.
"""

from __future__ import annotations

import gzip
import re
from functools import cache
from urllib.parse import quote

from flask.testing import FlaskClient
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map
from werkzeug.wrappers import Request, Response

from api.openapi import DOCS_PATH, description


@cache
def openapi() -> OpenAPI:
    return OpenAPI.from_dict(description())


class _Decoded(WerkzeugOpenAPIResponse):
    """The response as the client reads it: a gzipped body unzipped."""

    @property
    def data(self) -> bytes:
        body = self.response.get_data()
        return gzip.decompress(body) if self.response.content_encoding == "gzip" else body


class _Routed(WerkzeugOpenAPIRequest):
    """The request with the path its route matched, each parameter percent-encoded
    (a search term may hold a '/', which an OpenAPI path parameter cannot)."""

    def __init__(self, request: Request, path: str) -> None:
        super().__init__(request)
        self.routed_path = path

    @property
    def path(self) -> str:
        return self.routed_path


PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")  # in a Flask rule


def flask_to_openapi(rule: str) -> str:
    """`/api/tasks/<task_id>` -> `/api/tasks/{task_id}`."""
    return PARAMETER.sub(r"{\1}", rule)


def check_response(url_map: Map, request: Request, response: Response) -> None:
    """Fail unless the description allows `response` to `request`."""
    if request.method != "GET" or request.path.startswith(DOCS_PATH):
        return
    try:
        rule, arguments = url_map.bind("localhost").match(request.path, return_rule=True)
    except HTTPException as exc:
        # No route (404), or a redirect to the path without '//': no operation to check.
        assert response.status_code == exc.code, (request.path, response.status_code)
        return
    path = PARAMETER.sub(lambda m: quote(str(arguments[m[1]]), safe=""), rule.rule)
    try:
        openapi().validate_response(_Routed(request, path), _Decoded(response))
    except Exception as exc:
        body = response.get_data()[:300]
        raise AssertionError(
            f"GET {request.path} answered {response.status_code} {body!r}, which the "
            f"OpenAPI description does not allow: {_reasons(exc)}"
        ) from exc


def _reasons(exc: BaseException) -> str:
    """openapi-core's error, with the schema errors it keeps in its cause."""
    cause = exc.__cause__
    errors = getattr(cause, "schema_errors", None) or ([cause] if cause else [])
    return "; ".join([repr(exc), *(getattr(e, "message", str(e)) for e in errors)])


class ConformingClient(FlaskClient):
    """A test client that checks every answer against the description."""

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        check_response(self.application.url_map, response.request, response)
        return response

"""What the API adds to every request so that it can be watched: a request id (taken
from X-Request-ID or made up, returned in the answer, in every log line of the request
and passed on to the tasks it starts) and Prometheus counts; and GET /metrics.

The counting is on the path of every cached read (thousands per second): one dict
lookup, a counter increment and a histogram observation, labelled by the Flask endpoint
(a bounded set; 'unknown' when no route matched), never by the raw path.
"""

from __future__ import annotations

import re
import uuid
from contextvars import Token
from ipaddress import ip_address
from time import perf_counter

from flask import Flask, Response, g, request

from api.clients import client_address
from api.errors import error
from shared import metrics
from shared.config import get_settings
from shared.logs import bind_log_context, reset_log_context

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
METRICS_ENDPOINT = "metrics"
# The routes that answer with cached data, counted as cache hits or misses.
DATA_ENDPOINTS = frozenset(
    f"api.{name}"
    for name in (
        "get_oeis_values",
        "get_oeis_name_and_values",
        "get_oeis_metadata",
        "get_oeis_factors",
        "get_oeis_header",
        "get_oeis_chunk",
        "search_oeis",
    )
)


def _begin() -> None:
    g.started = perf_counter()
    given = request.headers.get("X-Request-ID")
    g.request_id = given if given and REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    g.log_token = bind_log_context(request_id=g.request_id)


def _finish(response: Response) -> Response:
    # The Numberscope front end calls us from the browser, from another origin.
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["X-Request-ID"] = g.request_id
    endpoint = request.endpoint or "unknown"
    if endpoint == METRICS_ENDPOINT:
        return response  # scrapes are not counted: they would only count themselves
    status = response.status_code
    metrics.count_request(endpoint, status, perf_counter() - g.started)
    if endpoint in DATA_ENDPOINTS:
        if status == 304:
            metrics.count_cache_answer(endpoint, "not_modified")
        elif status == 202 or (status == 200 and g.get("needed_work")):  # set by api/jobs.py
            metrics.count_cache_answer(endpoint, "work")
        elif status == 200:
            metrics.count_cache_answer(endpoint, "cached")
    return response


def _end(_: BaseException | None) -> None:
    token: Token | None = g.pop("log_token", None)
    if token is not None:
        reset_log_context(token)


def _is_local(address: str) -> bool:
    """Whether the client is on this machine: a loopback address, or no address at all
    (a unix socket)."""
    if address in ("", "unknown"):
        return True
    try:
        return ip_address(address).is_loopback
    except ValueError:
        return False


def serve_metrics() -> Response:
    """The whole stack's metrics, to whom BACKSCOPE_METRICS allows. The client is the
    one X-Forwarded-For names when a trusted proxy passes the request on, so a proxy
    on this machine does not make every client local."""
    access = get_settings().metrics
    if access == "off":
        return error("metrics are turned off (BACKSCOPE_METRICS=off)", 404)
    if access == "local" and not _is_local(client_address()):
        return error("metrics are served to this machine only (BACKSCOPE_METRICS=local)", 403)
    body, content_type = metrics.render()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def register_observing(app: Flask) -> None:
    app.before_request(_begin)
    app.after_request(_finish)
    app.teardown_request(_end)
    app.add_url_rule("/metrics", METRICS_ENDPOINT, serve_metrics)

"""Every error is JSON: {"error": "<clear sentence>"} with a status that says what happened."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from redis.exceptions import RedisError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from api.budget import OverBudget
from api.jobs import Pending, TaskFailed
from shared.db import UNREACHABLE
from shared.errors import BackscopeError, UpstreamUnavailable
from shared.ids import InvalidId, normalize_id

log = logging.getLogger(__name__)

RETRY_PENDING = 2
RETRY_UNAVAILABLE = 30
# Every pooled connection of the process was busy for POOL_TIMEOUT (shared/db.py).
RETRY_BUSY = 2


class BadRequest(Exception):
    """Malformed input: answer 400 with this sentence."""


class ChangedMeanwhile(UpstreamUnavailable):
    """The data was there a moment ago and gone now (forgotten, cleared): ask again."""

    def __init__(self) -> None:
        super().__init__("the cached data changed while it was read; please try again", 1)


def error(message: str, status: int, retry_after: int | None = None, **extra: object) -> Response:
    response = jsonify({"error": message, **extra})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def register_errors(app: Flask) -> None:
    @app.errorhandler(InvalidId)
    @app.errorhandler(BadRequest)
    def bad_request(exc: Exception) -> Response:
        return error(str(exc), 400)

    @app.errorhandler(BackscopeError)
    def backscope_error(exc: BackscopeError) -> Response:
        unavailable = isinstance(exc, UpstreamUnavailable)
        retry = (exc.retry_after or RETRY_UNAVAILABLE) if unavailable else None
        return error(exc.message, exc.status, retry)

    @app.errorhandler(OverBudget)
    def over_budget(exc: OverBudget) -> Response:
        return error(str(exc), 429, exc.retry_after)

    @app.errorhandler(Pending)
    def pending(exc: Pending) -> Response:
        # The id was validated before any work started, so it normalises.
        raw_id = (request.view_args or {}).get("seq_id")
        response = jsonify(
            {
                "id": normalize_id(raw_id) if raw_id else None,
                "status": "pending",
                "task": exc.task_id,
            }
        )
        response.status_code = 202
        response.headers["Location"] = f"/api/tasks/{exc.task_id}"
        response.headers["Retry-After"] = str(RETRY_PENDING)
        return response

    def database_down(exc: Exception) -> Response:
        if isinstance(exc, PoolTimeout):  # the database answers, this process waits its turn
            log.warning("api.database_busy")
            return error("the database is busy right now; please try again", 503, RETRY_BUSY)
        log.error("api.database_unavailable", extra={"error": str(exc).splitlines()[0]})
        return error("the database is unavailable right now", 503, RETRY_UNAVAILABLE)

    for unreachable in UNREACHABLE:
        app.register_error_handler(unreachable, database_down)

    @app.errorhandler(RedisError)
    def redis_down(exc: RedisError) -> Response:
        log.error("api.redis_unavailable", extra={"error": str(exc).splitlines()[0][:200]})
        return error("the work queue is unavailable right now", 503, RETRY_UNAVAILABLE)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        message = "no such endpoint" if exc.code == 404 else exc.description
        response = error(message, exc.code or 500)
        if "Allow" in (given := exc.get_response().headers):  # 405: which methods are
            response.headers["Allow"] = given["Allow"]
        return response

    @app.errorhandler(TaskFailed)
    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.exception("api.internal_error")
        return error("internal error (a bug in Backscope); it has been logged", 500)

"""How the service is: the deployed commit, the state of a task a 202 named, and the
health of the database, Redis and the workers."""

from __future__ import annotations

import re
import subprocess
import threading
from functools import cache
from pathlib import Path
from time import monotonic, time

from celery.result import AsyncResult
from flask import Response, jsonify
from sqlalchemy import text

from api.errors import BadRequest, error
from shared.config import get_settings
from shared.db import session_scope
from shared.redis_db import get_redis
from shared.work.queue import app as celery

TASK_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
TASK_STATES = {
    "PENDING": "pending",
    "RECEIVED": "pending",
    "STARTED": "running",
    "RETRY": "running",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "REVOKED": "failed",
}


@cache
def _commit() -> str:
    settings = get_settings()
    if settings.commit:
        return settings.commit[:12]
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=Path(__file__).parent,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def get_commit() -> Response:
    return jsonify({"short_commit_hash": _commit()})


def task_status(task_id: str) -> Response:
    if not TASK_ID.fullmatch(task_id):
        raise BadRequest("that is not a task id")
    result = AsyncResult(task_id, app=celery)
    state = TASK_STATES.get(result.state, "running")
    failure = str(result.result) if state == "failed" else None
    return jsonify({"task": task_id, "state": state, "error": failure})


# A load balancer may poll /api/health every second: each process checks at most once
# per HEALTH_TTL seconds (the worker ping waits up to a second) and answers from memory
# meanwhile. Concurrent callers wait for the one check under way.
HEALTH_TTL = 5.0
_health_lock = threading.Lock()
_health_checked: list[tuple[float, float, dict[str, str]]] = []  # (monotonic, time, checks)


def _health_checks() -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "up"
    except Exception as exc:
        checks["database"] = f"down: {type(exc).__name__}"
    try:
        get_redis("locks").ping()
        checks["redis"] = "up"
    except Exception as exc:
        checks["redis"] = f"down: {type(exc).__name__}"
    try:
        workers = celery.control.ping(timeout=1.0) if checks["redis"] == "up" else []
        checks["workers"] = f"up: {len(workers)}" if workers else "down: no worker answered"
    except Exception as exc:
        checks["workers"] = f"down: {type(exc).__name__}"
    return checks


def health() -> Response:
    """Database, Redis and workers: checked at most every HEALTH_TTL seconds per
    process; `checked_at` says when (Unix time)."""
    with _health_lock:
        if not _health_checked or monotonic() - _health_checked[0][0] >= HEALTH_TTL:
            _health_checked[:] = [(monotonic(), time(), _health_checks())]
        _, checked_at, checks = _health_checked[0]
    down = [name for name, state in checks.items() if not state.startswith("up")]
    if down:
        return error(f"unavailable: {', '.join(down)}", 503, 30, checked_at=checked_at, **checks)
    return jsonify({"status": "ok", "checked_at": checked_at, **checks})

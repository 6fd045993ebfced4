"""Structured logs: one JSON object per line, with whatever context the caller passed.

`log.info("ingest.values_stored", extra={"seq_id": ..., "terms": ...})` becomes
{"ts": ..., "level": "info", "logger": ..., "event": "ingest.values_stored", "seq_id": ..., ...}.
Context that holds for a stretch of work (the sequence id and attempt of the task being
run) is set once with `log_context(...)` and added to every record logged meanwhile;
the worker also adds the task id with a logging.Filter.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


_context: ContextVar[Mapping[str, Any]] = ContextVar("log_context", default=MappingProxyType({}))


def bind_log_context(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add these fields to every record logged in this context until
    `reset_log_context(token)`: for a stretch of work that is not one block (a request,
    from Flask's before_request to its teardown)."""
    return _context.set({**_context.get(), **fields})


def reset_log_context(token: Token[Mapping[str, Any]]) -> None:
    _context.reset(token)


def log_field(name: str) -> Any:
    """A field of the current log context (None if not set)."""
    return _context.get().get(name)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add these fields to every record logged (in this thread) inside the block."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        event.update(_context.get())
        event.update((key, value) for key, value in record.__dict__.items() if key not in _STANDARD)
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

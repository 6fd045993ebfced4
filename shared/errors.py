"""Errors that cross from the workers to the API, each with the HTTP status it means.

Celery stores a failed task's exception by class path and arguments, and the API
rebuilds it, so every error here takes (message, retry_after) positionally.
"""

from __future__ import annotations


class BackscopeError(Exception):
    status = 500

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message, retry_after)
        self.message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


class NotFound(BackscopeError):
    """The OEIS has no such sequence."""

    status = 404


class UpstreamBadData(BackscopeError):
    """The OEIS answered with something we cannot use (malformed, wrong type, too big)."""

    status = 502


class UpstreamUnavailable(BackscopeError):
    """The OEIS (or a service we depend on) cannot answer right now; try again later."""

    status = 503


class Superseded(UpstreamUnavailable):
    """A search whose askers have all searched for something newer since: dropped
    before it cost an OEIS request (shared/search/interest.py)."""

"""The OEIS HTTP client: GET only, rate limited, with timeouts and a size cap.

It turns every way a request can go wrong into one of the errors in shared.errors:
UpstreamUnavailable (throttled, timed out, unreachable: worth retrying later),
UpstreamBadData (an answer we cannot use) or NotFound.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import requests
from urllib3.exceptions import ReadTimeoutError

from shared import metrics
from shared.config import Settings
from shared.errors import NotFound, Superseded, UpstreamBadData, UpstreamUnavailable
from shared.oeis.parsing import (
    BFile,
    Entry,
    parse_bfile,
    parse_entries,
    parse_entry,
    search_results,
)
from shared.oeis.ratelimit import RateLimited, RateLimiter

log = logging.getLogger(__name__)

PAGE_SIZE = 10
_CHUNK = 64 * 1024


def retry_after_seconds(header: str | None) -> int | None:
    """Parse a Retry-After header (seconds or an HTTP date); None if absent or nonsense."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return min(int(header), 3600)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0, min(3600, round(when.timestamp() - time.time())))


# What the OEIS may send a gzipped bulk file as.
BULK_TYPES = ("application/gzip", "application/x-gzip", "application/octet-stream")


class _Transfer:
    """One response being read: its body in chunks, counting bytes against `limit`."""

    def __init__(self, response: requests.Response, path: str, limit: int) -> None:
        self.response = response
        self.path = path
        self.limit = limit
        self.size = 0

    def chunks(self) -> Iterator[bytes]:
        for chunk in self.response.iter_content(_CHUNK):
            self.size += len(chunk)
            if self.size > self.limit:
                raise UpstreamBadData(f"OEIS answer for {self.path} exceeds {self.limit} bytes")
            yield chunk


class OEISClient:
    def __init__(self, settings: Settings, limiter: RateLimiter | None = None) -> None:
        self.settings = settings
        self.base = settings.oeis_url
        self.limiter = limiter
        self.http = requests.Session()
        self.http.headers["User-Agent"] = settings.user_agent

    @contextmanager
    def _request(
        self,
        kind: str,
        path: str,
        params: dict[str, str] | None,
        accepts: tuple[str, ...],
        limit: int,
        headers: dict[str, str] | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> Iterator[_Transfer]:
        """GET `path`, enforcing type, size and timeouts, and turn every failure into
        one of shared.errors. A conditional request (`headers` with If-None-Match or
        If-Modified-Since) may be answered 304: then the transfer has no body.

        Counted in backscope_oeis_requests_total by `kind` (values, metadata, search,
        bulk) and outcome: ok, not_found, throttled (429 or 503), timeout, or error
        (anything else, also an answer we cannot use or a read cut short).

        `wanted()` is asked before waiting for the rate limit and again after: when it
        says no, Superseded is raised and nothing is sent."""
        if wanted is not None and not wanted():
            raise Superseded(f"nobody wants {path} any more")
        if self.limiter:
            try:
                self.limiter.wait()
            except RateLimited as exc:
                raise UpstreamUnavailable(
                    str(exc), retry_after=max(1, round(exc.retry_in))
                ) from exc
        if wanted is not None and not wanted():
            raise Superseded(f"nobody wants {path} any more")
        started = time.monotonic()
        transfer: _Transfer | None = None
        status = None
        outcome = "error"
        try:
            with self.http.get(
                self.base + path,
                params=params,
                headers=headers,
                stream=True,
                timeout=(self.settings.oeis_connect_timeout, self.settings.oeis_read_timeout),
                allow_redirects=False,
            ) as response:
                status = response.status_code
                if not (status == 304 and headers):
                    self._check(response, path, accepts, limit)
                transfer = _Transfer(response, path, limit)
                yield transfer
            outcome = "ok"
        except NotFound:
            outcome = "not_found"
            raise
        except UpstreamUnavailable:
            outcome = "throttled" if status in (429, 503) else "error"
            raise
        except requests.Timeout as exc:
            outcome = "timeout"
            raise UpstreamUnavailable(f"the OEIS did not answer {path} in time") from exc
        except requests.RequestException as exc:
            # A read that times out in the middle of the body comes as a ConnectionError.
            if exc.args and isinstance(exc.args[0], ReadTimeoutError):
                outcome = "timeout"
                raise UpstreamUnavailable(f"the OEIS did not answer {path} in time") from exc
            raise UpstreamUnavailable(f"could not reach the OEIS for {path}") from exc
        finally:
            seconds = time.monotonic() - started
            metrics.oeis_requests.labels(kind, outcome).inc()
            metrics.oeis_duration.labels(kind).observe(seconds)
            log.info(
                "oeis.request",
                extra={
                    "path": path,
                    "status": status,
                    "bytes": transfer.size if transfer else 0,
                    "outcome": outcome,
                    "duration_ms": round(seconds * 1000),
                },
            )

    def _lines(
        self,
        kind: str,
        path: str,
        params: dict[str, str] | None,
        accept: str,
        wanted: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """GET `path` and yield the body's lines (see _request)."""
        limit = self.settings.oeis_max_bytes
        with self._request(kind, path, params, (accept,), limit, wanted=wanted) as got:
            # The pieces of the line not finished yet: joined once, when its end comes
            # (re-joining a growing buffer for every chunk would be quadratic in a long
            # line, e.g. a search answer that is one line of JSON).
            pending: list[bytes] = []
            for chunk in got.chunks():
                if b"\n" not in chunk:
                    pending.append(chunk)
                    continue
                first, *lines, last = chunk.split(b"\n")
                yield b"".join([*pending, first]).decode("utf-8", "replace")
                for line in lines:
                    yield line.decode("utf-8", "replace")
                pending = [last]
            if any(pending):
                yield b"".join(pending).decode("utf-8", "replace")

    def _check(
        self, response: requests.Response, path: str, accepts: tuple[str, ...], limit: int
    ) -> None:
        status = response.status_code
        if status in (429, 503) or status >= 500:
            raise UpstreamUnavailable(
                f"the OEIS answered {status} for {path}",
                retry_after_seconds(response.headers.get("Retry-After")),
            )
        if status == 404:
            raise NotFound(f"the OEIS has no {path}")
        if status != 200:
            raise UpstreamBadData(f"the OEIS answered {status} for {path}")
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in accepts:
            raise UpstreamBadData(
                f"the OEIS answered {path} with {content_type or 'no content type'},"
                f" not {' or '.join(accepts)}"
            )
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise UpstreamBadData(f"OEIS answer for {path} is {length} bytes, over the cap")

    def download(
        self,
        path: str,
        into: BinaryIO,
        validators: dict[str, str],
        progress: Callable[[int, int | None], None] | None = None,
    ) -> dict[str, str] | None:
        """Download a bulk file (`/names.gz`) into `into`, unless it has not changed
        since the download that gave `validators` (its ETag and Last-Modified): then
        None, and nothing is written. Otherwise the new validators. `progress(bytes,
        total)` is called as it goes (total None when the OEIS does not say)."""
        headers = {}
        if validators.get("etag"):
            headers["If-None-Match"] = validators["etag"]
        if validators.get("last_modified"):
            headers["If-Modified-Since"] = validators["last_modified"]
        with self._request(
            "bulk", path, None, BULK_TYPES, self.settings.bulk_max_bytes, headers or None
        ) as got:
            if got.response.status_code == 304:
                return None
            length = got.response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            for chunk in got.chunks():
                into.write(chunk)
                if progress:
                    progress(got.size, total)
            found = {
                "etag": got.response.headers.get("ETag", ""),
                "last_modified": got.response.headers.get("Last-Modified", ""),
            }
        return {key: value for key, value in found.items() if value}

    def bfile(self, seq_id: str) -> BFile:
        number = seq_id[1:]
        return parse_bfile(
            self._lines("values", f"/{seq_id}/b{number}.txt", None, "text/plain"), seq_id
        )

    def _search(
        self, kind: str, query: str, start: int = 0, wanted: Callable[[], bool] | None = None
    ) -> Any:
        params = {"q": query, "fmt": "json"}
        if start:
            params["start"] = str(start)
        body = "\n".join(self._lines(kind, "/search", params, "application/json", wanted))
        try:
            return json.loads(body)
        except ValueError as exc:
            raise UpstreamBadData(f"the OEIS search for {query[:60]!r} is not JSON") from exc

    def search(
        self, query: str, start: int = 0, wanted: Callable[[], bool] | None = None
    ) -> list[Entry]:
        """A page of search results; Superseded (nothing sent) when `wanted()` says no."""
        return parse_entries(self._search("search", query, start, wanted))

    def entry(self, seq_id: str) -> Entry:
        """The one entry for `seq_id`; NotFound if the OEIS has none."""
        for entry in parse_entries(self._search("metadata", f"id:{seq_id}")):
            if entry.id == seq_id:
                return entry
        raise NotFound(f"the OEIS has no sequence {seq_id}")

    def mentions(self, seq_id: str, max_pages: int) -> tuple[list[str], bool]:
        """Ids of the other sequences that mention `seq_id`, paging through the results.

        Returns (sorted ids, complete); complete is False if max_pages cut it short.
        """
        found: set[str] = set()
        for page in range(max_pages):
            # Back-references are part of a sequence's metadata.
            results = search_results(self._search("metadata", seq_id, start=page * PAGE_SIZE))
            found.update(entry.id for entry in map(parse_entry, results) if entry)
            if len(results) < PAGE_SIZE:
                found.discard(seq_id)
                return sorted(found), True
        found.discard(seq_id)
        return sorted(found), False

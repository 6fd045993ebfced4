"""A fake OEIS (oeis.org) for tests, demos and benchmarks.

A real HTTP server on 127.0.0.1 that imitates the parts of the OEIS Backscope reads:

* ``GET /A000045/b000045.txt``: b-files (``text/plain``); unknown ids get the OEIS's
  404 HTML page;
* ``GET /search?q=...&fmt=json[&start=N]``: searches by ``id:A000045``, by a bare
  A-number (back-references) or by a term in the name, 10 results per page, in the
  current shape (a bare list, or ``null``) or the legacy object shape.

Sequences come from the fixtures in ``tests/fixtures/oeis`` (see its README), plus
sequences made up on the fly: A910000..A919999 (``a(n) = n*K``, 1000 terms), A999998
(10,000 terms of 1000 digits each) and A999999 (100,000 of them, streamed, about 100 MB).

Failure modes are switched on with plain attributes (``latency``, ``throttle``,
``throttle_always``, ``retry_after``, ``malformed``, ``hang``, ``hang_after_bytes``,
``legacy_shape``, ``oversize``), read on every request, or over HTTP for other
processes: ``GET /_fake/stats``, ``GET|POST /_fake/config``, ``POST /_fake/reset``.

The OEIS is edited every day: :meth:`FakeOEIS.publish` (or ``POST /_fake/publish``)
publishes a new revision of a sequence at run time (terms appended or changed, a new
name), with its ``revision`` bumped and its ``time`` set to now, until :meth:`reset`.

Use it in tests::

    with FakeOEIS() as oeis:
        oeis.throttle = 2
        requests.get(f"{oeis.url}/A000045/b000045.txt", timeout=5)

or standalone (``make demo``, benchmarks)::

    python -m tests.fake_oeis --port 8099 [--latency 0.5]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DEFAULT_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "oeis"

#: Results per search page, as on the OEIS.
PAGE_SIZE = 10
#: A hung request gives up after this long (seconds) and closes the connection.
MAX_HANG_SECONDS = 120.0
#: Hung requests re-check their switch this often (seconds).
HANG_STEP = 0.02

#: Ids A910000..A919999 are made up on the fly: a(n) = n*K, n = 0..999.
SYNTHETIC_FIRST = 910000
SYNTHETIC_LAST = 919999
SYNTHETIC_TERMS = 1000
#: A999999 is made up on the fly: a(n) = 10^999 + n, n = 0..99999, streamed.
BIG_NUMBER = 999999
BIG_TERMS = 100_000
BIG_DIGITS = 1000

#: Made up on the fly, as the two sequences the front end's stress tests name:
#: A241292 starts at index 3,638,334,640,025 (1,200 terms: a(n) = (n - first)^2), and
#: A000521 is j-function-like: 10,000 terms from index -1, growing to about 550 digits
#: (a 3.7 MB b-file; see _j_value).
FAR_NUMBER, FAR_FIRST, FAR_TERMS = 241292, 3638334640025, 1200
J_NUMBER, J_FIRST, J_TERMS = 521, -1, 10_000
#: A999998 is made up on the fly for `make bench`: 10,000 terms of 1000 digits that look
#: random (so gzip cannot make them small), a sequence whose answer is about 10 MB.
WIDE_NUMBER, WIDE_TERMS = 999998, 10_000

#: Line inserted in the middle of a b-file whose id is in ``malformed``.
MALFORMED_LINE = "this line is not a number"

GREETING = "Greetings from The On-Line Encyclopedia of Integer Sequences! http://oeis.org/"
TEXT_PLAIN = "text/plain; charset=utf-8"
TEXT_HTML = "text/html; charset=utf-8"
APPLICATION_JSON = "application/json"
APPLICATION_GZIP = "application/gzip"
#: The OEIS's two bulk files (shared/spec/oeis.md, "Bulk files"), made from every entry
#: the fake knows by name: the fixtures and the catalogue (see its README).
BULK_PATHS = ("/names.gz", "/stripped.gz")
BULK_HEADER = (
    "# Greetings from The On-Line Encyclopedia of Integer Sequences! http://oeis.org/\n"
    "# This is the fake OEIS of Backscope's tests: its fixtures and catalogue only.\n"
    "# Last Modified: January 15 2024\n"
    "# Use of this content is governed by the\n"
    "#     OEIS End-User License: http://oeis.org/LICENSE\n"
)

NOT_FOUND_HTML = (
    b"<!DOCTYPE html>\n<html>\n<head><title>The On-Line Encyclopedia of Integer Sequences"
    b"</title></head>\n<body>\n<h2>Sorry, the page you requested was not found</h2>\n"
    b'<p>Go back to the <a href="/">OEIS home page</a>.</p>\n</body>\n</html>\n'
)
THROTTLED_HTML = (
    b"<!DOCTYPE html>\n<html>\n<head><title>OEIS: too many requests</title></head>\n"
    b"<body>\n<p>You are crawling too fast. Come back in a few minutes.</p>\n"
    b"</body>\n</html>\n"
)
SEARCH_HTML = (
    b"<!DOCTYPE html>\n<html>\n<head><title>OEIS search results</title></head>\n"
    b"<body>\n<p>This is the HTML search page. The fake OEIS answers searches in JSON "
    b"only: add fmt=json.</p>\n</body>\n</html>\n"
)

_BFILE_PATH = re.compile(r"/A(\d{6})/b(\d{6})\.txt")
_SEQ_ID = re.compile(r"A(\d{6})", re.IGNORECASE)

#: Switches holding sets of ids (JSON lists over HTTP).
_SET_SWITCHES = ("malformed", "oversize")


@dataclass
class Request:
    """One request the fake received (control paths excluded).

    ``status`` is 0 while the request has not been answered, and stays 0 if it never
    was (it hung until the client went away or the server stopped).
    """

    time: float
    path: str
    query: dict[str, str]
    status: int = 0


# A response body: an iterable of byte chunks and its length (None: chunked encoding).
_Body = tuple[Iterable[bytes], int | None]
_Response = tuple[int, str, Iterable[bytes], int | None]


def _normalize_id(seq_id: str) -> str:
    """``"a45"``-style ids are not accepted; ``"a000045"`` becomes ``"A000045"``."""
    if not _SEQ_ID.fullmatch(seq_id):
        raise ValueError(f"not an OEIS id: {seq_id!r}")
    return seq_id.upper()


def _offset_field(first_index: int, values: Iterable[int]) -> str:
    """``first_index,position`` where position is that of the first term with |a(n)| > 1."""
    position = next((i + 1 for i, v in enumerate(values) if abs(v) > 1), 1)
    return f"{first_index},{position}"


def _data_field(values: Iterable[int], limit: int = 260) -> str:
    """Leading terms, comma-separated, at most ``limit`` characters (at least one term)."""
    out: list[str] = []
    length = 0
    for v in values:
        s = str(v)
        if out and length + len(s) + 1 > limit:
            break
        length += len(s) + (1 if out else 0)
        out.append(s)
    return ",".join(out)


def _synthetic_factor(number: int) -> tuple[int, int]:
    """(N, K) of the synthetic sequence A<number>: "Synthetic sequence N: a(n) = n*K"."""
    n = number - SYNTHETIC_FIRST
    return n, n + 1


def _big_line(n: int) -> str:
    """Line ``n`` of A999999's b-file: ``n 10^999 + n`` (1000 digits)."""
    return f"{n} 1{n:0{BIG_DIGITS - 1}d}\n"


def _far_values() -> list[int]:
    return [i * i for i in range(FAR_TERMS)]


def _j_value(n: int) -> int:
    """Term ``n`` of the j-function-like A000521: 1, 744, then about 5.46*sqrt(n) digits
    (the size of the real coefficients, e^(4 pi sqrt(n)) / (sqrt(2) n^(3/4)))."""
    if n < 1:
        return (1, 744)[n + 1]
    return 10 ** int(5.46 * n**0.5) + 196883 * n + 1


def _made_up_values(number: int) -> tuple[int, list[int]] | None:
    """(first index, values) of a sequence the fake makes up on the fly, other than the
    synthetic and big ones."""
    if number == FAR_NUMBER:
        return FAR_FIRST, _far_values()
    if number == J_NUMBER:
        return J_FIRST, [_j_value(n) for n in range(J_FIRST, J_FIRST + J_TERMS)]
    if number == WIDE_NUMBER:
        top = 10 ** (BIG_DIGITS - 1)
        return 0, [top + 7**1183 * (n + 1) % top for n in range(WIDE_TERMS)]
    return None


def _bfile_terms(data: bytes) -> tuple[int, list[str]]:
    """(first index, values) of a well-formed b-file."""
    rows = [line.split() for line in data.decode().splitlines()]
    rows = [row for row in rows if row and not row[0].startswith("#")]
    return int(rows[0][0]), [value for _, value in rows]


def _insert_malformed(data: bytes) -> bytes:
    """Insert a non-numeric line in the middle of a b-file."""
    lines = data.splitlines(keepends=True)
    lines.insert(len(lines) // 2, (MALFORMED_LINE + "\n").encode())
    return b"".join(lines)


class _Server(ThreadingHTTPServer):
    """The HTTP server, pointing back at its :class:`FakeOEIS`."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeOEIS) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients going away mid-response are normal here; report anything else."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Answers one connection's requests (HTTP/1.1, keep-alive)."""

    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "FakeOEIS/1.0"
    timeout = 60

    # ------------------------------------------------------------------ plumbing

    def version_string(self) -> str:
        """The Server header."""
        return self.server_version

    def setup(self) -> None:
        """Register the connection so that :meth:`FakeOEIS.stop` can close it."""
        super().setup()
        self.server.fake._register(self.connection)

    def finish(self) -> None:
        """Unregister the connection."""
        try:
            super().finish()
        finally:
            self.server.fake._unregister(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Log only when the fake is verbose (standalone ``--verbose``)."""
        if self.server.fake.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        """Handle a GET."""
        self._dispatch("GET")

    def do_POST(self) -> None:
        """Handle a POST (control paths only)."""
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            if url.path.startswith("/_fake/"):
                self._control(method, url.path)
            else:
                self._serve(method, url.path, query)
        except OSError:  # the client went away, or stop() closed the connection
            self.close_connection = True

    # ------------------------------------------------------------------ control

    def _control(self, method: str, path: str) -> None:
        fake = self.server.fake
        body = b""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length)
        if path == "/_fake/stats" and method == "GET":
            payload: Any = {
                "requests": [asdict(r) for r in fake._snapshot()],
                "config": fake.switches(),
            }
        elif path == "/_fake/config" and method == "GET":
            payload = fake.switches()
        elif path == "/_fake/config" and method == "POST":
            try:
                settings = json.loads(body or b"{}")
                if not isinstance(settings, dict):
                    raise ValueError("the body must be a JSON object")
                fake.configure(**settings)
            except (ValueError, TypeError) as exc:
                self._send_simple(400, APPLICATION_JSON, json.dumps({"error": str(exc)}))
                return
            payload = fake.switches()
        elif path == "/_fake/reset" and method == "POST":
            fake.reset()
            payload = fake.switches()
        elif path == "/_fake/publish" and method == "POST":
            try:
                edit = json.loads(body or b"{}")
                if not isinstance(edit, dict) or not isinstance(edit.get("id"), str):
                    raise ValueError('the body must be a JSON object with an "id"')
                payload = fake.publish(
                    edit["id"],
                    append=edit.get("append", []),
                    change={int(k): v for k, v in (edit.get("change") or {}).items()},
                    name=edit.get("name"),
                )
            except (ValueError, TypeError, AttributeError) as exc:
                self._send_simple(400, APPLICATION_JSON, json.dumps({"error": str(exc)}))
                return
        else:
            self._send_simple(404, TEXT_HTML, NOT_FOUND_HTML)
            return
        self._send_simple(200, APPLICATION_JSON, json.dumps(payload))

    def _send_simple(self, status: int, ctype: str, body: bytes | str) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # ------------------------------------------------------------------ OEIS

    def _serve(self, method: str, path: str, query: dict[str, str]) -> None:
        fake = self.server.fake
        record = fake._record(path, query)
        if fake.latency > 0 and fake._stopping.wait(fake.latency):
            self.close_connection = True
            return
        if fake.hang and not self._wait_while(lambda: fake.hang):
            self.close_connection = True
            return
        if fake._take_throttle():
            self._send(
                record,
                (503, TEXT_HTML, [THROTTLED_HTML], len(THROTTLED_HTML)),
                {"Retry-After": str(fake.retry_after)},
            )
            return
        if method == "GET" and path in BULK_PATHS:
            body = fake.bulk_file(path[1:])
            tag = f'"{hashlib.md5(body).hexdigest()}"'
            if self.headers.get("If-None-Match") == tag:
                self._send(record, (304, APPLICATION_GZIP, [], 0), {"ETag": tag})
            else:
                self._send(record, (200, APPLICATION_GZIP, [body], len(body)), {"ETag": tag})
            return
        self._send(record, fake._route(method, path, query))

    def _wait_while(self, condition: Callable[[], bool]) -> bool:
        """Sleep while ``condition()``; False if the server stopped or 120 s passed."""
        fake = self.server.fake
        deadline = time.monotonic() + MAX_HANG_SECONDS
        while condition():
            if fake._stopping.wait(HANG_STEP) or time.monotonic() > deadline:
                return False
        return True

    def _send(
        self, record: Request, response: _Response, headers: dict[str, str] | None = None
    ) -> None:
        """Send a response, streaming the body; honours ``hang_after_bytes`` on 200s."""
        fake = self.server.fake
        status, ctype, chunks, length = response
        chunked = length is None
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        hang_after = fake.hang_after_bytes if status == 200 else None
        sent = 0
        for chunk in chunks:
            if hang_after is not None and sent + len(chunk) > hang_after:
                self._write(chunk[: max(hang_after - sent, 0)], chunked)
                self._wait_while(lambda: fake.hang_after_bytes is not None)
                self.close_connection = True
                return
            self._write(chunk, chunked)
            sent += len(chunk)
            if fake._stopping.is_set():
                self.close_connection = True
                return
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _write(self, data: bytes, chunked: bool) -> None:
        if not data:
            return
        if chunked:
            self.wfile.write(b"%X\r\n%b\r\n" % (len(data), data))
        else:
            self.wfile.write(data)


class FakeOEIS:
    """A fake OEIS HTTP server on 127.0.0.1 (see the module docstring).

    Start it with :meth:`start` (or ``with FakeOEIS() as oeis:``), point the code under
    test at :attr:`url`, flip the switches, and inspect :attr:`requests`.
    """

    #: Default values of the switches; :meth:`reset` restores them.
    DEFAULTS: dict[str, Any] = {  # noqa: RUF012
        "latency": 0.0,
        "throttle": 0,
        "throttle_always": False,
        "retry_after": 1,
        "malformed": frozenset(),
        "hang": False,
        "hang_after_bytes": None,
        "legacy_shape": False,
        "oversize": frozenset(),
    }

    def __init__(
        self, fixtures_dir: Path = DEFAULT_FIXTURES, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.fixtures_dir = Path(fixtures_dir)
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        #: Log every request to stderr (standalone ``--verbose``).
        self.verbose = False

        # Switches (plain attributes, read on every request).
        #: Seconds to sleep before answering every request.
        self.latency: float = 0.0
        #: The next N requests are answered 503 "You are crawling too fast".
        self.throttle: int = 0
        #: Every request is answered 503 "You are crawling too fast".
        self.throttle_always: bool = False
        #: Value of the Retry-After header of the 503 answers.
        self.retry_after: int = 1
        #: Ids whose b-file is served with a non-numeric line in the middle.
        self.malformed: set[str] = set()
        #: Requests send nothing until this is cleared (or stop(), or 120 s).
        self.hang: bool = False
        #: If set, 200 answers send this many body bytes, then hang until it is cleared.
        self.hang_after_bytes: int | None = None
        #: Searches answer in the legacy ``{"greeting", ..., "results"}`` shape.
        self.legacy_shape: bool = False
        #: Ids whose b-file is endless (chunked, valid lines forever).
        self.oversize: set[str] = set()

        #: Every request received, control paths excluded.
        self.requests: list[Request] = []
        #: A folder whose names.gz and stripped.gz are served instead of the ones made
        #: from the fixtures (``--bulk-dir``; say, a synthetic OEIS of full size).
        self.bulk_dir: Path | None = None
        #: What :meth:`reset` sets ``bulk_dir`` back to.
        self.default_bulk_dir: Path | None = None

        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._bfile_cache: dict[int, bytes | None] = {}
        # New revisions published at run time (publish), until reset: entries, b-files.
        self._published: dict[int, dict[str, Any]] = {}
        self._published_bfiles: dict[int, bytes] = {}
        self._entries = self._load_entries()
        catalogue = self.fixtures_dir / "catalogue.json"
        self._catalogue: dict[int, dict[str, Any]] = {
            entry["number"]: entry
            for entry in (json.loads(catalogue.read_text("utf-8")) if catalogue.is_file() else [])
        }
        self._texts = {n: json.dumps(e, ensure_ascii=False) for n, e in self._entries.items()}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeOEIS:
        """Start serving in a background thread; returns self."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-oeis-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: ends hung requests and closes every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOEIS:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ switches

    def reset(self) -> None:
        """Clear the recorded requests, set every switch back to its default and forget
        the revisions published since the start."""
        with self._lock:
            self.requests.clear()
            self._published.clear()
            self._published_bfiles.clear()
        self.bulk_dir = self.default_bulk_dir
        self.configure(**self.DEFAULTS)

    def publish(
        self,
        seq_id: str,
        append: Iterable[int | str] = (),
        change: Mapping[int, int | str] | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Publish a new revision of ``seq_id``, as an OEIS editor would: ``append`` terms
        to its b-file, ``change`` terms (index -> value), give it a new ``name``. Its
        ``revision`` goes up by one and its ``time`` becomes now. Returns the new entry.

        Raises ValueError for an unknown sequence, an index it does not have, a value
        that is not an integer, or A999999 (streamed, never held whole).
        """
        seq_id = _normalize_id(seq_id)
        number = int(seq_id[1:])
        entry = self.entry(number)
        data = self._published_bfiles.get(number) or self._base_bfile(number)
        if entry is None or data is None:
            raise ValueError(f"the fake OEIS cannot publish {seq_id}")
        first, values = _bfile_terms(data)
        for index, value in (change or {}).items():
            if not 0 <= index - first < len(values):
                raise ValueError(f"{seq_id} has no index {index}")
            values[index - first] = str(int(value))
        values += [str(int(value)) for value in append]
        entry = {
            **entry,
            "name": entry["name"] if name is None else name,
            "revision": entry["revision"] + 1,
            "time": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        bfile = "".join(f"{first + i} {value}\n" for i, value in enumerate(values)).encode()
        with self._lock:
            self._published[number] = entry
            self._published_bfiles[number] = bfile
        return entry

    def bulk_file(self, name: str) -> bytes:
        """names.gz or stripped.gz as the OEIS would serve them now: every entry known
        by name (the catalogue, the fixtures as currently published), in A-number order."""
        if self.bulk_dir is not None:
            return (self.bulk_dir / name).read_bytes()
        with self._lock:
            entries = {**self._catalogue, **self._entries, **self._published}
        lines = [BULK_HEADER]
        for number in sorted(entries):
            entry = entries[number]
            text = entry["name"] if name == "names.gz" else f",{entry['data']},"
            lines.append(f"A{number:06d} {text}\n")
        return gzip.compress("".join(lines).encode(), mtime=0)

    def catalogue(self) -> dict[int, dict[str, Any]]:
        """The entries the fake knows only for its bulk files (number -> entry)."""
        return dict(self._catalogue)

    def configure(self, **switches: Any) -> None:
        """Set switches by name, coercing JSON values (lists become sets of ids).

        Raises ValueError (or TypeError) for an unknown switch or a bad value.
        """
        coerced: dict[str, Any] = {}
        for name, value in switches.items():
            if name not in self.DEFAULTS:
                raise ValueError(f"unknown switch: {name!r}")
            coerced[name] = self._coerce(name, value)
        for name, value in coerced.items():
            if name in _SET_SWITCHES:
                current: set[str] = getattr(self, name)
                current.clear()
                current.update(value)
            else:
                setattr(self, name, value)

    @staticmethod
    def _coerce(name: str, value: Any) -> Any:
        default = FakeOEIS.DEFAULTS[name]
        if name in _SET_SWITCHES:
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise TypeError(f"{name} must be a list of ids")
            return {_normalize_id(str(v)) for v in value}
        if name == "hang_after_bytes":
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TypeError("hang_after_bytes must be a non-negative integer or null")
            return value
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a boolean")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number")
        if value < 0:
            raise ValueError(f"{name} must not be negative")
        return float(value) if isinstance(default, float) else int(value)

    def switches(self) -> dict[str, Any]:
        """The current switches as JSON-ready values (sets as sorted lists)."""
        out: dict[str, Any] = {}
        for name in self.DEFAULTS:
            value = getattr(self, name)
            out[name] = sorted(value) if name in _SET_SWITCHES else value
        return out

    # ------------------------------------------------------------------ counters

    def count(self, path_prefix: str = "") -> int:
        """Number of requests whose path starts with ``path_prefix``."""
        return sum(1 for r in self._snapshot() if r.path.startswith(path_prefix))

    def bfile_downloads(self, seq_id: str) -> int:
        """Number of requests (any status) for the b-file of ``seq_id`` ("A000045")."""
        seq_id = _normalize_id(seq_id)
        path = f"/{seq_id}/b{seq_id[1:]}.txt"
        return sum(1 for r in self._snapshot() if r.path == path)

    def _snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def _record(self, path: str, query: dict[str, str]) -> Request:
        record = Request(time=time.time(), path=path, query=query)
        with self._lock:
            self.requests.append(record)
        return record

    def _take_throttle(self) -> bool:
        with self._lock:
            if self.throttle_always:
                return True
            if self.throttle > 0:
                self.throttle -= 1
                return True
            return False

    def _register(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _unregister(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    # ------------------------------------------------------------------ data

    def _load_entries(self) -> dict[int, dict[str, Any]]:
        entries_dir = self.fixtures_dir / "entries"
        if not entries_dir.is_dir():
            raise FileNotFoundError(
                f"no fixtures in {entries_dir}; run tests/fixtures/make_fixtures.py"
            )
        entries: dict[int, dict[str, Any]] = {}
        for path in sorted(entries_dir.glob("A*.json")):
            entry = json.loads(path.read_text(encoding="utf-8"))
            if path.stem != f"A{entry['number']:06d}":
                raise ValueError(f"{path}: number {entry['number']} does not match the name")
            entries[entry["number"]] = entry
        return entries

    def entry(self, number: int) -> dict[str, Any] | None:
        """The search-result object of A<number>, or None if the fake does not know it."""
        if number in self._published:
            return self._published[number]
        if number in self._entries:
            return self._entries[number]
        if SYNTHETIC_FIRST <= number <= SYNTHETIC_LAST:
            n, k = _synthetic_factor(number)
            values = [i * k for i in range(SYNTHETIC_TERMS)]
            name = f"Synthetic sequence {n}: a(n) = n*{k}"
            return self._made_up_entry(number, values, name, SYNTHETIC_TERMS)
        if number == BIG_NUMBER:
            values = [10 ** (BIG_DIGITS - 1)]
            name = "Synthetic sequence: a(n) = 10^999 + n (100000 terms of 1000 digits)"
            return self._made_up_entry(number, values, name, BIG_TERMS)
        made_up = _made_up_values(number)
        if made_up is not None:
            first, values = made_up
            name = f"Test fixture shaped like A{number:06d}: {len(values)} terms from {first}"
            return self._made_up_entry(number, values[:20], name, len(values), first)
        return None

    @staticmethod
    def _made_up_entry(
        number: int, values: list[int], name: str, terms: int, first: int = 0
    ) -> dict[str, Any]:
        seq_id = f"A{number:06d}"
        return {
            "number": number,
            "data": _data_field(values),
            "name": name,
            "comment": ["Made up by the fake OEIS for load tests; not a real OEIS entry."],
            "link": [
                f'Fake OEIS, <a href="/{seq_id}/b{seq_id[1:]}.txt">'
                f"Table of n, a(n) for n = {first}..{first + terms - 1}</a>"
            ],
            "keyword": "nonn,easy",
            "offset": _offset_field(first, values),
            "author": "_Fake OEIS_",
            "references": 0,
            "revision": 1,
            "time": "2024-01-15T10:00:00-05:00",
            "created": "2024-01-15T10:00:00-05:00",
        }

    def _fixture_bfile(self, number: int) -> bytes | None:
        with self._lock:
            if number in self._bfile_cache:
                return self._bfile_cache[number]
        path = self.fixtures_dir / "bfiles" / f"b{number:06d}.txt"
        data = path.read_bytes() if path.is_file() else None
        with self._lock:
            self._bfile_cache[number] = data
        return data

    def _base_bfile(self, number: int) -> bytes | None:
        """The b-file of A<number> as first served (not A999999's), or None if unknown."""
        made_up = _made_up_values(number)
        if SYNTHETIC_FIRST <= number <= SYNTHETIC_LAST:
            _, k = _synthetic_factor(number)
            return "".join(f"{i} {i * k}\n" for i in range(SYNTHETIC_TERMS)).encode()
        if made_up is not None:
            first, values = made_up
            return "".join(f"{first + i} {v}\n" for i, v in enumerate(values)).encode()
        if number not in self._entries:
            return None
        return self._fixture_bfile(number)

    def _bfile(self, number: int) -> _Body | None:
        """The body of A<number>'s b-file, or None if unknown."""
        seq_id = f"A{number:06d}"
        if seq_id in self.oversize:
            entry = self.entry(number)
            first = int(entry["offset"].split(",")[0]) if entry else 0
            return self._endless(first), None
        malformed = seq_id in self.malformed
        if number == BIG_NUMBER:
            return self._big_bfile(malformed)
        data = self._published_bfiles.get(number) or self._base_bfile(number)
        if data is None:
            return None
        if malformed:
            data = _insert_malformed(data)
        return [data], len(data)

    def _big_bfile(self, malformed: bool) -> _Body:
        """A999999's b-file, generated while it is written (about 100 MB)."""
        junk = (MALFORMED_LINE + "\n").encode()
        middle = BIG_TERMS // 2
        length = sum(len(str(n)) for n in range(BIG_TERMS)) + BIG_TERMS * (BIG_DIGITS + 2)
        if malformed:
            length += len(junk)

        def chunks() -> Iterator[bytes]:
            step = 64
            for start in range(0, BIG_TERMS, step):
                if malformed and start == middle:
                    yield junk
                yield "".join(
                    _big_line(n) for n in range(start, min(start + step, BIG_TERMS))
                ).encode()

        return chunks(), length

    def _endless(self, first: int) -> Iterator[bytes]:
        """Valid b-file lines forever (for response-size caps)."""
        n = first
        while not self._stopping.is_set():
            yield "".join(f"{i} 1{abs(i):099d}\n" for i in range(n, n + 100)).encode()
            n += 100

    def _route(self, method: str, path: str, query: dict[str, str]) -> _Response:
        not_found: _Response = (404, TEXT_HTML, [NOT_FOUND_HTML], len(NOT_FOUND_HTML))
        if method != "GET":
            return not_found
        match = _BFILE_PATH.fullmatch(path)
        if match:
            if match[1] != match[2]:
                return not_found
            body = self._bfile(int(match[1]))
            if body is None:
                return not_found
            return (200, TEXT_PLAIN, *body)
        if path == "/search":
            if query.get("fmt") != "json":
                return 200, TEXT_HTML, [SEARCH_HTML], len(SEARCH_HTML)
            data = self._search_json(query.get("q", ""), query.get("start", "0"))
            return 200, APPLICATION_JSON, [data], len(data)
        return not_found

    def search(self, q: str) -> list[dict[str, Any]]:
        """Every result of the search ``q`` (all pages), in the order they are paged."""
        q = q.strip()
        if q[:3].lower() == "id:":
            match = _SEQ_ID.fullmatch(q[3:].strip())
            entry = self.entry(int(match[1])) if match else None
            return [entry] if entry else []
        # The fixtures as currently published (searches other than id: see only them).
        entries = {n: self._published.get(n, entry) for n, entry in self._entries.items()}
        match = _SEQ_ID.fullmatch(q)
        if match:
            number = int(match[1])
            mention = re.compile(rf"(?<![0-9A-Za-z])A{number:06d}(?![0-9])")
            own = [entries[number]] if number in entries else []
            others = [
                entries[n] for n in sorted(entries) if n != number and mention.search(self._text(n))
            ]
            return own + others
        if not q:
            return []
        term = q.casefold()
        return [entries[n] for n in sorted(entries) if term in entries[n]["name"].casefold()]

    def _text(self, number: int) -> str:
        """A fixture entry as JSON text, as currently published."""
        if number in self._published:
            return json.dumps(self._published[number], ensure_ascii=False)
        return self._texts[number]

    def _search_json(self, q: str, start_param: str) -> bytes:
        try:
            start = max(int(start_param), 0)
        except ValueError:
            start = 0
        results = self.search(q)
        page = results[start : start + PAGE_SIZE] or None
        if self.legacy_shape:
            legacy = {
                "greeting": GREETING,
                "query": q,
                "count": len(results),
                "start": start,
                "results": page,
            }
            text = json.dumps(legacy, indent="\t", ensure_ascii=False)
        else:
            text = json.dumps(page, indent=1, ensure_ascii=False)
        return (text + "\n").encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the fake OEIS in the foreground until Ctrl-C (or SIGTERM)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_oeis", description="Serve a fake OEIS for demos and tests."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8099, help="port (8099; 0 = any free)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES, help="fixtures dir")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument(
        "--bulk-dir", type=Path, help="serve names.gz and stripped.gz from this folder"
    )
    args = parser.parse_args(argv)

    fake = FakeOEIS(args.fixtures, host=args.host, port=args.port)
    fake.latency = args.latency
    fake.verbose = args.verbose
    fake.bulk_dir = fake.default_bulk_dir = args.bulk_dir

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    fake.start()
    print(f"Fake OEIS serving at {fake.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

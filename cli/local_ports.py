"""The ports of the project's own servers: 127.0.0.1, 20000-32767 (PORTS), kept in
BACKSCOPE_DATA_DIR/ports.json so that a restart finds the same ones while they are free."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Iterator
from pathlib import Path

from cli.local_common import EmbeddedError

START_ATTEMPTS = 3  # each on another port, should another program take the chosen one
# The servers' ports: below the kernels' ephemeral ranges (Linux 32768-60999, macOS
# 49152-65535), so that no outgoing connection takes a server's port while it is down.
PORTS = range(20000, 32768)


def port_free(port: int) -> bool:
    """Whether a server could listen on `port` now (servers set SO_REUSEADDR, so the
    connections of a server just stopped, waiting out TIME_WAIT, do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    for _ in range(100):
        if port_free(port := random.choice(PORTS)):
            return port
    raise EmbeddedError(f"no free port between {PORTS.start} and {PORTS.stop - 1}")


class Ports:
    """The port each server ("postgres", "redis") listened on last, in `file`."""

    def __init__(self, file: Path) -> None:
        self._file = file

    def _read(self) -> dict[str, int]:
        try:
            return json.loads(self._file.read_text())
        except (OSError, ValueError):
            return {}

    def last(self, kind: str) -> int | None:
        return self._read().get(kind)

    def candidates(self, kind: str) -> Iterator[int]:
        """The port used last time while it is free, then free ones."""
        last = self.last(kind)
        for attempt in range(START_ATTEMPTS):
            yield last if attempt == 0 and last and port_free(last) else _free_port()

    def remember(self, kind: str, port: int) -> None:
        self._file.write_text(json.dumps({**self._read(), kind: port}) + "\n")

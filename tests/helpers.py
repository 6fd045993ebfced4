"""Small helpers shared by tests that wait on real workers."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def get_until_200(client, path: str, timeout: float = 60):
    """GET `path`, repeating while the answer is 202 (as the front end does)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(path)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        assert response.status_code == 202, response.get_json()
        time.sleep(0.1)


def get_until_complete(client, path: str, timeout: float = 60):
    """GET a factors `path`, repeating while the answer is 202 or "complete": false."""
    deadline = time.monotonic() + timeout
    while True:
        response = get_until_200(client, path, timeout)
        if response.status_code != 200 or response.get_json()["complete"]:
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} still incomplete after {timeout} s")
        time.sleep(0.1)

"""`make fuzz`: schemathesis against the whole stack (API, workers, beat) and a fake OEIS.

Starts the stack of `make demo` on free ports (with the database and Redis databases the
Makefile's FUZZ_ENV names), waits for /api/health, runs `st run` over every operation of
/api/openapi.json with every check that applies (fuzz/schemathesis.toml says which
statuses are allowed), stops the stack and exits with schemathesis's status. Arguments
after `--` go to `st run` (say `-n 2000` for more cases per operation).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "fuzz" / "schemathesis.toml"
REPORTS = ROOT / "fuzz" / "reports"
READY_TIMEOUT = 180.0
# Checks that test authentication or resources made by POST/DELETE: this API has none.
NOT_APPLICABLE = (
    "ignored_auth,object_level_authorization,use_after_free,ensure_resource_availability"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(url: str, stack: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if stack.poll() is not None:
            sys.exit(f"fuzz: the stack exited with status {stack.returncode} before it was up")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass  # not listening yet, or not all up (503)
        time.sleep(0.5)
    sys.exit(f"fuzz: {url} did not answer 200 within {READY_TIMEOUT:.0f} s")


def _answers_by_status(base: str) -> Counter[str]:
    """How many answers the API has given, by status, from its own /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
        text = response.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "backscope_http_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["status"]] += int(sample.value)
    return counts


def _summary(counts: Counter[str]) -> str:
    listed = ", ".join(f"{status}: {counts[status]:,}" for status in sorted(counts))
    return f"{counts.total():,} requests answered ({listed})"


def _stop(stack: subprocess.Popen) -> None:
    """What Ctrl-C does in `make demo`'s terminal: SIGINT to the stack's process group."""
    if stack.poll() is None:
        os.killpg(stack.pid, signal.SIGINT)
        try:
            stack.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
            stack.wait()


def main(st_arguments: list[str]) -> int:
    api_port, oeis_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "BACKSCOPE_PORT": str(api_port),
        "DEMO_OEIS_PORT": str(oeis_port),
        "BACKSCOPE_OEIS_URL": f"http://127.0.0.1:{oeis_port}",
    }
    subprocess.run(["backscope", "migrate"], env=env, check=True)
    subprocess.run(["backscope", "reset-metrics"], env=env, check=True)
    log_path = REPORTS / "stack.log"
    REPORTS.mkdir(exist_ok=True)
    with log_path.open("wb") as log:
        stack = subprocess.Popen(
            # A pid file of its own: `make run` may be running from this checkout.
            [
                "supervisord",
                "-c",
                str(ROOT / "supervisord.demo.conf"),
                "-j",
                str(REPORTS / "supervisord.pid"),
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{api_port}"
    try:
        _wait_healthy(f"{base}/api/health", stack)
        before = _answers_by_status(base)
        print(f"fuzz: stack up at {base} (fake OEIS on {oeis_port}; its log: {log_path})")
        command = [
            "st",
            "--config-file",
            str(CONFIG),
            "run",
            f"{base}/api/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            NOT_APPLICABLE,
            "--report",
            "junit",
            "--report-dir",
            str(REPORTS),
            *st_arguments,
        ]
        print("fuzz:", " ".join(command), flush=True)
        status = subprocess.run(command, env=env, cwd=ROOT).returncode
        during = _answers_by_status(base) - before  # not the readiness checks' 503s
        print(f"fuzz: the API's own count, during the run: {_summary(during)}")
        return status
    finally:
        _stop(stack)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

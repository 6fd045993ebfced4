"""The deployment files in deploy/ work as written: systemd accepts the units and nginx
the site (each skipped, saying why, where the tool is missing)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
UNITS = sorted(DEPLOY.glob("backscope-*.service"))
LONG_RUNNING = ["api", "worker", "factors", "beat"]


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(path)
    return parser


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_units_restart_always_as_a_dedicated_user(name: str) -> None:
    unit = _unit(DEPLOY / f"backscope-{name}.service")
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
    assert service["User"] == "backscope" and service["Group"] == "backscope"
    assert service["EnvironmentFile"] == "/etc/backscope.env"
    # Starting runs what `make install` put in .venv: nothing is installed at start.
    assert service["ExecStart"].startswith("/srv/backscope/.venv/bin/")
    assert not any(word in service["ExecStart"] for word in ("pip", "make", "install"))
    assert "backscope-metrics.service" in unit["Unit"]["Requires"]


def test_only_the_factor_worker_runs_on_idle_cpu() -> None:
    # Each unit is a cgroup, and cgroups share the CPU by weight whatever the niceness
    # inside them: without this, factoring takes as much CPU as the API (issue #17).
    weights = {path.stem: _unit(path)["Service"].get("CPUWeight") for path in UNITS}
    assert weights.pop("backscope-factors") == "idle"
    assert set(weights.values()) == {None}


def test_the_compose_factor_worker_has_the_lowest_cpu_weight() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert services["factors"]["cpu_shares"] == 2  # Docker's minimum; the default is 1024
    assert [name for name, service in services.items() if "cpu_shares" in service] == ["factors"]


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # As installed, but pointing at this checkout (verify checks that ExecStart exists).
    for path in UNITS:
        text = path.read_text().replace("/srv/backscope", str(ROOT))
        text = text.replace("/etc/backscope.env", str(DEPLOY / "backscope.env.example"))
        (tmp_path / path.name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 and "Failed to" in output and "backscope" not in output:
        pytest.skip(f"systemd-analyze cannot run here: {output.strip()[:200]}")
    assert result.returncode == 0, output
    # Warnings about our units (an unknown key, a bad section) are errors too.
    assert "backscope" not in output, output


def test_nginx_accepts_the_site(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
    )
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run does)")
    site = (DEPLOY / "nginx-backscope.conf").read_text()
    site = site.replace("/var/log/nginx/", f"{tmp_path}/")
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/error.log;\n"
        "events {}\n"
        f"http {{\n    access_log {tmp_path}/access.log;\n"
        f"    include {tmp_path}/site.conf;\n}}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def test_nginx_waits_longer_than_the_api() -> None:
    """An uncached request may wait BACKSCOPE_SYNC_WAIT for a worker: nginx must not
    give up on it first."""
    site = (DEPLOY / "nginx-backscope.conf").read_text()
    env = (DEPLOY / "backscope.env.example").read_text()
    sync_wait = float(env.split("BACKSCOPE_SYNC_WAIT=")[1].split()[0])
    api = site.split("location /api/")[1].split("location")[0]
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        seconds = int(api.split(directive)[1].split(";")[0].strip().rstrip("s"))
        assert seconds > sync_wait, directive

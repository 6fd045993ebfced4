"""Settings: defaults, and one clear line naming a bad setting at start-up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.config import ConfigError, load_settings, redacted
from tests.conftest import ROOT

NAMES = [
    "BACKSCOPE_DATABASE_URL",
    "BACKSCOPE_REDIS_URL",
    "BACKSCOPE_OEIS_URL",
    "BACKSCOPE_ENV",
    "BACKSCOPE_PORT",
    "BACKSCOPE_SYNC_WAIT",
    "BACKSCOPE_LOCK_TTL",
]


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("BACKSCOPE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults(bare_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.database_url == "postgresql+psycopg2://root@127.0.0.1:5432/backscope"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.oeis_url == "https://oeis.org"
    assert settings.env == "development"
    assert (settings.port, settings.sync_wait, settings.lock_ttl) == (5000, 20, 60)
    assert settings.redis_db_url("locks") == "redis://127.0.0.1:6379/2"
    assert (settings.bind, settings.api_threads, settings.access_log) == (
        "127.0.0.1:5000",
        32,
        False,
    )
    assert (settings.wait_slots, settings.client_work_limit, settings.trusted_proxies) == (
        24,
        12,
        (),
    )
    assert settings.api_workers == os.cpu_count()
    assert settings.db_pool_size == 8
    assert (settings.refresh_interval, settings.refresh_after, settings.refresh_batch) == (
        3600,
        604800,
        500,
    )
    assert (settings.embedded, settings.data_dir) == ("auto", ROOT / ".data")


def test_production_never_starts_servers_of_its_own(bare_env: pytest.MonkeyPatch) -> None:
    bare_env.setenv("BACKSCOPE_ENV", "production")
    assert load_settings().embedded == "never"
    bare_env.setenv("BACKSCOPE_EMBEDDED", "auto")
    assert load_settings().embedded == "auto"


@pytest.mark.parametrize(
    "name, value",
    [
        ("BACKSCOPE_PORT", "http"),
        ("BACKSCOPE_PORT", "0"),
        ("BACKSCOPE_SYNC_WAIT", "soon"),
        ("BACKSCOPE_LOCK_TTL", "-5"),
        ("BACKSCOPE_ENV", "staging"),
        ("BACKSCOPE_DATABASE_URL", "mysql://root@localhost/backscope"),
        ("BACKSCOPE_REDIS_URL", "redis://127.0.0.1:6379/14"),
        ("BACKSCOPE_OEIS_URL", "oeis.org"),
        ("BACKSCOPE_OEIS_URL", " "),
        ("BACKSCOPE_API_WORKERS", "0"),
        ("BACKSCOPE_API_THREADS", "many"),
        ("BACKSCOPE_FACTOR_NICE", "20"),
        ("BACKSCOPE_TRUSTED_PROXIES", "10.0.0.0/8, nginx"),
        ("BACKSCOPE_WAIT_SLOTS", "33"),  # more than the 32 threads
        ("BACKSCOPE_DB_POOL_SIZE", "0"),
        ("BACKSCOPE_DB_POOL_SIZE", "33"),  # more than the 32 threads
        ("BACKSCOPE_CLIENT_WORK_LIMIT", "0"),
        ("BACKSCOPE_REFRESH_INTERVAL", "0"),
        ("BACKSCOPE_REFRESH_AFTER", "-1"),
        ("BACKSCOPE_REFRESH_AFTER", "1.5"),
        ("BACKSCOPE_REFRESH_BATCH", "lots"),
        *[
            (name, value)
            for name in (
                "BACKSCOPE_REFRESH_INTERVAL",
                "BACKSCOPE_REFRESH_AFTER",
                "BACKSCOPE_REFRESH_BATCH",
            )
            for value in ("nan", "inf")
        ],
        ("BACKSCOPE_EMBEDDED", "sometimes"),
        ("BACKSCOPE_DATA_DIR", " "),
        *[
            (name, value)
            for name in (
                "BACKSCOPE_SYNC_WAIT",
                "BACKSCOPE_OEIS_RATE",
                "BACKSCOPE_OEIS_BACKOFF",
                "BACKSCOPE_OEIS_CONNECT_TIMEOUT",
                "BACKSCOPE_OEIS_READ_TIMEOUT",
                "BACKSCOPE_LOCK_TTL",
            )
            for value in ("nan", "inf", "-inf")
        ],
    ],
)
def test_malformed_setting_is_named(bare_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    bare_env.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


STARTUPS = {
    "api": [sys.executable, "-c", "import api; api.create_app()"],
    "queue": [sys.executable, "-c", "import shared.work.queue"],
    "gunicorn": [sys.executable, "-c", "import api.gunicorn_conf"],
    "cli": [sys.executable, "-m", "cli.commands", "status"],
}


@pytest.mark.parametrize(
    "setting, value, message",
    [
        (
            "BACKSCOPE_LOCK_TTL",
            "forever",
            "BACKSCOPE_LOCK_TTL must be a whole number, got 'forever'",
        ),
        ("BACKSCOPE_SYNC_WAIT", "nan", "BACKSCOPE_SYNC_WAIT must be a finite number, got 'nan'"),
        ("BACKSCOPE_OEIS_RATE", "inf", "BACKSCOPE_OEIS_RATE must be a finite number, got 'inf'"),
    ],
)
@pytest.mark.parametrize("startup", STARTUPS)
def test_startup_fails_with_one_line(startup: str, setting: str, value: str, message: str) -> None:
    env = {**os.environ, setting: value}
    result = subprocess.run(
        STARTUPS[startup], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines in (
        [f"backscope: configuration error: {message}"],
        [f"Error: configuration error: {message}"],  # the CLI, through click
    ), result.stderr


def test_credentials_are_never_printed(bare_env: pytest.MonkeyPatch) -> None:
    assert redacted("redis://:s3cret@127.0.0.1:1/0") == "redis://:***@127.0.0.1:1/0"
    assert redacted("redis://user:s3cret@h:1/0") == "redis://user:***@h:1/0"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    bare_env.setenv("BACKSCOPE_REDIS_URL", "redis://:s3cret@127.0.0.1:1/14")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "s3cret" not in str(raised.value)
    bare_env.setenv("BACKSCOPE_REDIS_URL", "redis://:s3cret@127.0.0.1:1/0")
    result = subprocess.run(
        [sys.executable, "-m", "cli.commands", "status"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert "127.0.0.1:1" in result.stdout + result.stderr
    assert "s3cret" not in result.stdout + result.stderr


def test_factor_settings(bare_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert (settings.factor_budget, settings.factor_max_bits) == (2.0, 512)
    bare_env.setenv("BACKSCOPE_FACTOR_BUDGET", "0.2")
    bare_env.setenv("BACKSCOPE_FACTOR_MAX_BITS", "1024")
    settings = load_settings()
    assert (settings.factor_budget, settings.factor_max_bits) == (0.2, 1024)


@pytest.mark.parametrize(
    "name, value",
    [
        ("BACKSCOPE_FACTOR_BUDGET", "soon"),
        ("BACKSCOPE_FACTOR_BUDGET", "-1"),
        ("BACKSCOPE_FACTOR_BUDGET", "nan"),
        ("BACKSCOPE_FACTOR_BUDGET", "inf"),
        ("BACKSCOPE_FACTOR_MAX_BITS", "0"),
        # Above 14000 bits a value's decimal string could exceed CPython's 4300 digits.
        ("BACKSCOPE_FACTOR_MAX_BITS", "20000"),
    ],
)
def test_malformed_factor_setting_is_named(
    bare_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    bare_env.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()

"""Settings: defaults, and one clear line naming a bad setting at start-up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.config import ConfigError, load_settings

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
        8,
        False,
    )
    assert settings.api_workers == os.cpu_count()


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
    ],
)
def test_malformed_setting_is_named(bare_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    bare_env.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


@pytest.mark.parametrize("module", ["api", "worker.celery_app", "api.gunicorn_conf"])
def test_startup_fails_with_one_line(module: str) -> None:
    env = {**os.environ, "BACKSCOPE_LOCK_TTL": "forever"}
    code = f"import {module}; {module}.create_app()" if module == "api" else f"import {module}"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "backscope: configuration error: BACKSCOPE_LOCK_TTL must be a whole number, got 'forever'"
    ]


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

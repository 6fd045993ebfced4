"""Configuration, read once from the environment (and from `.env` in development).

Redis is one server with numbered databases, one per use, derived from
BACKSCOPE_REDIS_URL's database number N:

    N      Celery broker (the task queues)
    N + 1  Celery results
    N + 2  work locks and fencing tokens
    N + 3  OEIS rate limiter

When nothing answers at the default addresses below, project-local servers can stand in
for them (BACKSCOPE_EMBEDDED; cli/embedded.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dotenv import load_dotenv

ENVIRONMENTS = ("development", "production", "testing")
# Who may read GET /metrics: nobody, clients on this machine, anyone who reaches the API.
METRICS_ACCESS = ("off", "local", "on")
# Where the checkout is: the default home of the metrics and data directories.
CHECKOUT = Path(__file__).resolve().parent.parent
# The servers a development machine runs. BACKSCOPE_EMBEDDED=auto replaces only these,
# when they do not answer, by project-local ones (cli/embedded.py).
DEFAULT_DATABASE_URL = "postgresql+psycopg2://root@127.0.0.1:5432/backscope"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
EMBEDDED_MODES = ("auto", "always", "never")
# Where the search index comes from: the OEIS's bulk files, an oeisdata checkout
# (BACKSCOPE_OEISDATA_DIR), or (auto) the checkout when one is configured.
INDEX_SOURCES = ("auto", "bulk", "oeisdata")
_KINDS = {int: "a whole number", float: "a number"}
REDIS_DATABASES = {"broker": 0, "results": 1, "locks": 2, "ratelimit": 3}
# BACKSCOPE_FACTOR_BUDGET stays well inside a task's time limit (shared/work/queue.py);
# 14000 bits is at most 4215 decimal digits, under CPython's int/str limit of 4300.
MAX_FACTOR_BUDGET = 600
MAX_FACTOR_BITS = 14000
# Threads of each API process that never wait for a worker (see wait_slots).
RESERVED_THREADS = 8
# PostgreSQL connections of each API process by default (docs/deploy.md sizes
# max_connections from it).
DB_POOL_SIZE = 8


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it in one line."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    oeis_url: str
    env: str
    port: int
    bind: str  # where gunicorn listens (api/gunicorn_conf.py)
    api_workers: int
    api_threads: int
    access_log: bool
    sync_wait: float
    lock_ttl: int
    purge_interval: int
    not_found_ttl: int
    oeis_connect_timeout: float
    oeis_read_timeout: float
    oeis_max_bytes: int
    bulk_max_bytes: int  # largest bulk file (names.gz, stripped.gz) downloaded
    oeis_max_attempts: int
    oeis_backoff: float
    oeis_rate: float
    backref_max_pages: int
    factor_budget: float
    factor_max_bits: int
    factor_nice: int
    user_agent: str
    oeisdata_dir: Path | None
    commit: str | None
    # Overload protection (docs/performance.md, "Overload").
    wait_slots: int  # requests per API process that may wait for a worker at once
    db_pool_size: int  # PostgreSQL connections per API process, besides its listener
    client_work_limit: int  # units of new work one client may have outstanding
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...]  # believed for X-Forwarded-For
    search_ttl: int  # seconds a cached search result is served
    search_wait: float  # seconds a search without an index waits before answering 503
    # The local search index (docs/search.md): where beat builds it from, how often.
    index_source: str  # INDEX_SOURCES
    index_interval: int  # seconds between builds by beat (0: beat never builds)
    # Following the OEIS (docs/maintenance.md, "Refreshing").
    refresh_interval: int  # seconds between beat's refresh sweeps
    refresh_after: int  # seconds after its last check a cached sequence is checked again
    refresh_batch: int  # the most sequences one sweep checks (0: no refreshing)
    metrics: str  # who may read GET /metrics (METRICS_ACCESS)
    # prometheus-client's multiprocess files, shared by every process of one stack
    # (shared/metrics.py); emptied when the whole stack starts.
    metrics_dir: Path
    # Project-local PostgreSQL and Redis (cli/embedded.py): when to use them, and
    # where their data lives.
    embedded: str
    data_dir: Path

    def redis_db_url(self, use: str) -> str:
        """The URL of the Redis database for one use (see the module docstring)."""
        parts = urlsplit(self.redis_url)
        base = int(parts.path.lstrip("/") or 0)
        return urlunsplit(parts._replace(path=f"/{base + REDIS_DATABASES[use]}"))

    @property
    def production(self) -> bool:
        return self.env == "production"


def redacted(url: str) -> str:
    """`url` with its password replaced by ***, for printing and logging."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _text(name: str, default: str) -> str:
    value = os.environ.get(name, default).strip()
    if not value:
        raise ConfigError(f"{name} is set but empty")
    return value


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _text(name, default)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _number(
    name: str, default: str, kind: type, minimum: float, maximum: float | None = None
) -> float:
    raw = _text(name, default)
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {_KINDS[kind]}, got {raw!r}") from None
    if not math.isfinite(value):  # float("nan") and float("inf") parse
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {raw!r}")
    return value


def _url(name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = _text(name, default)
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"{name} must be a {' or '.join(schemes)} URL, got {redacted(value)!r}")
    return value.rstrip("/")


def _redis_url(name: str, default: str) -> str:
    value = _url(name, default, ("redis", "rediss"))
    db = urlsplit(value).path.lstrip("/") or "0"
    if not db.isdigit() or int(db) + max(REDIS_DATABASES.values()) > 15:
        raise ConfigError(
            f"{name} must name a database number from 0 to 12, got {redacted(value)!r}"
        )
    return value


def _directory(name: str, inside: str) -> Path | None:
    """An optional directory setting; it must exist and contain `inside`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not (path / inside).is_dir():
        raise ConfigError(f"{name} must be a directory containing {inside}/, got {raw!r}")
    return path


def _networks(name: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """A comma-separated list of addresses or networks (127.0.0.1, 10.0.0.0/8); may be empty."""
    raw = os.environ.get(name, "")
    try:
        return tuple(ip_network(part.strip()) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(
            f"{name} must be addresses or networks separated by commas, got {raw!r}"
        ) from None


def _version() -> str:
    try:
        return metadata.version("backscope")
    except metadata.PackageNotFoundError:
        return "dev"


def load_settings() -> Settings:
    """Read every setting; raise ConfigError naming the first bad one."""
    env = _choice("BACKSCOPE_ENV", "development", ENVIRONMENTS)
    return Settings(
        database_url=_url(
            "BACKSCOPE_DATABASE_URL", DEFAULT_DATABASE_URL, ("postgresql", "postgresql+psycopg2")
        ),
        redis_url=_redis_url("BACKSCOPE_REDIS_URL", DEFAULT_REDIS_URL),
        oeis_url=_url("BACKSCOPE_OEIS_URL", "https://oeis.org", ("http", "https")),
        env=env,
        port=(port := int(_number("BACKSCOPE_PORT", "5000", int, 1, 65535))),
        bind=_text("BACKSCOPE_BIND", f"127.0.0.1:{port}"),
        api_workers=int(_number("BACKSCOPE_API_WORKERS", str(os.cpu_count() or 1), int, 1)),
        api_threads=(api_threads := int(_number("BACKSCOPE_API_THREADS", "32", int, 1))),
        access_log=_text("BACKSCOPE_ACCESS_LOG", "0") == "1",
        sync_wait=_number("BACKSCOPE_SYNC_WAIT", "20", float, 0),
        lock_ttl=int(_number("BACKSCOPE_LOCK_TTL", "60", int, 3)),
        purge_interval=int(_number("BACKSCOPE_PURGE_INTERVAL", "30", int, 1)),
        not_found_ttl=int(_number("BACKSCOPE_NOT_FOUND_TTL", "86400", int, 0)),
        oeis_connect_timeout=_number("BACKSCOPE_OEIS_CONNECT_TIMEOUT", "5", float, 0.1),
        oeis_read_timeout=_number("BACKSCOPE_OEIS_READ_TIMEOUT", "30", float, 0.1),
        oeis_max_bytes=int(_number("BACKSCOPE_OEIS_MAX_BYTES", str(32 * 2**20), int, 1024)),
        bulk_max_bytes=int(_number("BACKSCOPE_BULK_MAX_BYTES", str(512 * 2**20), int, 1024)),
        oeis_max_attempts=int(_number("BACKSCOPE_OEIS_MAX_ATTEMPTS", "5", int, 1)),
        oeis_backoff=_number("BACKSCOPE_OEIS_BACKOFF", "2", float, 0.1),
        oeis_rate=_number("BACKSCOPE_OEIS_RATE", "2", float, 0.01),
        backref_max_pages=int(_number("BACKSCOPE_BACKREF_MAX_PAGES", "50", int, 1)),
        # Seconds one value may take to factor; values above 2**max_bits are not tried.
        # Bits are capped so that a value's decimal string (about 0.3 digits per bit)
        # always converts to an int under CPython's 4300-digit limit.
        factor_budget=_number("BACKSCOPE_FACTOR_BUDGET", "2", float, 0, MAX_FACTOR_BUDGET),
        factor_max_bits=int(_number("BACKSCOPE_FACTOR_MAX_BITS", "512", int, 1, MAX_FACTOR_BITS)),
        # Factoring is background CPU work: at this niceness it yields the CPU to the
        # API, the downloads and PostgreSQL whenever they want it.
        factor_nice=int(_number("BACKSCOPE_FACTOR_NICE", "10", int, 0, 19)),
        user_agent=_text(
            "BACKSCOPE_USER_AGENT",
            f"Backscope/{_version()} (Numberscope back end; +https://github.com/numberscope/backscope)",
        ),
        oeisdata_dir=_directory("BACKSCOPE_OEISDATA_DIR", "seq"),
        commit=os.environ.get("BACKSCOPE_COMMIT") or None,
        # Threads that may wait for workers; the other RESERVED_THREADS of each API
        # process always serve cached reads (docs/performance.md, "Overload").
        wait_slots=int(
            _number(
                "BACKSCOPE_WAIT_SLOTS",
                str(max(1, api_threads - RESERVED_THREADS)),
                int,
                0,
                api_threads,
            )
        ),
        # A thread holds one connection at most (shared/db.py): more connections than
        # threads would never be used.
        db_pool_size=int(
            _number(
                "BACKSCOPE_DB_POOL_SIZE", str(min(DB_POOL_SIZE, api_threads)), int, 1, api_threads
            )
        ),
        client_work_limit=int(_number("BACKSCOPE_CLIENT_WORK_LIMIT", "12", int, 1)),
        trusted_proxies=_networks("BACKSCOPE_TRUSTED_PROXIES"),
        search_ttl=int(_number("BACKSCOPE_SEARCH_TTL", "604800", int, 0)),
        search_wait=_number("BACKSCOPE_SEARCH_WAIT", "10", float, 0),
        index_source=_choice("BACKSCOPE_INDEX_SOURCE", "auto", INDEX_SOURCES),
        index_interval=int(_number("BACKSCOPE_INDEX_INTERVAL", "86400", int, 0)),
        refresh_interval=int(_number("BACKSCOPE_REFRESH_INTERVAL", "3600", int, 1)),
        refresh_after=int(_number("BACKSCOPE_REFRESH_AFTER", "604800", int, 0)),
        refresh_batch=int(_number("BACKSCOPE_REFRESH_BATCH", "500", int, 0)),
        metrics=_choice("BACKSCOPE_METRICS", "local", METRICS_ACCESS),
        metrics_dir=Path(_text("BACKSCOPE_METRICS_DIR", str(CHECKOUT / ".metrics")))
        .expanduser()
        .absolute(),
        # Production never starts servers of its own: it runs managed ones.
        embedded=_choice(
            "BACKSCOPE_EMBEDDED", "never" if env == "production" else "auto", EMBEDDED_MODES
        ),
        data_dir=Path(_text("BACKSCOPE_DATA_DIR", str(CHECKOUT / ".data"))).expanduser().absolute(),
    )


@cache
def get_settings() -> Settings:
    """The process's settings, read on first use. `.env` never overrides the environment."""
    if os.environ.get("BACKSCOPE_ENV", "development") != "production":
        load_dotenv(override=False)
    return load_settings()

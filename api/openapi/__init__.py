"""The OpenAPI 3.1 description of the API (GET /api/openapi.json) and its page for people
(GET /api/docs/, Swagger UI from the installed flask-swagger-ui package, no CDN).

Written here by hand rather than generated: the routes validate their input with plain
regular expressions (api/routes/, shared/ids.py), which the libraries that generate a
description (flask-smorest, spectree) would have us rewrite as schema classes, and
apispec would only move the same text into docstrings. The parameters' patterns and
bounds are taken from the constants the routes use, and tests/test_openapi.py proves
the paths match the routes and validates the responses of every API test against it.

Here: the whole description and the blueprint that serves it; its paths (each
operation, its parameters and answers) are in paths.py, the schemas of the answers'
bodies in schemas.py.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint, Flask, Response, jsonify
from flask_swagger_ui import get_swaggerui_blueprint

from api.openapi.paths import SPEC_PATH, TAGS, paths
from api.openapi.schemas import SCHEMAS

DOCS_PATH = "/api/docs"


@cache
def description() -> dict[str, Any]:
    """The whole description (made once per process)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Backscope",
            "version": "1",
            "summary": "OEIS sequences for Numberscope, cached",
            "description": (
                "Values, names, factorizations and searches of OEIS sequences, served "
                "from a cache that fetches what is missing. Every value and index is a "
                "string of digits. Every error is JSON with an `error` sentence."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": TAGS,
        "paths": paths(),
        "components": {"schemas": SCHEMAS},
    }


bp = Blueprint("openapi", __name__)


@bp.get(SPEC_PATH)
def openapi_json() -> Response:
    return jsonify(description())


def register_openapi(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(
        get_swaggerui_blueprint(
            DOCS_PATH,
            SPEC_PATH,
            # No validator badge: it would send the description to validator.swagger.io.
            config={"app_name": "Backscope API", "validatorUrl": None},
        )
    )

"""The OpenAPI 3.1 description of the API (GET /api/openapi.json) and its page for people
(GET /api/docs/, Swagger UI from the installed flask-swagger-ui package, no CDN).

Written here by hand rather than generated: the routes validate their input with plain
regular expressions (api/routes/, shared/ids.py), which the libraries that generate a
description (flask-smorest, spectree) would have us rewrite as schema classes, and
apispec would only move the same text into docstrings. The parameters' patterns and
bounds are taken from the constants the routes use, and tests/test_openapi.py proves
the paths match the routes and validates the responses of every API test against it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint, Flask, Response, jsonify
from flask_swagger_ui import get_swaggerui_blueprint

from api.routes.search import MAX_TERM
from api.routes.sequences import CHUNK, COUNT
from api.routes.status import TASK_ID
from shared.ids import ID

SPEC_PATH = "/api/openapi.json"
DOCS_PATH = "/api/docs"
# Decimal digits with an optional sign, as the values and indices are sent.
INTEGER = r"^-?[0-9]+$"
ID_PATTERN = f"^{ID.pattern}$"
# A factorization ("[2,2;3,1]", "[]", "[0,1]", "[-1,1;2,2]") or why there is none.
FACTORIZATION = r"^(\[\]|\[-?[0-9]+,[0-9]+(;-?[0-9]+,[0-9]+)*\]|no_fac|no_fac_yet)$"

JSON = "application/json"
# Unicode's control characters (category Cc), which a search term may not hold.
_CONTROL = r"\x00-\x1f\x7f-\x9f"
_NOT_CONTROL = f"[^{_CONTROL}]"


def _anchored(pattern: str) -> str:
    return f"^{pattern}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object with exactly these properties (all required but `optional`)."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


_ID_STRING = {"type": "string", "pattern": ID_PATTERN, "examples": ["A000045"]}
_NAME = {"type": "string", "description": "The OEIS name, or a placeholder until it is loaded"}
_VALUES = {
    "type": "object",
    "description": "Index (as a string) to value (as a string of digits), in index order",
    "propertyNames": {"pattern": INTEGER},
    "additionalProperties": {"type": "string", "pattern": INTEGER},
}
_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Values": _object({"id": _ID_STRING, "name": _NAME, "values": _VALUES}),
    "Metadata": _object(
        {
            "id": _ID_STRING,
            "name": _NAME,
            "xrefs": {"type": "string", "description": "Cross-reference lines, joined by \\n"},
            "backrefs": {
                "type": "array",
                "items": _ID_STRING,
                "description": "Sorted ids of the sequences whose entries mention this one",
            },
            "revision": {"type": ["integer", "null"], "description": "OEIS revision cached"},
            "modified": {**_TIME, "description": "When that revision was made (UTC)"},
            "checked": {**_TIME, "description": "When the cache was last found current"},
        }
    ),
    "Factors": _object(
        {
            "id": _ID_STRING,
            "name": _NAME,
            "factors": {
                "type": "object",
                "description": (
                    "Index to factorization: prime,exponent pairs separated by ';' in "
                    'brackets (12: "[2,2;3,1]", 1: "[]", 0: "[0,1]", a negative value '
                    'starts with -1,1); "no_fac" when it cannot be factored, '
                    '"no_fac_yet" while factoring runs'
                ),
                "propertyNames": {"pattern": INTEGER},
                "additionalProperties": {"type": "string", "pattern": FACTORIZATION},
            },
            "complete": {
                "type": "boolean",
                "description": "false while some terms are not factored yet: ask again later",
            },
        }
    ),
    "Header": _object(
        {
            "id": _ID_STRING,
            "name": _NAME,
            "first": {"type": "string", "pattern": INTEGER, "description": "First index"},
            "last": {"type": "string", "pattern": INTEGER, "description": "Last index"},
            "chunk_size": {"type": "integer", "const": 1024},
        }
    ),
    "Search": _object(
        {
            "term": {"type": "string", "description": "The term as given"},
            "results": {
                "type": "array",
                "maxItems": 10,
                "description": "[id, name] pairs in the OEIS's order",
                # Not prefixItems [id, name]: schemathesis 4.32 turns that into an
                # `items` array, which its own schema check then rejects.
                "items": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 2,
                    "maxItems": 2,
                },
            },
        }
    ),
    "Commit": _object({"short_commit_hash": {"type": "string"}}),
    "Task": _object(
        {
            "task": {"type": "string"},
            "state": {"enum": ["pending", "running", "succeeded", "failed"]},
            "error": {"type": ["string", "null"]},
        }
    ),
    "Health": _object(
        {
            "status": {"const": "ok"},
            "checked_at": {"type": "number", "description": "Unix time of the check"},
            "database": {"type": "string"},
            "redis": {"type": "string"},
            "workers": {"type": "string"},
        }
    ),
    "Pending": _object(
        {
            "id": {"oneOf": [_ID_STRING, {"type": "null"}]},
            "status": {"const": "pending"},
            "task": {"type": "string", "description": "Poll /api/tasks/{task_id}"},
        }
    ),
    "Error": {
        "type": "object",
        "properties": {"error": {"type": "string", "description": "What went wrong"}},
        "required": ["error"],
        "description": "Some errors add details, such as what /api/health found down",
    },
}


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


_RETRY_AFTER = _header(
    "Seconds to wait before asking again", {"type": "string", "pattern": "^[0-9]+$"}
)
_ETAG = _header("Version of the answer; send it back in If-None-Match for a 304")


def _json(description: str, schema: str, headers: dict[str, Any] | None = None) -> dict:
    answer: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": _ref(schema)}},
    }
    if headers:
        answer["headers"] = headers
    return answer


def _error(description: str, retry: bool = False) -> dict[str, Any]:
    return _json(description, "Error", {"Retry-After": _RETRY_AFTER} if retry else None)


BAD_REQUEST = _error("Malformed input (id, count, chunk, term)")
NOT_FOUND = _error("No such sequence in the OEIS, or no such endpoint")
OVER_BUDGET = _error("This client has too much new work outstanding", retry=True)
BAD_UPSTREAM = _error("The OEIS sent something unusable")
UNAVAILABLE = _error("The OEIS, the database or the work queue is unavailable", retry=True)
NOT_MODIFIED = {"description": "Unchanged since the ETag sent in If-None-Match"}
PENDING = _json(
    "Still being fetched after the wait: repeat the request later",
    "Pending",
    {"Location": _header("The task's status: /api/tasks/{task_id}"), "Retry-After": _RETRY_AFTER},
)


def _data(
    summary: str, description: str, schema: str, ok: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A GET of cached data: fetched first when missing (202 when that takes too long)."""
    return {
        "summary": summary,
        "description": description,
        "responses": {
            "200": ok or _json("The answer", schema, {"ETag": _ETAG}),
            "202": PENDING,
            "304": NOT_MODIFIED,
            "400": BAD_REQUEST,
            "404": NOT_FOUND,
            "429": OVER_BUDGET,
            "502": BAD_UPSTREAM,
            "503": UNAVAILABLE,
        },
    }


def _without(operation: dict[str, Any], *statuses: str) -> dict[str, Any]:
    """`operation` without the answers with these statuses."""
    responses = {k: v for k, v in operation["responses"].items() if k not in statuses}
    return {**operation, "responses": responses}


def _path(
    name: str, description: str, schema: dict[str, Any], example: str | None = None
) -> dict[str, Any]:
    parameter = {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", **schema},
    }
    return parameter if example is None else {**parameter, "example": example}


ID_PARAMETER = _path(
    "seq_id", "An OEIS id: A (or a) and six digits", {"pattern": ID_PATTERN}, "A000045"
)
COUNT_PARAMETER = _path(
    "count",
    "How many terms from the first (0: all)",
    {"pattern": _anchored(COUNT.pattern)},
    "10",
)


def _operations() -> dict[str, Any]:
    values = _data(
        "The first count values",
        "Schedules the name and the factorizations in the background. The name may be "
        "a placeholder until the metadata is loaded.",
        "Values",
    )
    factors_ok = _json(
        "The factorizations; while factoring runs, the terms not factored yet are "
        '"no_fac_yet" with "complete": false and Retry-After (no ETag)',
        "Factors",
        {"ETag": _ETAG, "Retry-After": _RETRY_AFTER},
    )
    return {
        "/api/get_oeis_values/{seq_id}/{count}": {
            "get": {**values, "parameters": [ID_PARAMETER, COUNT_PARAMETER]},
        },
        "/api/get_oeis_name_and_values/{seq_id}": {
            "get": {
                **_data("All values and the real name", "The front end's main call.", "Values"),
                "parameters": [ID_PARAMETER],
            }
        },
        "/api/get_oeis_metadata/{seq_id}": {
            "get": {
                **_data("Name, cross-references, back-references", "", "Metadata"),
                "parameters": [ID_PARAMETER],
            }
        },
        "/api/get_oeis_factors/{seq_id}/{count}": {
            "get": {
                **_data(
                    "Factorizations of the first count values",
                    "200 within the wait even while factoring runs.",
                    "Factors",
                    factors_ok,
                ),
                "parameters": [ID_PARAMETER, COUNT_PARAMETER],
            }
        },
        "/api/get_oeis_header/{seq_id}": {
            "get": {
                **_data(
                    "Where the indices start and end, for reading in chunks",
                    "Indices are strings: they may pass 2^53.",
                    "Header",
                ),
                "parameters": [ID_PARAMETER],
            }
        },
        "/api/get_oeis_chunk/{seq_id}/{chunk}": {
            "get": {
                **_data(
                    "The values with indices chunk*1024 <= i < (chunk+1)*1024",
                    "Outside the sequence the values are {}.",
                    "Values",
                ),
                "parameters": [
                    ID_PARAMETER,
                    _path(
                        "chunk",
                        "The chunk number (may be negative)",
                        {"pattern": _anchored(CHUNK.pattern)},
                        "0",
                    ),
                ],
            }
        },
        "/api/search_oeis/{term}": {
            "get": {
                **_without(
                    _data(
                        "Search the OEIS: at most 10 results",
                        "From the local index of the whole OEIS when one is built (no OEIS "
                        "request), else from the OEIS. Never 202: the front end's search bar "
                        "cannot show it. Without an index, a search not done in time is a "
                        "503 with Retry-After, as is one the same client's newer search "
                        "superseded.",
                        "Search",
                    ),
                    "202",
                    "404",
                ),
                "parameters": [
                    _path(
                        "term",
                        "What to search for, as in the OEIS's search box",
                        {
                            "minLength": 1,
                            "maxLength": MAX_TERM,
                            # No control characters, and not blank.
                            "pattern": rf"^{_NOT_CONTROL}*[^\s{_CONTROL}]{_NOT_CONTROL}*$",
                        },
                        "fibonacci",
                    )
                ],
            }
        },
        "/api/get_commit": {
            "get": {
                "summary": "The deployed commit",
                "responses": {"200": _json("The short commit hash, or unknown", "Commit")},
            }
        },
        "/api/tasks/{task_id}": {
            "get": {
                "summary": "The state of a task a 202 answer named",
                "parameters": [
                    _path("task_id", "A task id", {"pattern": _anchored(TASK_ID.pattern)})
                ],
                "responses": {
                    "200": _json("The task's state", "Task"),
                    "400": BAD_REQUEST,
                    "404": NOT_FOUND,
                    "503": _error("The work queue is unavailable", retry=True),
                },
            }
        },
        "/api/health": {
            "get": {
                "summary": "Database, Redis and workers (checked at most every 5 s)",
                "responses": {
                    "200": _json("All up", "Health"),
                    "503": _error("Something is down: the answer says what", retry=True),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (BACKSCOPE_METRICS says who may read them)",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "403": _error("Served to this machine only"),
                    "404": _error("Metrics are turned off"),
                },
            }
        },
        SPEC_PATH: {
            "get": {
                "summary": "This description",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


FRONT_END, PAGED, SERVICE = "Sequences", "Paged access", "Service"
TAGS = [
    {"name": FRONT_END, "description": "What the Numberscope front end calls"},
    {"name": PAGED, "description": "Long sequences, 1024 indices at a time"},
    {"name": SERVICE, "description": "Tasks, health, metrics, this description"},
]
# Each path's operationId (the name of the Flask view that serves it) and its group.
OPERATIONS = {
    "/api/get_oeis_values/{seq_id}/{count}": ("get_oeis_values", FRONT_END),
    "/api/get_oeis_name_and_values/{seq_id}": ("get_oeis_name_and_values", FRONT_END),
    "/api/get_oeis_metadata/{seq_id}": ("get_oeis_metadata", FRONT_END),
    "/api/get_oeis_factors/{seq_id}/{count}": ("get_oeis_factors", FRONT_END),
    "/api/search_oeis/{term}": ("search_oeis", FRONT_END),
    "/api/get_commit": ("get_commit", FRONT_END),
    "/api/get_oeis_header/{seq_id}": ("get_oeis_header", PAGED),
    "/api/get_oeis_chunk/{seq_id}/{chunk}": ("get_oeis_chunk", PAGED),
    "/api/tasks/{task_id}": ("task_status", SERVICE),
    "/api/health": ("health", SERVICE),
    "/metrics": ("metrics", SERVICE),
    SPEC_PATH: ("openapi_json", SERVICE),
}


def _paths() -> dict[str, Any]:
    paths = _operations()
    for path, (operation_id, tag) in OPERATIONS.items():
        paths[path]["get"] |= {"operationId": operation_id, "tags": [tag]}
    return paths


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
        "paths": _paths(),
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

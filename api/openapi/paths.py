"""The paths of the OpenAPI description: each operation with its parameters, whose
patterns and bounds are the constants the routes validate with, and its answers."""

from __future__ import annotations

from typing import Any

from api.openapi.schemas import ID_PATTERN
from api.routes.search import MAX_TERM
from api.routes.sequences import CHUNK, COUNT
from api.routes.status import TASK_ID

SPEC_PATH = "/api/openapi.json"

JSON = "application/json"
# Unicode's control characters (category Cc), which a search term may not hold.
_CONTROL = r"\x00-\x1f\x7f-\x9f"
_NOT_CONTROL = f"[^{_CONTROL}]"


def _anchored(pattern: str) -> str:
    return f"^{pattern}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


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


def paths() -> dict[str, Any]:
    """Every path with its operation, named and tagged."""
    described = _operations()
    for path, (operation_id, tag) in OPERATIONS.items():
        described[path]["get"] |= {"operationId": operation_id, "tags": [tag]}
    return described

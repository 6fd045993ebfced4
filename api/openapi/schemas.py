"""The schemas of the answers' bodies, the `components` of the OpenAPI description,
with the patterns of the strings they hold."""

from __future__ import annotations

from typing import Any

from shared.ids import ID

# Decimal digits with an optional sign, as the values and indices are sent.
INTEGER = r"^-?[0-9]+$"
ID_PATTERN = f"^{ID.pattern}$"
# A factorization ("[2,2;3,1]", "[]", "[0,1]", "[-1,1;2,2]") or why there is none.
FACTORIZATION = r"^(\[\]|\[-?[0-9]+,[0-9]+(;-?[0-9]+,[0-9]+)*\]|no_fac|no_fac_yet)$"


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

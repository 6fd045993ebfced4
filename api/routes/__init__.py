"""The HTTP endpoints under /api: the Blueprint `bp` (api/__init__.py registers it),
thin routing, validation and serialization in front of the cache and the workers.

What each endpoint answers, with its parameters and statuses, is in the OpenAPI
description (api/openapi/, served at /api/openapi.json). Each family has its module:

- sequences.py: a sequence's values (the first count, all with the name, or paged:
  header and chunks) and its metadata
- factors.py: the factorizations of its terms
- search.py: a search of the OEIS
- status.py: the deployed commit, the state of a task, health

An endpoint is named after its view function ("api.get_oeis_values"): the metrics
label requests with it (api/observe.py) and the OpenAPI description calls it the
operationId, so a view keeps its name. The routes are listed here rather than
decorated in each module, so that no module imports the package that imports it.
"""

from __future__ import annotations

from flask import Blueprint

from api.routes import factors, search, sequences, status

ROUTES = (
    ("/get_oeis_values/<seq_id>/<count>", sequences.get_oeis_values),
    ("/get_oeis_name_and_values/<seq_id>", sequences.get_oeis_name_and_values),
    ("/get_oeis_header/<seq_id>", sequences.get_oeis_header),
    ("/get_oeis_chunk/<seq_id>/<chunk>", sequences.get_oeis_chunk),
    ("/get_oeis_metadata/<seq_id>", sequences.get_oeis_metadata),
    ("/get_oeis_factors/<seq_id>/<count>", factors.get_oeis_factors),
    ("/search_oeis/<path:term>", search.search_oeis),
    ("/get_commit", status.get_commit),
    ("/tasks/<task_id>", status.task_status),
    ("/health", status.health),
)

bp = Blueprint("api", __name__, url_prefix="/api")
for rule, view in ROUTES:
    bp.add_url_rule(rule, view_func=view, methods=["GET"])

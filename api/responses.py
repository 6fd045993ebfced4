"""Sending JSON answers cheaply: conditional requests answered with 304, and gzip for
clients that accept it, compressed once per document (api/documents.py keeps both)."""

from __future__ import annotations

import gzip

from flask import Response, request

from api.documents import GZIP_LEVEL, documents

GZIP_MIN_BYTES = 1024
# Answers with a placeholder name change once the name arrives: revalidate every time.
FINAL = "public, max-age=3600"
PROVISIONAL = "no-cache"


def _wants_gzip() -> bool:
    return request.accept_encodings["gzip"] > 0


def send_json(
    etag: str, body: bytes, gzipped: bytes | None, final: bool, keep: bool = True
) -> Response:
    """Answer with `body`: 304 if the client has it, gzipped if it accepts gzip.

    With `keep`, `etag` also names the body's entry in `documents`, where the gzipped
    bytes are kept once made and looked up when `gzipped` is not given, so each such
    document is compressed once per process. Without it (an answer cut out of a kept
    document), the gzipped bytes are made for this answer only.
    """
    gz = len(body) >= GZIP_MIN_BYTES and _wants_gzip()
    tag = f"{etag}-gz" if gz else etag
    if "If-None-Match" in request.headers and request.if_none_match.contains(tag):
        response = Response(status=304)
    elif gz:
        if gzipped is None:
            gzipped = documents.gzipped(etag, body) if keep else gzip.compress(body, GZIP_LEVEL)
        response = Response(gzipped, mimetype="application/json")
        response.headers["Content-Encoding"] = "gzip"
    else:
        response = Response(body, mimetype="application/json")
    response.set_etag(tag)
    response.headers["Cache-Control"] = FINAL if final else PROVISIONAL
    response.headers["Vary"] = "Accept-Encoding"
    return response

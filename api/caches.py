"""What the API keeps in memory of the database per process, dropped as soon as the
database reports a change (api/readcache.py says how), and served while the database
cannot be reached: what is cached per sequence (the lookup of every request for one),
and the metadata and search answers. The three listen on one connection. The documents
built from them are kept apart, by ETag (api/documents.py).
"""

from __future__ import annotations

from api.readcache import Listener, ReadCache
from shared.config import get_settings
from shared.db import UNREACHABLE, listen_connection
from shared.search import query
from shared.store.reads import (
    Cached,
    Document,
    read_cached,
    read_metadata_document,
    read_search_document,
)

changes = Listener(listen_connection)
# Memory per API process (the least recently used go first): a lookup with its key takes
# about a kilobyte; a document its body and some 600 bytes more.
LOOKUP_BYTES = 1024
DOCUMENT_OVERHEAD = 600
cached_reads: ReadCache[Cached] = ReadCache(
    read_cached, changes, UNREACHABLE, max_bytes=16 * 2**20, size=lambda _: LOOKUP_BYTES
)
metadata_reads: ReadCache[Document] = ReadCache(
    read_metadata_document,
    changes,
    UNREACHABLE,
    max_bytes=32 * 2**20,
    size=lambda document: len(document.body) + DOCUMENT_OVERHEAD,
)
search_reads: ReadCache[Document] = ReadCache(
    lambda key: query.read_document(key) or read_search_document(key, get_settings().search_ttl),
    changes,
    UNREACHABLE,
    max_bytes=16 * 2**20,
    size=lambda document: len(document.body) + DOCUMENT_OVERHEAD,
)

"""The units of work the API asks the workers for: what to lock and which task runs it.

The API and the workers agree on these names without the API importing worker code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DOWNLOADS_QUEUE = "downloads"
MAINTENANCE_QUEUE = "maintenance"
# CPU-bound factoring has its own queue and workers, so it never delays downloads.
FACTORS_QUEUE = "factors"


@dataclass(frozen=True)
class Work:
    kind: str  # the lock key's kind: backscope:lock:<kind>:<subject>
    subject: str
    task: str
    args: tuple[str | int, ...]

    def log_fields(self) -> dict[str, str]:
        """What a log line about this work should name."""
        if self.kind == "search":
            return {"kind": self.kind, "term": self.args[0][:80]}
        if self.kind == "index":
            return {"kind": self.kind}
        return {"kind": self.kind, "seq_id": self.subject}


def values_work(seq_id: str) -> Work:
    return Work("values", seq_id, "backscope.fetch_values", (seq_id,))


def refresh_work(seq_id: str, max_age: int = 0) -> Work:
    """Check a cached sequence against the OEIS and store what changed, unless it was
    checked in the last `max_age` seconds. It holds the values lock: it may replace them."""
    return Work("values", seq_id, "backscope.refresh_sequence", (seq_id, max_age))


def metadata_work(seq_id: str) -> Work:
    return Work("metadata", seq_id, "backscope.fetch_metadata", (seq_id,))


def backrefs_work(seq_id: str) -> Work:
    return Work("backrefs", seq_id, "backscope.fetch_backrefs", (seq_id,))


def factors_work(seq_id: str, count: int = 0) -> Work:
    """Factor the first `count` terms (all when 0) that have no stored factorization."""
    return Work("factors", seq_id, "backscope.factor_values", (seq_id, count))


def search_work(term: str) -> Work:
    digest = hashlib.sha256(term.encode()).hexdigest()[:32]
    return Work("search", digest, "backscope.run_search", (term,))


def index_work() -> Work:
    """Build or update the local search index (one at a time)."""
    return Work("index", "oeis", "backscope.maintenance.update_index", ())

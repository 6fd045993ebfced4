"""Parsers for what the OEIS sends. Every byte is hostile: anything unexpected raises
UpstreamBadData with a sentence that says what was wrong, and nothing is stored."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.errors import UpstreamBadData
from shared.ids import format_id

log = logging.getLogger(__name__)

_INDEX = re.compile(r"-?[0-9]{1,19}")
# One pass, no backtracking: "(-?)0*([0-9]+)" took quadratic time on a long run of
# zeros followed by something else.
_VALUE = re.compile(r"-?[0-9]+")
_OFFSET = re.compile(r"\s*(-?[0-9]{1,19})\s*(?:,.*)?")
# Indices are stored as PostgreSQL bigint: the signed 64-bit range. The OEIS's largest
# offsets (A241292 starts at 3,638,334,640,025) are far inside it.
MIN_INDEX, MAX_INDEX = -(2**63), 2**63 - 1


def _index(text: str) -> int | None:
    """An index within the signed 64-bit range, or None."""
    if not _INDEX.fullmatch(text):
        return None
    index = int(text)
    return index if MIN_INDEX <= index <= MAX_INDEX else None


@dataclass(frozen=True)
class BFile:
    first_index: int
    terms: list[str]


@dataclass(frozen=True)
class Entry:
    """One search result: the parts of an OEIS entry that Backscope keeps."""

    id: str
    name: str
    offset: int | None
    xrefs: list[str]
    keywords: str
    author: str
    # The entry's revision number and when that revision was made (None if not given):
    # what a refresh compares to know whether the cached data is still current.
    revision: int | None = None
    modified: datetime | None = None


def canonical_value(text: str) -> str | None:
    """A decimal integer without leading zeros (`-0` is `0`), or None if `text` is not one."""
    if not _VALUE.fullmatch(text):
        return None
    negative = text.startswith("-")
    digits = text[negative:].lstrip("0") or "0"
    return "-" + digits if negative and digits != "0" else digits


def parse_bfile(lines: Iterable[str], seq_id: str) -> BFile:
    """Parse b-file lines (`n a(n)`), skipping comments and blank lines.

    Indices must be consecutive; the first one is the sequence's offset.
    """
    first: int | None = None
    terms: list[str] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) != 2:
            raise UpstreamBadData(f"b-file for {seq_id} has a malformed line {number}")
        index = _index(fields[0])
        if index is None:
            raise UpstreamBadData(
                f"b-file for {seq_id} has an index that is not a 64-bit integer on line {number}"
            )
        value = canonical_value(fields[1])
        if value is None:
            raise UpstreamBadData(f"b-file for {seq_id} has a non-numeric value on line {number}")
        if first is None:
            first = index
        elif index != first + len(terms):
            raise UpstreamBadData(
                f"b-file for {seq_id} skips from index {first + len(terms) - 1} to {index}"
            )
        terms.append(value)
    if first is None:
        raise UpstreamBadData(f"b-file for {seq_id} holds no terms")
    return BFile(first, terms)


def search_results(payload: Any) -> list[dict[str, Any]]:
    """The result objects of a search answer in either shape the OEIS uses.

    Current: a bare list (or null when nothing matched). Older: an object with a
    "results" list (or null).
    """
    if isinstance(payload, dict):
        payload = payload.get("results")
    if payload is None:
        return []
    if not isinstance(payload, list):
        raise UpstreamBadData("OEIS search answer is neither a list nor an object with results")
    return payload


def parse_entry(item: Any) -> Entry | None:
    """One result object, or None (logged) if it lacks what we need."""
    if not isinstance(item, dict):
        log.warning("oeis.bad_entry", extra={"reason": "not an object"})
        return None
    number, name = item.get("number"), item.get("name")
    if (
        not isinstance(number, int)
        or isinstance(number, bool)
        or not 0 <= number <= 999_999
        or not isinstance(name, str)
    ):
        log.warning("oeis.bad_entry", extra={"reason": "no usable number or name"})
        return None
    xrefs = item.get("xref")
    offset = item.get("offset")
    return Entry(
        id=format_id(number),
        name=clean_text(name),
        offset=parse_offset(offset) if isinstance(offset, str) else None,
        xrefs=[clean_text(x) for x in xrefs if isinstance(x, str)]
        if isinstance(xrefs, list)
        else [],
        keywords=clean_text(item["keyword"]) if isinstance(item.get("keyword"), str) else "",
        author=clean_text(item["author"]) if isinstance(item.get("author"), str) else "",
        revision=parse_revision(item.get("revision")),
        modified=parse_time(item["time"]) if isinstance(item.get("time"), str) else None,
    )


def parse_revision(value: Any) -> int | None:
    """A revision number (a non-negative JSON integer), or None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    return None


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 time with its UTC offset ("2024-01-15T10:00:00-05:00"), or None: a
    time without an offset does not say when it was."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when if when.utcoffset() is not None else None


def parse_offset(text: str) -> int | None:
    """The first index from an OEIS offset field ("0,4" -> 0), or None if it has none."""
    match = _OFFSET.fullmatch(text)
    return _index(match.group(1)) if match else None


def clean_text(text: str) -> str:
    """Text as PostgreSQL can store it: without NUL characters, and valid UTF-8 (JSON
    may carry lone surrogates such as "\\ud800", which cannot be encoded)."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def parse_entries(payload: Any) -> list[Entry]:
    return [entry for entry in map(parse_entry, search_results(payload)) if entry]

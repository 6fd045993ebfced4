"""OEIS sequence ids: `A` followed by exactly six digits."""

from __future__ import annotations

import re

ID = re.compile(r"[Aa][0-9]{6}")


class InvalidId(ValueError):
    """Not an OEIS id."""


def normalize_id(raw: str) -> str:
    """Return the canonical form of an OEIS id (`a000045` → `A000045`) or raise InvalidId."""
    if not ID.fullmatch(raw):
        raise InvalidId(f"{raw[:40]!r} is not an OEIS id: expected A followed by six digits")
    return "A" + raw[1:]


def id_number(seq_id: str) -> int:
    return int(seq_id[1:])


def format_id(number: int) -> str:
    return f"A{number:06d}"

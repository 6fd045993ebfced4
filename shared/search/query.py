"""Searching the local index of the OEIS (the `search_entries` table).

What a person typing in the front end's search bar expects (docs/search.md has the
full story and the order of results):

- words match the words of names, case- and accent-insensitively ("mobius" finds
  "Möbius"); every word must match, and the last also as a prefix, since people are
  mid-word ("fibonacci nu" finds "Fibonacci numbers");
- "quoted phrases" match those words in that order (an unclosed quote too, for the
  same reason);
- an A-number (`A000045`, `A45`, `id:A000045`) gives that entry first, then the
  entries that cite it;
- integers separated by commas or spaces ("1,1,2,3,5,8" or "1 -1 1") match a run of
  consecutive first terms, signs included, the last one also as a prefix.

Entries with keyword `dead` are never returned. Ranking puts the famous sequence first:
whole-word matches before prefix matches, then entries whose headline (the name up to
its first ':', '(' ...) the words cover most closely, then the most cited (and `core`
or `nice`), then shorter names, then lower A-numbers.

Both sides use this module: the indexer (shared/search/indexer.py) to turn names into the
same words that queries are turned into here.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from dataclasses import dataclass

from sqlalchemy import Connection, text

from shared.db import get_read_engine
from shared.ids import format_id
from shared.store.reads import Document, json_document

RESULTS = 10
# Words that say little about an entry: not counted in the size of a headline.
STOPWORDS = frozenset(
    {"a", "an", "and", "are", "as", "at", "by", "for", "from", "in", "is", "of", "on", "or"}
    | {"that", "the", "to", "with"}
)
# A word: letters and digits of any script (after folding); everything else separates.
_WORD = re.compile(r"[^\W_]+")
# Where a name's headline ends: "Fibonacci numbers: F(n) = ...", "The prime numbers.",
# "Squares of primes.", "Catalan numbers: C(n) = ...".
_HEADLINE_END = re.compile(r"[:;(,=]|\.(?:\s|$)")
# Bounds from PostgreSQL: a position in a tsvector is at most 16383, and a word at
# most 2047 bytes; a name with more words than this is indexed by its first ones.
MAX_WORDS = 4000
MAX_WORD_CHARS = 200
_ID_QUERY = re.compile(r"(?:id:)?\s*a0*([0-9]{1,6})")
_TERMS_QUERY = re.compile(r"[+-]?[0-9]+(?:[\s,]+[+-]?[0-9]+)*[\s,]*")
_TERM = re.compile(r"[+-]?[0-9]+")
# A run of terms longer than this is not something anyone types.
MAX_QUERY_TERMS = 100


def fold(text: str) -> str:
    """`text` without case or accents: "Möbius" and "MOBIUS" both fold to "mobius"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def words(text: str) -> list[str]:
    """The words of `text`, folded, in order (at most MAX_WORDS)."""
    found = _WORD.findall(fold(text))[:MAX_WORDS]
    return [word[:MAX_WORD_CHARS] for word in found]


def headline(name: str) -> str:
    """The part of a name that says what the entry is."""
    return _HEADLINE_END.split(name, maxsplit=1)[0]


def headline_size(head: list[str]) -> int:
    """How many distinct words that say something a headline has."""
    return len(set(head) - STOPWORDS)


def tsvector(found: list[str]) -> str:
    """A tsvector literal holding `found` with their positions (words are letters and
    digits only, so they need no quoting beyond the quotes)."""
    return " ".join(f"'{word}':{min(i, 16383)}" for i, word in enumerate(found, 1))


def pairs(values: list[str]) -> list[str]:
    """The distinct pairs of consecutive terms ("1,2"): a run of terms is found by the
    pairs it holds (far fewer entries hold all of them than hold all its values)."""
    return sorted({f"{a},{b}" for a, b in itertools.pairwise(values)})


@dataclass(frozen=True)
class Query:
    """A search term, parsed: one of the three kinds, with what its SQL needs."""

    kind: str  # "id", "terms" or "words"
    seq_id: str = ""
    # terms: the LIKE pattern over ",t1,t2,...," and the pairs of consecutive terms
    # every match holds.
    pattern: str = ""
    values: tuple[str, ...] = ()
    # words: the tsquery with the last word as a prefix, and with every word whole.
    match: str = ""
    exact: str = ""


def _terms_query(term: str) -> Query:
    # Canonical integers ("007" is 7, "-0" is 0); a term is at most 200 characters, far
    # inside what int() converts.
    values = [str(int(value)) for value in _TERM.findall(term)[:MAX_QUERY_TERMS]]
    complete = term[-1] in ", \t"  # the last number is finished
    run = ",".join(values)
    pattern = f"%,{run},%" if complete else f"%,{run}%"
    whole = values if complete else values[:-1]
    return Query("terms", pattern=pattern, values=tuple(pairs(whole)))


def _words_query(term: str) -> Query | None:
    """Words and quoted phrases, all of which must match; the last word (outside
    quotes, or inside an unclosed one) also as a prefix."""
    parts = term.split('"')
    groups: list[str] = []
    for i, part in enumerate(parts):
        found = words(part)
        if i % 2:  # inside quotes
            groups.append(" <-> ".join(f"'{word}'" for word in found))
        else:
            groups.extend(f"'{word}'" for word in found)
    groups = [group for group in groups if group]
    if not groups:
        return None
    exact = " & ".join(groups)
    # The last part is outside quotes, or inside an unclosed one: still being typed.
    match = exact + ":*" if words(parts[-1]) else exact
    return Query("words", match=match, exact=exact)


def parse(term: str) -> Query | None:
    """What `term` asks for; None when it holds nothing to search for (punctuation)."""
    term = term.strip().casefold()
    if not term:
        return None
    id_match = _ID_QUERY.fullmatch(term)
    if id_match:
        return Query("id", seq_id=format_id(int(id_match[1])))
    if _TERMS_QUERY.fullmatch(term):
        return _terms_query(term)
    return _words_query(term)


# The tie-breaks every kind of search ends with.
_ORDER_TAIL = "popularity DESC, length(name), id"
# A term that many entries match (a first letter, "numbers", "1") is ranked among the
# POOL most popular of them: read in popularity order, so PostgreSQL stops early
# instead of ranking tens of thousands. A term that few entries match gets all of them.
POOL = 200

_SQL = {
    "id": f"""
        SELECT id, name FROM search_entries
        WHERE NOT dead AND (id = :seq_id OR cites @> ARRAY[CAST(:seq_id AS varchar)])
        ORDER BY id = :seq_id DESC, {_ORDER_TAIL}
        LIMIT :limit
    """,
    "terms": f"""
        SELECT id, name FROM (
            SELECT id, name, popularity FROM search_entries
            WHERE NOT dead AND term_pairs @> CAST(:values AS text[]) AND terms LIKE :pattern
            ORDER BY popularity DESC, id
            LIMIT {POOL}
        ) AS pool
        ORDER BY {_ORDER_TAIL}
        LIMIT :limit
    """,
    "words": f"""
        SELECT id, name FROM (
            SELECT id, name, words, head, head_words, popularity FROM search_entries
            WHERE NOT dead AND words @@ CAST(:match AS tsquery)
            ORDER BY popularity DESC, id
            LIMIT {POOL}
        ) AS pool
        ORDER BY words @@ CAST(:exact AS tsquery) DESC,
                 CASE WHEN head @@ CAST(:match AS tsquery) THEN head_words ELSE 1000000 END,
                 {_ORDER_TAIL}
        LIMIT :limit
    """,
}


def find(connection: Connection, term: str, limit: int = RESULTS) -> list[list[str]]:
    """The best `limit` entries for `term`, as [[id, name], ...]."""
    query = parse(term)
    if query is None:
        return []
    params = {
        "seq_id": query.seq_id,
        "values": list(query.values),
        "pattern": query.pattern,
        "match": query.match,
        "exact": query.exact,
        "limit": limit,
    }
    rows = connection.execute(text(_SQL[query.kind]), params)
    return [[seq_id, name] for seq_id, name in rows]


def indexed(connection: Connection) -> bool:
    """Whether a search index has been built (and so answers every search)."""
    return connection.execute(text("SELECT 1 FROM search_index")).first() is not None


def read_document(term: str) -> Document | None:
    """The results for `term` from the index as a JSON document (the API keeps it in
    memory until the next build); None if no index has been built."""
    with get_read_engine().connect() as connection:
        if not indexed(connection):
            return None
        return json_document(find(connection, term))

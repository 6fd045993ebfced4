"""The database schema. Every change here needs an Alembic migration (README: Development).

Values live in their own table so that reading a sequence's name or metadata never
drags thousands of (possibly thousand-digit) terms off the disk. Nothing here records
work "in progress": that is what the Redis locks are for. The `*_token` columns hold
the fencing token each piece of data was written under (see shared/store/writes.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    func,
    literal_column,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Sequence(Base):
    """What the OEIS says about one sequence, apart from its terms."""

    __tablename__ = "sequences"

    id: Mapped[str] = mapped_column(String(7), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    offset: Mapped[int | None] = mapped_column(BigInteger)
    xrefs: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    keywords: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(Text)
    meta_fetched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    meta_token: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    backrefs: Mapped[list[str] | None] = mapped_column(ARRAY(String(7)))
    backrefs_fetched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    backrefs_token: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Set when the OEIS answered that no such sequence exists; remembered for
    # BACKSCOPE_NOT_FOUND_TTL seconds so repeated requests do not go upstream.
    missing_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The OEIS revision of the cached entry and when it was made (the entry's "time").
    # `revision` is recorded only when everything cached is known to be at least that
    # revision (NULL: not known), so a refresh that finds the same revision upstream
    # needs no b-file (shared/store/ingest.py: refresh).
    revision: Mapped[int | None] = mapped_column(Integer)
    modified: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the cached data was last found current (a check, or a download); NULL: never
    # checked. Beat's refresh sweep checks the oldest first.
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Refreshes that failed in a row, and the earliest time the next may be tried.
    refresh_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    refresh_retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # The refresh sweep's order (shared/store/revisions.py: refresh_candidates), so it reads
        # the sequences due first instead of sorting the whole table every hour.
        Index("ix_sequences_checked_at", literal_column("checked_at").asc().nulls_first(), "id"),
    )


class SequenceValues(Base):
    """The terms of one sequence from its b-file, as decimal strings in index order."""

    __tablename__ = "sequence_values"

    id: Mapped[str] = mapped_column(
        String(7), ForeignKey("sequences.id", ondelete="CASCADE"), primary_key=True
    )
    first_index: Mapped[int] = mapped_column(BigInteger)
    terms: Mapped[list[str]] = mapped_column(ARRAY(Text))
    term_count: Mapped[int] = mapped_column(Integer)
    # The whole get_oeis_name_and_values answer, ready to send (shared/store/writes.py builds
    # it whenever the terms or the name change), and its ETag.
    document: Mapped[str] = mapped_column(Text)
    etag: Mapped[str] = mapped_column(String(32))
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    token: Mapped[int] = mapped_column(BigInteger)
    # Every term up to this index has a stored factorization (NULL: not even the first).
    # Raised as the factor task stores, lowered when a refresh drops the factorizations
    # of changed terms (shared/store/writes.py), so "is it all factored?" is one comparison.
    factored_through: Mapped[int | None] = mapped_column(BigInteger)


class Factorization(Base):
    """The factorization of one term, in the API's string format (shared/factors/factorize.py).

    One row per (sequence, index), written in batches as the factor task gets through a
    sequence, so a request for more terms computes only the ones without a row. The
    string is "no_fac" when the value was too large or ran out of time.
    """

    __tablename__ = "factorizations"

    id: Mapped[str] = mapped_column(
        String(7), ForeignKey("sequences.id", ondelete="CASCADE"), primary_key=True
    )
    n: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # the OEIS index
    factors: Mapped[str] = mapped_column(Text)
    factored_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    token: Mapped[int] = mapped_column(BigInteger)


class SearchResult(Base):
    """One cached OEIS search: the first page of results as [[id, name], ...]."""

    __tablename__ = "searches"

    term: Mapped[str] = mapped_column(Text, primary_key=True)
    results: Mapped[list[list[str]]] = mapped_column(JSONB)
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    token: Mapped[int] = mapped_column(BigInteger)


class FenceFloor(Base):
    """The lowest fencing token a write may carry, per scope.

    Clearing the cache (scope "*") or forgetting one sequence (scope = its id) records
    the current token here, so a download that was in flight at that moment can no
    longer write its now-stale result afterwards.
    """

    __tablename__ = "fence_floors"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger)


class SearchEntry(Base):
    """One OEIS entry in the local search index (shared/search/query.py reads it,
    shared/search/indexer.py builds it from the bulk files or an oeisdata checkout).

    Independent of the cached sequences: it holds every entry of the OEIS, names and
    first terms only, so that searching and naming need no OEIS request.
    """

    __tablename__ = "search_entries"

    id: Mapped[str] = mapped_column(String(7), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    # The name's words, folded (shared/search/query.py: words), with their positions, and the
    # words of its headline (before the first ':', '(' ...): what ranking compares.
    words: Mapped[str] = mapped_column(TSVECTOR)
    head: Mapped[str] = mapped_column(TSVECTOR)
    head_words: Mapped[int] = mapped_column(Integer)
    # The first terms as the bulk file has them (",0,1,1,2,"), and the distinct pairs of
    # consecutive ones ("0,1", "1,1", "1,2"), which find a run of terms.
    terms: Mapped[str] = mapped_column(Text)
    term_pairs: Mapped[list[str]] = mapped_column(ARRAY(Text))
    # What only an oeisdata checkout gives (NULL from the bulk files).
    keywords: Mapped[str | None] = mapped_column(Text)
    xrefs: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    author: Mapped[str | None] = mapped_column(Text)
    offset: Mapped[int | None] = mapped_column(BigInteger)
    revision: Mapped[int | None] = mapped_column(Integer)
    modified: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dead: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    # The other entries this one names (in its name, and its %Y lines), and how many
    # entries name this one: the in-degree that ranks famous sequences first.
    cites: Mapped[list[str]] = mapped_column(ARRAY(String(7)))
    cited: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # floor(log2(1 + cited)), plus 3 for keyword `core` and 1 for `nice` (set with
    # `cited`: shared/search/indexer.py).
    popularity: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What the entry was built from (an md5 of its lines or file) and, for a file, its
    # size and modification time: an incremental build reads only what changed.
    digest: Mapped[str] = mapped_column(String(32))
    stamp: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_search_entries_words", "words", postgresql_using="gin"),
        Index("ix_search_entries_term_pairs", "term_pairs", postgresql_using="gin"),
        Index("ix_search_entries_cites", "cites", postgresql_using="gin"),
        # The most popular first: a query matching many entries reads them in this order
        # and stops at its pool (shared/search/query.py).
        Index("ix_search_entries_popularity", literal_column("popularity").desc(), "id"),
    )


class SearchIndex(Base):
    """What the search index holds: one row, written by the build that last completed
    (a build that fails writes nothing, so the previous index goes on serving)."""

    __tablename__ = "search_index"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    source: Mapped[str] = mapped_column(Text)  # "bulk" or "oeisdata"
    location: Mapped[str] = mapped_column(Text)  # the URL or directory it came from
    entries: Mapped[int] = mapped_column(Integer)
    built_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seconds: Mapped[float] = mapped_column(Float)
    changed: Mapped[int] = mapped_column(Integer)  # entries added, changed or removed
    # The bulk files' HTTP validators (ETag, Last-Modified), so that the next build asks
    # "changed since?" and an unchanged file costs no download.
    validators: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)

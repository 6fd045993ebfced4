"""What the search index is built from: the OEIS's two bulk files, or an oeisdata checkout.

Each source yields one candidate per entry, cheap to compare with what the index holds
(shared/search/indexer.py): a bulk entry's digest is that of its two lines; a `.seq` file
first says its size and modification time (its stamp), and is read only when that
changed. Every byte is hostile: a line or file that cannot be used is skipped with a
log line, and the rest is indexed; a bulk file that is not whole gzip fails the build.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from stat import S_ISREG
from typing import IO

from shared.errors import UpstreamBadData
from shared.oeis.local import MAX_ENTRY_BYTES, read_fields, seq_entry
from shared.oeis.parsing import Entry, canonical_value, clean_text
from shared.search import query

log = logging.getLogger(__name__)

BULK_FILES = ("names.gz", "stripped.gz")
# Real names run to about 1,000 characters and first terms to about 260: far longer
# lines are not data, and a line is never read past MAX_LINE characters.
MAX_NAME = 4000
MAX_TERMS = 4000
MAX_LINE = 16_000
_BULK_LINE = re.compile(r"(A[0-9]{6}) (.*)")
_TERM = re.compile(r"-?[0-9]+")
_MENTION = re.compile(r"A[0-9]{6}")
_SEQ_FILE = re.compile(r"A[0-9]{6}\.seq")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class IndexRow:
    """One entry as the index stores it (the columns of shared.models.SearchEntry)."""

    id: str
    name: str
    words: str
    head: str
    head_words: int
    terms: str
    term_pairs: list[str]
    keywords: str | None
    xrefs: list[str] | None
    author: str | None
    offset: int | None
    revision: int | None
    modified: datetime | None
    dead: bool
    cites: list[str]
    digest: str
    stamp: str | None


def _digest(*parts: str | bytes) -> str:
    md5 = hashlib.md5()
    for part in parts:
        md5.update(part if isinstance(part, bytes) else part.encode("utf-8", "replace"))
        md5.update(b"\0")
    return md5.hexdigest()


def _terms(seq_id: str, raw: str) -> str:
    """The first terms as ",t1,t2,...," (canonical integers), or "" if `raw` (the
    comma-separated terms) is not that."""
    raw = "".join(raw.split()).strip(",")
    if not raw:
        return ""
    values = [canonical_value(term) if _TERM.fullmatch(term) else None for term in raw.split(",")]
    if None in values or len(raw) > MAX_TERMS:
        log.warning("index.bad_terms", extra={"seq_id": seq_id, "terms": raw[:80]})
        return ""
    return "," + ",".join(values) + ","  # type: ignore[arg-type]


def make_row(
    seq_id: str,
    name: str,
    terms: str,
    digest: str,
    stamp: str | None = None,
    entry: Entry | None = None,
) -> IndexRow | None:
    """The row for an entry, or None (logged) if its name is not usable. `entry` is
    what an oeisdata file adds to the name and terms (keywords, xrefs, ...)."""
    name = clean_text(name).strip()
    if not name or len(name) > MAX_NAME:
        log.warning("index.bad_name", extra={"seq_id": seq_id, "length": len(name)})
        return None
    head = query.words(query.headline(name))
    mentioned = set(_MENTION.findall(name))
    for line in entry.xrefs if entry else ():
        mentioned.update(_MENTION.findall(line))
    mentioned.discard(seq_id)
    return IndexRow(
        id=seq_id,
        name=name,
        words=query.tsvector(query.words(name)),
        head=query.tsvector(head),
        head_words=query.headline_size(head),
        terms=terms,
        term_pairs=query.pairs(terms.strip(",").split(",")) if terms else [],
        keywords=entry.keywords if entry else None,
        xrefs=entry.xrefs if entry else None,
        author=entry.author if entry else None,
        offset=entry.offset if entry else None,
        revision=entry.revision if entry else None,
        modified=entry.modified if entry else None,
        dead=entry is not None and "dead" in entry.keywords.split(","),
        cites=sorted(mentioned),
        digest=digest,
        stamp=stamp,
    )


class Candidate:
    """One entry a source has: its id, its stamp (None for the bulk files), its digest
    (read on first use) and its row (parsed on first use; None if unusable)."""

    id: str
    stamp: str | None = None

    def digest(self) -> str:
        raise NotImplementedError

    def row(self) -> IndexRow | None:
        raise NotImplementedError


class BulkEntry(Candidate):
    def __init__(self, seq_id: str, name: str, terms: str) -> None:
        self.id, self.name, self.terms = seq_id, name, terms

    def digest(self) -> str:
        return _digest(self.name, self.terms)

    def row(self) -> IndexRow | None:
        return make_row(self.id, self.name, _terms(self.id, self.terms), self.digest())


def _bounded_lines(stream: IO[str]) -> Iterator[tuple[int, str | None]]:
    """(line number, line) for each line, None for a line longer than MAX_LINE (the
    rest of it is skipped unread)."""
    number = 0
    while True:
        line = stream.readline(MAX_LINE)
        if not line:
            return
        number += 1
        if len(line) == MAX_LINE and not line.endswith("\n"):
            while (rest := stream.readline(MAX_LINE)) and not rest.endswith("\n"):
                pass
            yield number, None
            continue
        yield number, line.rstrip("\r\n")


def _bulk_lines(path: Path, moved: Callable[[int], None]) -> Iterator[tuple[str, str]]:
    """(id, rest) for each entry line of a bulk file, in A-number order: comment and
    blank lines are passed over; a malformed or out-of-order line is skipped (logged).
    `moved(compressed bytes read)` reports progress."""
    previous = ""
    try:
        with (
            open(path, "rb") as raw,
            gzip.open(raw, "rt", encoding="utf-8", errors="replace") as text,
        ):
            for number, line in _bounded_lines(text):
                moved(raw.tell())
                if line is not None and (not line.strip() or line.startswith("#")):
                    continue
                match = _BULK_LINE.fullmatch(line.rstrip()) if line is not None else None
                if match is None or match[1] <= previous:
                    log.warning("index.bad_line", extra={"file": path.name, "line": number})
                    continue
                previous = match[1]
                yield match[1], match[2]
    except (OSError, EOFError, zlib.error) as exc:
        raise UpstreamBadData(f"{path.name} is not a whole gzip file: {exc}") from None


def bulk_entries(names: Path, stripped: Path, progress: Progress) -> Iterator[Candidate]:
    """The entries of names.gz joined with their terms from stripped.gz (both in
    A-number order). An entry without a name is not indexed: nothing could show it."""
    total = names.stat().st_size + stripped.stat().st_size
    position = {"names": 0, "stripped": 0}

    def moved(which: str) -> Callable[[int], None]:
        def report(done: int) -> None:
            position[which] = done
            progress(sum(position.values()), total)

        return report

    terms = _bulk_lines(stripped, moved("stripped"))
    pending = next(terms, None)
    for seq_id, name in _bulk_lines(names, moved("names")):
        while pending is not None and pending[0] < seq_id:
            pending = next(terms, None)
        found = pending[1] if pending is not None and pending[0] == seq_id else ""
        yield BulkEntry(seq_id, name, found)
    progress(total, total)


class SeqFile(Candidate):
    def __init__(self, path: str, stamp: str) -> None:
        self.path, self.id, self.stamp = path, os.path.basename(path)[:7], stamp
        self._data: bytes | None = None

    def _read(self) -> bytes:
        if self._data is None:
            with open(self.path, "rb") as file:
                self._data = file.read(MAX_ENTRY_BYTES + 1)
        return self._data

    def digest(self) -> str:
        try:
            return _digest(self._read())
        except OSError as exc:
            log.warning("index.unreadable", extra={"path": self.path, "error": exc.strerror})
            return ""

    def row(self) -> IndexRow | None:
        try:
            data = self._read()
        except OSError:
            return None  # logged by digest()
        if len(data) > MAX_ENTRY_BYTES:
            log.warning("index.bad_file", extra={"seq_id": self.id, "error": "too large"})
            return None
        fields = read_fields(clean_text(data.decode("utf-8", "replace")), self.id)
        try:
            entry = seq_entry(fields, self.id)
        except UpstreamBadData as exc:
            log.warning("index.bad_file", extra={"seq_id": self.id, "error": str(exc)})
            return None
        terms = "".join(fields.get("S", []) + fields.get("T", []) + fields.get("U", []))
        return make_row(
            self.id, entry.name, _terms(self.id, terms), self.digest(), self.stamp, entry
        )


def seq_files(root: Path, progress: Progress) -> Iterator[Candidate]:
    """Every `seq/Annn/Annnnnn.seq` file of an oeisdata checkout, with its stamp; files
    are read only when asked for their digest or row."""
    paths: list[str] = []  # (not Path objects: 390,000 of them weigh 100 MB)
    with os.scandir(root / "seq") as folders:
        for folder in folders:
            if folder.is_dir(follow_symlinks=False):
                with os.scandir(folder.path) as files:
                    paths.extend(
                        entry.path
                        for entry in files
                        if _SEQ_FILE.fullmatch(entry.name) and entry.name[:4] == folder.name
                    )
    paths.sort()
    for done, path in enumerate(paths, 1):
        try:
            stat = os.lstat(path)
        except OSError as exc:
            log.warning("index.unreadable", extra={"path": path, "error": exc.strerror})
            continue
        if not S_ISREG(stat.st_mode):  # a link or a folder: not an entry
            log.warning("index.unreadable", extra={"path": path, "error": "not a file"})
            continue
        if done % 1000 == 0:
            progress(done, len(paths))
        yield SeqFile(path, f"{stat.st_mtime_ns}:{stat.st_size}")
    progress(len(paths), len(paths))

"""Metadata and back-references from a local copy of the OEIS's `oeisdata` repository.

The repository holds every entry as `seq/A000/A000045.seq` in the OEIS internal format:
lines `%I A000045 M0692 N0256 #1523 Jan 15 2024 10:00:00` (old ids, then the revision
and when it was made), `%N A000045 <name>`, `%O A000045 <offset>`, `%Y A000045 <xref
line>`, `%K ...`, `%A ...` and others. With a checkout configured (BACKSCOPE_OEISDATA_DIR), names,
offsets, xrefs, keywords and back-references need no web requests; values still come
from b-files. Back-references are found with ripgrep when it is installed (well under
a second over the whole repository), otherwise by scanning the files in Python.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

from shared.errors import NotFound, UpstreamBadData
from shared.oeis.parsing import Entry, clean_text, parse_offset

log = logging.getLogger(__name__)

MAX_ENTRY_BYTES = 4 * 2**20
_LINE = re.compile(r"%([A-Za-z]) (A[0-9]{6})(?: (.*))?")
_FILE = re.compile(r"A[0-9]{6}\.seq")
# The revision and its time at the end of the %I line.
_REVISION = re.compile(
    r"#([0-9]{1,9})(?:\s+([A-Z][a-z]{2}\s+[0-9]{1,2}\s+[0-9]{4}\s+[0-9]{2}:[0-9]{2}:[0-9]{2}))?"
)
# %I times carry no zone; the OEIS keeps US Eastern time. Read as UTC-5 (EST), a summer
# (EDT, UTC-4) time comes out an hour later than it was: never earlier, so a refresh
# may download a b-file once more than needed but never keeps one that changed.
_OEIS_ZONE = timezone(timedelta(hours=-5))


class LocalOEIS:
    def __init__(self, root: Path, rg: str | None = None, use_rg: bool = True) -> None:
        self.seq_dir = root / "seq"
        self.rg = (rg or shutil.which("rg")) if use_rg else None

    def path(self, seq_id: str) -> Path:
        return self.seq_dir / seq_id[:4] / f"{seq_id}.seq"

    def entry(self, seq_id: str) -> Entry:
        """The entry's name, offset, xrefs, keywords and author; NotFound if absent."""
        path = self.path(seq_id)
        try:
            if path.stat().st_size > MAX_ENTRY_BYTES:
                raise UpstreamBadData(
                    f"local entry {seq_id} is larger than {MAX_ENTRY_BYTES} bytes"
                )
            text = clean_text(path.read_text("utf-8", errors="replace"))
        except FileNotFoundError:
            raise NotFound(f"the OEIS has no sequence {seq_id}") from None
        except OSError as exc:  # unreadable, or a directory where the file should be
            raise UpstreamBadData(f"cannot read local entry {seq_id}: {exc.strerror}") from None
        return seq_entry(read_fields(text, seq_id), seq_id)

    def mentions(self, seq_id: str, max_pages: int | None = None) -> tuple[list[str], bool]:
        """Ids of the other entries that mention `seq_id` (sorted), and True: the local
        copy is always complete. `max_pages` is accepted for parity with the web client."""
        files = self._grep(seq_id) if self.rg else self._scan(seq_id)
        found = {name[:-4] for name in files if _FILE.fullmatch(name)}
        found.discard(seq_id)
        return sorted(found), True

    def _grep(self, seq_id: str) -> list[str]:
        pattern = rf"(^|[^0-9A-Za-z]){seq_id}([^0-9]|$)"
        try:
            result = subprocess.run(
                [
                    self.rg,
                    "--files-with-matches",
                    "--no-messages",
                    "-e",
                    pattern,
                    str(self.seq_dir),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UpstreamBadData(f"ripgrep failed on the local OEIS copy: {exc}") from None
        if result.returncode not in (0, 1):  # 1 means "no match"
            raise UpstreamBadData(f"ripgrep failed on the local OEIS copy: {result.stderr[:200]}")
        return [os.path.basename(line) for line in result.stdout.splitlines()]

    def _scan(self, seq_id: str) -> list[str]:
        mention = re.compile(rf"(?<![0-9A-Za-z]){seq_id}(?![0-9])")
        found = []
        for path in self.seq_dir.glob("A[0-9][0-9][0-9]/A*.seq"):
            try:
                if path.stat().st_size <= MAX_ENTRY_BYTES and mention.search(
                    path.read_text("utf-8", errors="replace")
                ):
                    found.append(path.name)
            except OSError as exc:  # one unreadable file does not hide the others
                log.warning("oeisdata.unreadable", extra={"path": str(path), "error": exc.strerror})
        return found


def read_fields(text: str, seq_id: str) -> dict[str, list[str]]:
    """The lines of an entry in the internal format, by letter: {"N": [name], "Y":
    [xref lines], ...}; lines of other entries, and lines that are not `%X Annnnnn`,
    are left out."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = _LINE.fullmatch(line.rstrip())
        if match and match.group(2) == seq_id:
            fields.setdefault(match.group(1), []).append(match.group(3) or "")
    return fields


def seq_entry(fields: dict[str, list[str]], seq_id: str) -> Entry:
    """The entry that read_fields found; UpstreamBadData if it has no name."""
    if not fields.get("N"):
        raise UpstreamBadData(f"local entry {seq_id} has no %N name line")
    revision, modified = _revision(fields.get("I", [""])[0])
    return Entry(
        id=seq_id,
        name=fields["N"][0],
        offset=parse_offset(fields.get("O", [""])[0]),
        xrefs=fields.get("Y", []),
        keywords=fields.get("K", [""])[0],
        author=fields.get("A", [""])[0],
        revision=revision,
        modified=modified,
    )


def _revision(identification: str) -> tuple[int | None, datetime | None]:
    """The revision number and its time from an %I line's text ("M0692 N0256 #1523 Jan 15
    2024 10:00:00"); None for what it does not give."""
    match = _REVISION.search(identification)
    if not match:
        return None, None
    if not match[2]:
        return int(match[1]), None
    try:
        when = datetime.strptime(" ".join(match[2].split()), "%b %d %Y %H:%M:%S")
    except ValueError:
        return int(match[1]), None
    return int(match[1]), when.replace(tzinfo=_OEIS_ZONE)

"""Parsed content files by name and content hash, in one SQLite file of the state folder.

One row per file, read and written one at a time: a run holds the item it is parsing, never the
whole cache (as one pickle, a run held every stored item's bytes twice, a third of its memory at
30,000 stories).  The file is a cache: a damaged or foreign one is only a slower read, and
everything in it is keyed, so nothing stale can come back (``sources.local.read_content``).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from .files import private_file

log = logging.getLogger(__name__)
BATCH = 256
_SCHEMA = """CREATE TABLE IF NOT EXISTS meta (key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (name TEXT PRIMARY KEY, digest TEXT NOT NULL, item BLOB NOT NULL);"""


class ParsedFileCache:
    """Rows of (file name, content sha256, the parsed item's bytes) under one key (the config and
    the program); a different key empties the cache.  ``put`` rows are written when ``save`` is
    called (one transaction) and not at all without it: a dry run leaves the file as it was."""

    def __init__(self, path: Path, key: str, *, writable: bool):
        self.path, self.key = path, key
        self.seen: set[str] = set()
        self.pending = 0
        self._batch: list[tuple[str, str, bytes]] = []  # rows put, inserted BATCH at a time (half the cost)
        self._db: sqlite3.Connection | None = None
        self._stale = False  # the stored key is another config's or program's: nothing is taken from it
        try:
            if not path.exists() and not writable:
                return  # nothing to read, and a read-only use makes no file
            if writable:
                private_file(path)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            if writable:
                self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT key FROM meta").fetchone()
            self._stale = row is None or row[0] != key
        except sqlite3.Error as exc:
            log.warning("content cache %s unreadable (%s); parsing every file", path, exc)
            self._reset(writable)

    def _reset(self, writable: bool) -> None:
        """A damaged file: start it again (when this run may write), else read nothing from it."""
        if self._db is not None:
            self._db.close()
            self._db = None
        self._stale = True
        if writable:
            self.path.unlink(missing_ok=True)
            try:
                private_file(self.path)
                self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self._db.executescript(_SCHEMA)
            except (OSError, sqlite3.Error) as exc:
                log.warning("content cache %s cannot be made (%s); parsing every file each run", self.path, exc)
                self._db = None

    def get(self, name: str, digest: str) -> bytes | None:
        """The stored bytes of file ``name`` parsed when its content had this sha256, if any."""
        self.seen.add(name)
        if self._db is None or self._stale:
            return None
        try:
            row = self._db.execute("SELECT item FROM files WHERE name = ? AND digest = ?", (name, digest)).fetchone()
        except sqlite3.Error:
            return None
        return row[0] if row is not None else None

    def put(self, name: str, digest: str, data: bytes) -> None:
        """Store file ``name``'s parse, to be kept if ``save`` is called."""
        self.seen.add(name)
        if self._db is None:
            return
        try:
            if not self._db.in_transaction:
                self._db.execute("BEGIN")
            if self._stale:  # the first write under a new key empties the old one's rows
                self._db.execute("DELETE FROM files")
                self._db.execute("DELETE FROM meta")
                self._db.execute("INSERT INTO meta (key) VALUES (?)", (self.key,))
                self._stale = False
            self._batch.append((name, digest, data))
            self.pending += 1
            if len(self._batch) >= BATCH:
                self._flush()
        except sqlite3.Error as exc:
            self._give_up(exc)

    def _give_up(self, exc: sqlite3.Error) -> None:
        """A cache that cannot be written (a full disk, a locked file) costs the next run a parse, never this run."""
        log.warning("content cache %s not updated (%s); the next run parses again", self.path, exc)
        self._batch = []
        try:
            self.close()
        except sqlite3.Error:
            self._db = None

    def _flush(self) -> None:
        if self._db is not None and self._batch:
            self._db.executemany("INSERT OR REPLACE INTO files (name, digest, item) VALUES (?, ?, ?)", self._batch)
        self._batch = []

    def save(self) -> None:
        """Keep the rows put since opening, and only the files read this time (a deleted file's row goes)."""
        if self._db is None:
            return
        try:
            if self._stale and not self.pending:  # nothing was parsed under the new key: the rows are another's
                return
            self._flush()
            gone = [(name,) for (name,) in self._db.execute("SELECT name FROM files") if name not in self.seen]
            if gone and not self._db.in_transaction:
                self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM files WHERE name = ?", gone)
            if self._db.in_transaction:
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._give_up(exc)
        finally:
            self.close()

    def close(self) -> None:
        """Forget what was not saved (a dry run) and let go of the file."""
        if self._db is not None:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._db.close()
            self._db = None

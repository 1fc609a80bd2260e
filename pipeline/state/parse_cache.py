"""Parsed content files by name and content hash, in one SQLite file of the state folder.

One row per file, read and written one at a time: a run holds the item it is parsing, never the
whole cache (as one pickle, a run held every stored item's bytes twice, a third of its memory at
30,000 stories).  The file is a cache: a damaged or foreign one is only a slower read, and
everything in it is keyed, so nothing stale can come back (``sources.local.read_content``).

WAL journal: a reader (a dry run, the desk, ``pipeline status``) reads beside a run that is writing
and never waits for it; readers open the file read-only.  Each lookup names the key, so a row a run
commits under another key (a new config or program) mid-read is never served.  A file that is busy
is left alone; one that is damaged is deleted by the next run that may write, and made again.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from .files import private_file

log = logging.getLogger(__name__)
BATCH = 256
_SCHEMA = """PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS meta (key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (name TEXT PRIMARY KEY, digest TEXT NOT NULL, item BLOB NOT NULL);"""
_GET = "SELECT f.item FROM files f JOIN meta m ON m.key = ? WHERE f.name = ? AND f.digest = ?"
_DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB: the file is no database we can read


def _damaged(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in _DAMAGED or "malformed" in str(exc) \
        or "not a database" in str(exc)


class ParsedFileCache:
    """Rows of (file name, content sha256, the parsed item's bytes) under one key (the config and
    the program); a different key empties the cache.  ``put`` rows are written when ``save`` is
    called (one transaction) and not at all without it: a dry run leaves the file as it was."""

    def __init__(self, path: Path, key: str, *, writable: bool):
        self.path, self.key, self.writable = path, key, writable
        self.seen: set[str] = set()
        self.pending = 0
        self._batch: list[tuple[str, str, bytes]] = []  # rows put, inserted BATCH at a time (half the cost)
        self._db: sqlite3.Connection | None = None
        self._stale = False  # the stored key is another config's or program's: nothing is taken from it
        try:
            if not writable:
                if path.exists():  # a read-only use makes no file
                    self._db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1,
                                               isolation_level=None, check_same_thread=False)
                return
            self._db = self._open_for_writing()
            row = self._db.execute("SELECT key FROM meta").fetchone()
            self._stale = row is None or row[0] != key
        except sqlite3.Error as exc:
            self._give_up(exc, "unreadable", "parsing every file")
            if writable and _damaged(exc):
                self._make_again()

    def _open_for_writing(self) -> sqlite3.Connection:
        private_file(self.path)  # 0600; SQLite gives its -wal and -shm files the same mode
        db = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
        try:
            db.executescript(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _make_again(self) -> None:
        """A damaged file, found by a run that may write: deleted and made anew, empty."""
        for name in (self.path.name, self.path.name + "-wal", self.path.name + "-shm"):
            self.path.with_name(name).unlink(missing_ok=True)
        try:
            self._db = self._open_for_writing()
            self._stale = True
        except (OSError, sqlite3.Error) as exc:
            log.warning("content cache %s cannot be made (%s); parsing every file each run", self.path, exc)
            self._db = None

    def get(self, name: str, digest: str) -> bytes | None:
        """The stored bytes of file ``name`` parsed when its content had this sha256, if any."""
        self.seen.add(name)
        if self._db is None or self._stale:
            return None
        try:
            row = self._db.execute(_GET, (self.key, name, digest)).fetchone()
        except sqlite3.Error as exc:
            self._give_up(exc, "unreadable", "parsing the rest")
            if self.writable and _damaged(exc):
                self._make_again()  # this run's parses go into a new file
            return None
        return row[0] if row is not None else None

    def put(self, name: str, digest: str, data: bytes) -> None:
        """Store file ``name``'s parse, to be kept if ``save`` is called."""
        self.seen.add(name)
        if self._db is None or not self.writable:
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

    def _flush(self) -> None:
        if self._db is not None and self._batch:
            self._db.executemany("INSERT OR REPLACE INTO files (name, digest, item) VALUES (?, ?, ?)", self._batch)
        self._batch = []

    def _give_up(self, exc: sqlite3.Error, what: str = "not updated", then: str = "the next run parses again") -> None:
        """A cache that cannot be read or written (a full disk, a busy or damaged file) costs a parse,
        never the run.  A damaged file is deleted now when this run may write, so the next one makes it anew."""
        log.warning("content cache %s %s (%s); %s", self.path, what, exc, then)
        self._batch = []
        self.close()
        if self.writable and _damaged(exc) and what != "unreadable":
            for name in (self.path.name, self.path.name + "-wal", self.path.name + "-shm"):
                self.path.with_name(name).unlink(missing_ok=True)

    def save(self) -> None:
        """Keep the rows put since opening, and only the files read this time (a deleted file's row goes)."""
        if self._db is None or not self.writable:
            self.close()
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
        """Forget what was not saved (a dry run) and let go of the file; never raises."""
        db, self._db = self._db, None
        if db is None:
            return
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # closing without a commit discards the transaction all the same
        finally:
            db.close()

"""Outputs written to disk as they are made, into the next version of the output folder.

A run no longer holds every output in memory (at 10,000 stories that was half a gigabyte): each
file goes to the sink as soon as it is made.  ``MemorySink`` keeps the bytes (a dry run shows them,
and tests read them); ``VersionWriter`` writes each changed file into the version being built
(``publish/versions.py``: a new folder whose unchanged files are hard links to the live one's, switched
in by one rename), keeping only its name and SHA-256.

An output known by a key of everything it is made from (a story page by its story's origin and the
templates, a full feed archive page by its items; ``made``) is neither made nor written when the
live version holds the file that key made, untouched since (its size and time as recorded): after
one story is edited, only the documents that contain it are made again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .atomic import write_atomic
from .versions import (
    Published,
    _clean,
    _copy_of,
    _holds,
    _new_id,
    _relative,
    _remove,
    _switch,
    _sync_files,
    _write,
    current_version,
    live_version,
    switch_point,
    versions_folder,
)

log = logging.getLogger(__name__)
RACY_NS = 100_000_000  # as outputs.RACY_NS: a file modified this close to its record is always read


class MemorySink(dict[Path, bytes]):
    """Every output's bytes by path: what a dry run plans, and what the builders return when called alone."""

    def add(self, path: Path, data: bytes) -> None:
        self[path] = data

    def made(self, paths: Sequence[Path], key: str, build: Callable[[], Sequence[bytes]]) -> None:
        for path, data in zip(paths, build(), strict=True):
            self[path] = data


Sink = MemorySink  # the interface the builders call; VersionWriter has the same two methods


class VersionWriter(MemorySink):
    """The next version of ``out``, written as the outputs come.  As a mapping it names every planned
    path (with empty bytes: the bytes went to disk); ``digests`` holds each one's SHA-256."""

    def __init__(self, out: Path, record: dict):
        super().__init__()
        self.out = out
        self.recorded: dict[str, str] = record.get("outputs", {})
        self.stats: dict[str, list[int]] = record.get("stats", {})
        self.recorded_at: int = record.get("recorded_at", 0)
        self.old_keys: dict[str, str] = record.get("keys", {})
        self.made_keys: dict[str, str] = {}
        self.digests: dict[Path, str] = {}
        self.switched = switch_point(out)
        self.current = current_version(self.switched)
        self.version: Path | None = None
        self.changed: list[Path] = []
        self.outside: dict[Path, bytes] = {}
        self.kept = 0
        # Each file's [size, mtime_ns] as this run found or wrote it, for the record (outputs.remember_outputs).
        self.file_stats: dict[str, list[int]] = {}
        self._prefix = os.fspath(out) + os.sep

    def _rel(self, path: Path) -> str | None:
        """``path`` relative to the output folder, as a string (pathlib's relative_to was 4% of a cold
        build); None outside it."""
        name = os.fspath(path)
        return name[len(self._prefix):] if name.startswith(self._prefix) else None

    def _intact(self, path: Path) -> bool:
        """The live file at ``path`` is the one recorded: same size and time, not written too close to
        the record to tell (then it is read)."""
        rel = self._rel(path)
        if self.current is None or rel is None:
            return False
        try:
            stat = os.stat(os.path.join(self.current, rel))
        except OSError:
            return False
        name = str(path)
        known = self.stats.get(name)
        if known == [stat.st_size, stat.st_mtime_ns] and stat.st_mtime_ns < self.recorded_at - RACY_NS:
            self.file_stats[name] = known
            return True
        return False

    def add(self, path: Path, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        self.digests[path] = digest
        self[path] = b""  # planned; the bytes are on disk, not here
        rel = self._rel(path)
        if rel is None:
            self.outside[path] = data  # a few files planned outside the output folder, written in place
            return
        if self.current is not None:
            if self.recorded.get(str(path)) == digest and self._intact(path):
                return
            if _holds(self.current / rel, data):
                return
        self._start()
        assert self.version is not None
        stat = _write(os.path.join(self.version, rel), data)
        self.file_stats[str(path)] = [stat.st_size, stat.st_mtime_ns]
        self.changed.append(path)

    def _as_recorded(self, path: Path) -> bool:
        """The live file at ``path`` has the recorded bytes: by its size and time, else by reading it
        (still far cheaper than making it again)."""
        if self._intact(path):
            return True
        if self.current is None or not path.is_relative_to(self.out):
            return False
        try:
            data = (self.current / path.relative_to(self.out)).read_bytes()
        except OSError:
            return False
        return hashlib.sha256(data).hexdigest() == self.recorded[str(path)]

    def made(self, paths: Sequence[Path], key: str, build: Callable[[], Sequence[bytes]]) -> None:
        names = [str(path) for path in paths]
        if all(self.old_keys.get(name) == key and name in self.recorded and self._as_recorded(path)
               for name, path in zip(names, paths, strict=True)):
            for name, path in zip(names, paths, strict=True):
                self.digests[path] = self.recorded[name]
                self[path] = b""
                self.made_keys[name] = key
            self.kept += 1
            return
        for name, path, data in zip(names, paths, build(), strict=True):
            self.add(path, data)
            self.made_keys[name] = key

    def _start(self) -> None:
        """The version folder, made at the first changed file: a hard-link copy of the live one."""
        if self.version is not None:
            return
        linked = self.switched.is_symlink() and self.current is not None
        versions = self.current.parent if linked and self.current is not None else versions_folder(self.switched)
        versions.mkdir(parents=True, exist_ok=True)
        version = versions / _new_id()
        log.debug("building %s: each changed file written as it is made", version)
        if self.current is not None:
            _copy_of(self.current, version)
        else:
            version.mkdir()
        self.version = version

    def discard(self) -> None:
        """A run that failed before switching leaves nothing behind."""
        if self.version is not None:
            shutil.rmtree(self.version, ignore_errors=True)
            self.version = None

    def finish(self, stale: Iterable[Path] = (), record: Callable[[str], None] | None = None) -> Published:
        """Remove ``stale``, then make the version live in one switch (none when nothing changed);
        ``record`` as ``versions.publish`` calls it."""

        out, current, switched = self.out, self.current, self.switched
        result = Published(written=[path for path, data in self.outside.items() if write_atomic(path, data)])
        gone = [path for path in stale if current is not None and _relative(path, out, current) is not None]
        if self.version is None and not gone and (current is None or switched.is_symlink()):
            if record is not None:
                record(live_version(out))
            return result
        try:
            self._start()
            version = self.version
            assert version is not None
            for path in gone:
                rel = _relative(path, out, current)
                if rel is not None:
                    _remove(version, rel)
            _sync_files(version, [version / path.relative_to(out) for path in self.changed])
            if record is not None:
                record(version.name)
        except BaseException:
            self.discard()
            raise
        before = _switch(switched, version)
        log.debug("%s now shows %s: %d files written, %d kept by their keys, %d removed", switched, version.name,
                  len(self.changed), self.kept, len(gone))
        if current is not None and current.parent == version.parent:
            before = current
        _clean(switched, version.parent, {version.name} | ({before.name} if before is not None else set()))
        result.written += self.changed
        result.removed = gone
        result.version = version
        return result

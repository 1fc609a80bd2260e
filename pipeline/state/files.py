"""The state folder is private: the folder 0700 and every file in it 0600.

It holds the subscriber list, the ledger, the signing secret and caches of unpublished
drafts, so nobody but the pipeline's own user may read it.  Files are *created* with
mode 0600 (``os.open`` with that mode, never a chmod after the bytes are in), SQLite's
WAL and shared-memory files take the database file's mode, and a folder or file left
looser by an older version is tightened when the pipeline opens it.  ``loose_permissions``
is what ``pipeline status`` and ``pipeline lint`` warn about.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600


def private_folder(folder: Path) -> Path:
    """The folder, made 0700 if missing and tightened to 0700 if it is ours and looser."""
    folder.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    _tighten(folder, PRIVATE_FOLDER)
    return folder


def private_file(path: Path) -> Path:
    """The file, created empty with mode 0600 if missing (SQLite then keeps that mode for the
    database and gives it to its -wal and -shm files), tightened to 0600 if it is looser."""
    private_folder(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        _tighten(path, PRIVATE_FILE)
    for companion in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if companion.exists():
            _tighten(companion, PRIVATE_FILE)
    return path


@contextmanager
def open_private(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` atomically: a 0600 temporary file beside it, renamed over it when complete."""
    private_folder(path.parent)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_private(path: Path, data: bytes) -> bool:
    """Write ``data`` atomically with mode 0600; False (and nothing written) when the file held it."""
    try:
        if path.read_bytes() == data:
            _tighten(path, PRIVATE_FILE)
            return False
    except FileNotFoundError:
        pass
    with open_private(path) as handle:
        handle.write(data)
    return True


def tighten_tree(folder: Path) -> None:
    """Make a state folder left by an older version private: the folder 0700, its files 0600."""
    if not folder.exists():
        return
    for entry in [folder, *folder.rglob("*")]:
        if not entry.is_symlink():
            _tighten(entry, PRIVATE_FOLDER if entry.is_dir() else PRIVATE_FILE)


def loose_permissions(folder: Path) -> list[str]:
    """One line per entry of the state folder (itself included) that others could read or write."""
    if not folder.exists():
        return []
    found = []
    entries = [folder, *sorted(folder.rglob("*"))]
    for entry in entries:
        try:
            info = entry.lstat()
        except FileNotFoundError:  # a temporary file renamed away meanwhile
            continue
        if stat.S_ISLNK(info.st_mode):
            continue
        wanted = PRIVATE_FOLDER if stat.S_ISDIR(info.st_mode) else PRIVATE_FILE
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            found.append(f"{entry}: mode {mode:04o}, readable by others; it should be {wanted:04o} "
                         f"(chmod {wanted:o} '{entry}')")
    return found


def _tighten(path: Path, wanted: int) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if stat.S_IMODE(info.st_mode) & 0o077 and info.st_uid == os.getuid():
        os.chmod(path, stat.S_IMODE(info.st_mode) & wanted)

"""Atomic file output.

Every file is written to a temporary file in the same folder and renamed over the
old one, so a reader (or a web server) sees the old file or the new one, never half
of one, and a crash or a failed run leaves the previous outputs intact.  A file
whose bytes did not change is not touched at all, so unchanged runs write nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically; return False when the file already held exactly it."""
    path = Path(path)
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def write_all(files: dict[Path, bytes]) -> list[Path]:
    """Write several outputs, each atomically, after all of them were built; return those changed.

    Callers build every file first, so bad input fails before anything is replaced.
    """
    return [path for path, data in files.items() if write_atomic(path, data)]

"""What the running program is, as one hash: for caches and the run fingerprint, so that an
upgrade (a ``git pull``, a new library) rebuilds what it may change even when the version
number stayed the same."""

from __future__ import annotations

import hashlib
import os
import sys
from functools import lru_cache
from pathlib import Path

import pipeline


def program_fingerprint() -> str:
    """sha256 of the version, every module of this package, and the names (with versions) of the
    installed distributions."""

    return hashlib.sha256(f"{pipeline.__version__}\0{_code_and_libraries()}".encode()).hexdigest()


PACKAGE = Path(__file__).resolve().parent


@lru_cache(maxsize=4)
def _code_and_libraries(package: Path = PACKAGE, entries: tuple[str, ...] | None = None) -> str:
    """Every module under ``package`` and the distributions installed on ``entries`` (sys.path).
    Once per process: the code that runs does not change while it runs."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(f"{path.relative_to(package)}\0".encode() + path.read_bytes() + b"\0")
    for entry in _library_folders() if entries is None else entries:  # jinja2-3.1.4.dist-info: names carry versions
        try:
            names = sorted(name for name in os.listdir(entry or ".") if name.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
        digest.update("\0".join(names).encode())
    return digest.hexdigest()


def _library_folders() -> list[str]:
    """The folders installed libraries live in, not the working directory or the script's folder
    (a checkout holds its own egg-info: the fingerprint must not change with where a command runs)."""
    return [entry for entry in sys.path if Path(entry).name in ("site-packages", "dist-packages")]

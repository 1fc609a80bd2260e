"""The run lock: one run at a time on one state folder, whoever starts it (cron, a timer, the service, a person)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import PipelineError

log = logging.getLogger(__name__)

LOCK_FILE = "pipeline.lock"
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the lock; try again later


class RunLocked(PipelineError):
    exit_code = EXIT_LOCKED


def lock_path(state_folder: Path) -> Path:
    state_folder.mkdir(parents=True, exist_ok=True)
    return state_folder / LOCK_FILE


@contextmanager
def run_lock(state_folder: Path, *, wait: bool = False, stop: threading.Event | None = None) -> Iterator[None]:
    """Hold the pipeline's lock for one run; without ``wait``, fail at once when it is taken."""
    path = lock_path(state_folder)
    lock = FileLock(str(path))
    if not wait:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunLocked(f"another pipeline run holds {path}; not starting (use --wait to wait for it)") from None
    else:
        while True:
            try:
                lock.acquire(timeout=0.5)
                break
            except Timeout:
                if stop is not None and stop.is_set():
                    raise RunLocked(f"stopped while waiting for {path}") from None
                log.debug("waiting for %s", path)
    try:
        yield
    finally:
        lock.release()

"""The run lock: one run at a time on one state folder, whoever starts it (cron, a timer, the service, a person)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from ..errors import PipelineError
from .files import PRIVATE_FILE, private_file, private_folder, tighten_tree
from .storage import RUN_LOCK_KEY

log = logging.getLogger(__name__)

LOCK_FILE = "pipeline.lock"
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the lock; try again later


class RunLocked(PipelineError):
    exit_code = EXIT_LOCKED


def lock_path(state_folder: Path) -> Path:
    return private_file(private_folder(state_folder) / LOCK_FILE)


@contextmanager
def advisory_lock(database_url: str, key: int, what: str, *, wait: bool = False,
                  stop: threading.Event | None = None, poll: float = 0.5) -> Iterator[None]:
    """A PostgreSQL session-level advisory lock, held on a connection of its own: it covers every
    machine that uses the database, and a process that dies releases it with its connection."""

    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            while not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one():
                conn.rollback()
                if not wait:
                    raise RunLocked(f"another pipeline run holds {what} in the database; not starting "
                                    "(use --wait to wait for it)")
                if (stop or threading.Event()).wait(poll):
                    raise RunLocked(f"stopped while waiting for {what}")
                log.debug("waiting for %s", what)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
    finally:
        engine.dispose()


@contextmanager
def run_lock(state_folder: Path, *, database_url: str | None = None, wait: bool = False,
             stop: threading.Event | None = None) -> Iterator[None]:
    """Hold the pipeline's lock for one run; without ``wait``, fail at once when it is taken.

    On PostgreSQL the lock is in the database (every machine shares it); on SQLite it is a
    file in the state folder, next to the database it protects.
    """
    tighten_tree(state_folder)  # a folder an older version left readable is private from this run on
    if database_url and database_url.startswith("postgresql"):

        with advisory_lock(database_url, RUN_LOCK_KEY, "the run lock", wait=wait, stop=stop):
            yield
        return
    path = lock_path(state_folder)
    lock = FileLock(str(path), mode=PRIVATE_FILE)
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

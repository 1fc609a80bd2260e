"""The scheduler's job store: where the service keeps each job's next run time."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from .files import private_file, private_folder

log = logging.getLogger(__name__)

JOBS_DATABASE = "jobs.db"


def jobs_url(state_folder: Path, database_url: str | None = None, *, create: bool = False) -> str:
    """The job store: in the PostgreSQL database when there is one (the leader may move between
    machines), else a SQLite file in the state folder."""
    if database_url and database_url.startswith("postgresql"):
        return database_url
    path = private_folder(state_folder) / JOBS_DATABASE
    return f"sqlite:///{private_file(path) if create else path}"


def stored_next_run_times(state_folder: Path, database_url: str | None = None) -> dict[str, datetime | None]:
    """Next-run times as the service's job store has them (empty when the service never ran)."""
    url = jobs_url(state_folder, database_url)
    if url.startswith("sqlite") and not (state_folder / JOBS_DATABASE).exists():
        return {}

    store = SQLAlchemyJobStore(url=url)
    store.start(BackgroundScheduler(timezone=timezone.utc), "default")
    try:
        return {job.id: job.next_run_time for job in store.get_all_jobs()}
    except Exception as exc:  # noqa: BLE001 - a job that cannot be loaded must not break `status`
        log.debug("could not read the job store: %s", exc)
        return {}
    finally:
        store.shutdown()

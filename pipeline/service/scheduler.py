"""Running unattended: one run at a time (cron or service), and a long-running APScheduler 3 service.

Cron and the service take the same inter-process lock in the state folder, so
they never overlap.  The service keeps its schedule in a SQLAlchemy job store in
the state folder; with ``coalesce`` and ``max_instances=1`` a restart after
downtime yields one catch-up run per job (within its misfire grace time), never
a burst.  SIGTERM/SIGINT stop it after the current message is sent and recorded.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, EVENT_SCHEDULER_STARTED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from filelock import FileLock, Timeout

from .. import usecases
from ..config import Config, load_config
from ..environment import database_url
from ..errors import PipelineError
from ..state.jobs import jobs_url
from ..state.lock import RunLocked, advisory_lock
from ..state.storage import LEADER_LOCK_KEY

log = logging.getLogger(__name__)

JOB_FUNCTION = "pipeline.service.scheduler:run_job"
SERVICE_LOCK = "service.lock"

# Set by the service's signal handlers; jobs check it between messages.
STOP = threading.Event()


def run_job(config_path: str, job: str) -> None:
    """What the scheduler calls (by reference, so the job store can keep it).

    Reads the config afresh, so edits apply from the next run; never raises, so a
    failing run never stops the service.
    """
    if STOP.is_set():  # the service is stopping: take no new work
        return
    try:
        config = load_config(config_path)
        usecases.run(config, job=job, wait=True, stop=STOP, progress=False)
    except RunLocked as exc:
        log.warning("job %s: %s", job, exc)
    except Exception as exc:  # noqa: BLE001 - the service must outlive any run
        log.error("job %s failed: %s", job, exc, exc_info=not isinstance(exc, PipelineError))


def make_scheduler(config: Config, scheduler_class: type[BaseScheduler] = BackgroundScheduler) -> BaseScheduler:
    return scheduler_class(
        jobstores={"default": SQLAlchemyJobStore(url=jobs_url(config.path("state"), database_url(), create=True))},
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1,
                      "misfire_grace_time": config.schedule.misfire_grace_time},
        timezone=timezone.utc,
    )


def sync_jobs(scheduler: BaseScheduler, config: Config) -> None:
    """Make the stored jobs match the config, keeping stored next-run times where nothing changed
    (so downtime is noticed and caught up), and dropping jobs no longer configured."""
    config_path = str(config.source_file.resolve())
    wanted = config.schedule.jobs
    for job in scheduler.get_jobs():
        if job.id not in wanted:
            log.info("removing job %s (no longer in the config)", job.id)
            job.remove()
    for name, spec in wanted.items():
        trigger = spec.trigger()
        grace = spec.misfire_grace_time or config.schedule.misfire_grace_time
        existing = scheduler.get_job(name)
        if (existing is not None and str(existing.trigger) == str(trigger)
                and list(existing.args) == [config_path, name]
                and existing.misfire_grace_time == grace and existing.func_ref == JOB_FUNCTION):
            continue
        scheduler.add_job(JOB_FUNCTION, trigger, args=[config_path, name], id=name, name=name,
                          replace_existing=True, misfire_grace_time=grace)
        log.info("scheduled job %s: %s (%s)", name, spec.cron, spec.timezone)


@contextmanager
def leadership(config: Config, stop: threading.Event) -> Iterator[None]:
    """Be the one service that runs the schedule: an advisory lock in PostgreSQL (every machine
    competes; a standby takes over when the leader's connection dies), or a file lock next to
    the SQLite database.  Blocks, standing by, until this process leads or is stopped."""
    url = database_url()
    if url and url.startswith("postgresql"):

        try:
            with advisory_lock(url, LEADER_LOCK_KEY, "the scheduler's leadership", wait=False):
                yield
            return
        except RunLocked:
            log.info("another service leads the schedule; standing by to take over")
        with advisory_lock(url, LEADER_LOCK_KEY, "the scheduler's leadership", wait=True, stop=stop):
            yield
        return
    lock = FileLock(str(config.path("state") / SERVICE_LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("another service leads the schedule; standing by to take over")
        while not stop.is_set():
            try:
                lock.acquire(timeout=0.5)
                break
            except Timeout:
                continue
        else:
            raise RunLocked("stopped while standing by")
    try:
        yield
    finally:
        lock.release()


def run_service(config: Config, *, run_now: bool = False, stop: threading.Event = STOP) -> int:
    """Run the configured jobs on a BlockingScheduler until SIGTERM or SIGINT; returns the exit status (0).

    Several services may be started (on several machines with PostgreSQL): one leads and
    runs the jobs, the others stand by and the first to notice takes over when it dies.
    """
    if not config.schedule.jobs:
        raise PipelineError(f"{config.source_file}: schedule.jobs: no jobs configured")
    running: list[BaseScheduler] = []

    def on_signal(signum, _frame):
        if stop.is_set():
            return
        log.info("received %s: finishing the current message, then stopping", signal.Signals(signum).name)
        stop.set()  # the running job sees it between messages and returns at a safe point
        for scheduler in running:
            try:
                scheduler.pause()  # no new runs from here on
                scheduler.shutdown(wait=True)  # waits for that job, then ends start()'s loop
            except SchedulerNotRunningError:
                pass  # not started yet: on_start sees the stop and shuts it down

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with leadership(config, stop):
            if stop.is_set():
                return 0
            log.info("leading the schedule")
            scheduler = make_scheduler(config, BlockingScheduler)

            def on_start(_event):
                # Runs inside start(), with the job store open and the scheduler still paused.
                if stop.is_set():
                    scheduler.shutdown(wait=False)
                    return
                sync_jobs(scheduler, config)
                if run_now:
                    for job in scheduler.get_jobs():
                        job.modify(next_run_time=datetime.now(timezone.utc))
                for job in scheduler.get_jobs():
                    log.info("job %s: next run at %s", job.id, job.next_run_time)
                scheduler.resume()

            scheduler.add_listener(on_start, EVENT_SCHEDULER_STARTED)
            scheduler.add_listener(lambda e: log.warning("job %s missed its run at %s (beyond its misfire grace "
                                                         "time)", e.job_id, e.scheduled_run_time), EVENT_JOB_MISSED)
            scheduler.add_listener(lambda e: log.error("job %s raised %s", e.job_id, e.exception), EVENT_JOB_ERROR)
            running.append(scheduler)
            if stop.is_set():
                return 0
            scheduler.start(paused=True)  # blocks until a signal shuts it down
    except RunLocked:
        pass  # stopped while standing by
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("service stopped")
    return 0

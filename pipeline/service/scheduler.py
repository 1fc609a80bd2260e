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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, EVENT_SCHEDULER_STARTED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.schedulers.base import BaseScheduler
from filelock import FileLock, Timeout

from ..config import Config, load_config
from ..errors import PipelineError

log = logging.getLogger(__name__)

LOCK_FILE = "pipeline.lock"
JOBS_DATABASE = "jobs.db"
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the lock; try again later
MANUAL_JOB = "manual"

# Set by the service's signal handlers; jobs check it between messages.
STOP = threading.Event()


class RunLocked(PipelineError):
    exit_code = EXIT_LOCKED


def lock_path(config: Config) -> Path:
    folder = config.path("state")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / LOCK_FILE


@contextmanager
def run_lock(config: Config, *, wait: bool = False, stop: threading.Event | None = None) -> Iterator[None]:
    """Hold the pipeline's lock for one run; without ``wait``, fail at once when it is taken."""
    path = lock_path(config)
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


def execute(config: Config, job: str = MANUAL_JOB, action: str = "run", *, wait: bool = False,
            stop: threading.Event | None = None, progress: bool | None = None, force: bool = False):
    """One locked, recorded run of the pipeline; returns its summary and the RunResult."""
    from ..build import open_storage, run_pipeline

    with run_lock(config, wait=wait, stop=stop), open_storage(config) as storage:
        run_id = storage.start_run(job)
        started = time.monotonic()
        summary: dict[str, Any] = {"action": action}
        try:
            result = run_pipeline(config, send=action == "run", stop=stop, progress=progress, storage=storage,
                                  force=force)
        except BaseException as exc:
            summary.update(error=str(exc), duration_s=round(time.monotonic() - started, 3))
            storage.finish_run(run_id, "failed", summary)
            raise
        summary.update(
            unchanged=result.skipped,
            items=None if result.skipped else len(result.items),
            files_written=len(result.written),
            edition=result.edition.edition_id if result.edition else None,
            edition_note=result.edition.reason if result.edition else None,
            sent=sum(r.sent for r in result.reports),
            failed=sum(r.failed for r in result.reports),
            retried=sum(r.retried for r in result.reports),
            stopped=any(r.stopped for r in result.reports),
            duration_s=round(time.monotonic() - started, 3),
        )
        storage.finish_run(run_id, "ok", summary)
        log.info("job %s: %s", job, _summary_line(summary))
        return summary, result


def _summary_line(summary: dict[str, Any]) -> str:
    if summary.get("unchanged"):
        return f"nothing changed since the last run, {summary.get('duration_s', 0):.2f}s"
    return (f"{summary.get('items', 0)} items, {summary.get('files_written', 0)} files written, "
            f"edition {summary.get('edition') or '-'}, sent {summary.get('sent', 0)}, "
            f"failed {summary.get('failed', 0)}, {summary.get('duration_s', 0):.2f}s"
            + (" (stopped early)" if summary.get("stopped") else ""))


def run_job(config_path: str, job: str) -> None:
    """What the scheduler calls (by reference, so the job store can keep it).

    Reads the config afresh, so edits apply from the next run; never raises, so a
    failing run never stops the service.
    """
    if STOP.is_set():  # the service is stopping: take no new work
        return
    try:
        config = load_config(config_path)
        action = config.schedule.jobs[job].action if job in config.schedule.jobs else "run"
        execute(config, job, action, wait=True, stop=STOP, progress=False)
    except RunLocked as exc:
        log.warning("job %s: %s", job, exc)
    except Exception as exc:  # noqa: BLE001 - the service must outlive any run
        log.error("job %s failed: %s", job, exc, exc_info=not isinstance(exc, PipelineError))


def jobs_url(config: Config) -> str:
    folder = config.path("state")
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / JOBS_DATABASE}"


def make_scheduler(config: Config, scheduler_class: type[BaseScheduler] = BackgroundScheduler) -> BaseScheduler:
    return scheduler_class(
        jobstores={"default": SQLAlchemyJobStore(url=jobs_url(config))},
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
        if (existing is not None and str(existing.trigger) == str(trigger) and list(existing.args) == [config_path, name]
                and existing.misfire_grace_time == grace):
            continue
        scheduler.add_job("pipeline.service.scheduler:run_job", trigger, args=[config_path, name], id=name, name=name,
                          replace_existing=True, misfire_grace_time=grace)
        log.info("scheduled job %s: %s (%s)", name, spec.cron, spec.timezone)


def next_run_times(config: Config, now: datetime | None = None) -> dict[str, datetime | None]:
    """When each configured job fires next, computed from its trigger."""
    now = now or datetime.now(timezone.utc)
    return {name: job.trigger().get_next_fire_time(None, now) for name, job in config.schedule.jobs.items()}


def stored_next_run_times(config: Config) -> dict[str, datetime | None]:
    """Next-run times as the service's job store has them (empty when the service never ran)."""
    path = config.path("state") / JOBS_DATABASE
    if not path.exists():
        return {}
    store = SQLAlchemyJobStore(url=jobs_url(config))
    scheduler = BackgroundScheduler(timezone=timezone.utc)
    store.start(scheduler, "default")
    try:
        return {job.id: job.next_run_time for job in store.get_all_jobs()}
    except Exception as exc:  # noqa: BLE001 - a job that cannot be loaded must not break `status`
        log.debug("could not read the job store: %s", exc)
        return {}
    finally:
        store.shutdown()


def serve(config: Config, *, run_now: bool = False, stop: threading.Event = STOP) -> int:
    """Run the configured jobs on a BlockingScheduler until SIGTERM or SIGINT; returns the exit status (0)."""
    if not config.schedule.jobs:
        raise PipelineError(f"{config.source_file}: schedule.jobs: no jobs configured")
    scheduler = make_scheduler(config, BlockingScheduler)

    def on_start(_event):
        # Runs inside start(), with the job store open and the scheduler still paused.
        sync_jobs(scheduler, config)
        if run_now:
            for job in scheduler.get_jobs():
                job.modify(next_run_time=datetime.now(timezone.utc))
        for job in scheduler.get_jobs():
            log.info("job %s: next run at %s", job.id, job.next_run_time)
        scheduler.resume()

    def on_signal(signum, _frame):
        if stop.is_set():
            return
        log.info("received %s: finishing the current message, then stopping", signal.Signals(signum).name)
        stop.set()  # the running job sees it between messages and returns at a safe point
        scheduler.pause()  # no new runs from here on
        scheduler.shutdown(wait=True)  # waits for that job, then ends start()'s loop

    scheduler.add_listener(on_start, EVENT_SCHEDULER_STARTED)
    scheduler.add_listener(lambda e: log.warning("job %s missed its run at %s (beyond its misfire grace time)",
                                                 e.job_id, e.scheduled_run_time), EVENT_JOB_MISSED)
    scheduler.add_listener(lambda e: log.error("job %s raised %s", e.job_id, e.exception), EVENT_JOB_ERROR)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        scheduler.start(paused=True)  # blocks until a signal shuts it down
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("service stopped")
    return 0

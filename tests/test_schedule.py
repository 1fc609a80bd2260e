"""Running unattended: cron expressions, the APScheduler service, the run lock, status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.triggers.interval import IntervalTrigger

from pipeline.config import Job, load_config
from pipeline.errors import ConfigError
from pipeline.service import scheduler as schedule
from pipeline.service.scheduler import make_scheduler, sync_jobs
from pipeline.state.jobs import jobs_url, stored_next_run_times
from pipeline.state.lock import EXIT_LOCKED
from pipeline.usecases import open_storage

from .conftest import SECRET, add_subscribers, run_cli, set_config, use_smtp
from .smtp_sink import RecordingHandler, SmtpSink

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture(autouse=True)
def fresh_stop_flag():
    schedule.STOP.clear()
    yield
    schedule.STOP.clear()


def _next(cron: str, tz: str, after: datetime) -> datetime:
    return Job(cron=cron, timezone=tz).trigger().get_next_fire_time(None, after)


def test_weekly_digest_fires_monday_nine_in_new_york_across_the_dst_change():
    # 2021-11-07 is when New York leaves daylight saving time.
    before = _next("0 9 * * mon", "America/New_York", datetime(2021, 10, 30, tzinfo=timezone.utc))
    after = _next("0 9 * * mon", "America/New_York", datetime(2021, 11, 5, tzinfo=timezone.utc))
    assert before == datetime(2021, 11, 1, 9, tzinfo=NEW_YORK) and before.utcoffset() == timedelta(hours=-4)
    assert after == datetime(2021, 11, 8, 9, tzinfo=NEW_YORK) and after.utcoffset() == timedelta(hours=-5)
    assert after.astimezone(timezone.utc).hour == 14


def test_quarter_hourly_refresh_and_other_zones():
    start = datetime(2021, 11, 4, 12, 7, tzinfo=timezone.utc)
    assert _next("*/15 * * * *", "America/New_York", start) == datetime(2021, 11, 4, 12, 15, tzinfo=timezone.utc)
    assert _next("30 6 * * *", "Europe/London", start) == datetime(2021, 11, 5, 6, 30, tzinfo=ZoneInfo("Europe/London"))
    assert _next("0 0 1 * *", "Asia/Tokyo", start) == datetime(2021, 12, 1, tzinfo=ZoneInfo("Asia/Tokyo"))


def test_a_time_skipped_by_spring_forward_runs_once_late_not_never():
    # 02:30 does not exist in New York on 2022-03-13 (clocks jump from 02:00 to 03:00).
    trigger = Job(cron="30 2 * * *", timezone="America/New_York").trigger()
    fire = trigger.get_next_fire_time(None, datetime(2022, 3, 13, 5, tzinfo=timezone.utc))
    assert fire.astimezone(timezone.utc) == datetime(2022, 3, 13, 7, 30, tzinfo=timezone.utc)  # 03:30 EDT
    following = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    assert following == datetime(2022, 3, 14, 2, 30, tzinfo=NEW_YORK) and following.utcoffset() == timedelta(hours=-4)


@pytest.mark.parametrize(("job", "message"), [
    ({"cron": "0 9 * * funday"}, "schedule.jobs.weekly.cron: '0 9 * * funday' is not a valid crontab expression"),
    ({"cron": "0 9 * *"}, "is not a valid crontab expression"),
    ({"cron": "0 9 * * mon", "timezone": "Mars/Olympus"}, "schedule.jobs.weekly.timezone: unknown timezone 'Mars/Olympus'"),
])
def test_bad_schedule_is_reported_with_its_key(project, job, message):
    path = set_config(project, **{"schedule.jobs": {"weekly": job}})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)


def test_background_scheduler_runs_the_real_job_and_writes_the_feeds(project):
    config = load_config(set_config(project, **{"schedule.jobs": {"refresh": {"cron": "*/15 * * * *", "action": "feeds"}}}))
    scheduler = make_scheduler(config)
    done = threading.Event()
    scheduler.add_listener(lambda event: done.set(), EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.start()
    try:
        scheduler.add_job("pipeline.service.scheduler:run_job", IntervalTrigger(seconds=1), args=[str(config.source_file), "refresh"],
                          id="refresh", next_run_time=datetime.now(timezone.utc))
        assert done.wait(timeout=30)
    finally:
        scheduler.shutdown(wait=True)
    assert (project / "public" / "rss.xml").exists()
    storage = open_storage(config)
    try:
        (run,) = storage.recent_runs()
    finally:
        storage.close()
    assert (run.job, run.status, run.summary["action"]) == ("refresh", "ok", "feeds")


def test_job_store_keeps_the_schedule_and_a_missed_run_is_coalesced_into_one(project):
    config = load_config(set_config(project, **{"schedule.jobs": {"refresh": {"cron": "*/15 * * * *", "action": "feeds"}}}))
    first = make_scheduler(config)
    first.start(paused=True)
    sync_jobs(first, config)
    planned = first.get_job("refresh").next_run_time
    first.shutdown()
    # The service was down while three runs were due: move the stored time back 44 minutes.
    store = SQLAlchemyJobStore(url=jobs_url(config.path("state"), os.environ.get("PIPELINE_DATABASE_URL")))
    store.start(make_scheduler(config), "default")
    job = store.lookup_job("refresh")
    assert job.next_run_time == planned  # the store kept the schedule across the stop
    job.next_run_time = datetime.now(timezone.utc) - timedelta(minutes=44)
    store.update_job(job)
    store.shutdown()

    second = make_scheduler(config)
    runs = []
    ran = threading.Event()

    def executed(event):
        runs.append(event.scheduled_run_time)
        ran.set()

    second.add_listener(executed, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    second.start(paused=True)
    sync_jobs(second, config)  # same trigger: keeps the stored (missed) time
    assert second.get_job("refresh").next_run_time < datetime.now(timezone.utc) < planned
    second.resume()
    try:
        assert ran.wait(timeout=30)
    finally:
        # Waits for the submitted run; a burst of missed runs would be one submission of several
        # run times, each reported before shutdown returns, so counting after it cannot race.
        second.shutdown(wait=True)
    assert len(runs) == 1
    assert stored_next_run_times(config.path("state"), os.environ.get("PIPELINE_DATABASE_URL"))["refresh"] > \
        datetime.now(timezone.utc)


def test_changed_cron_replaces_the_stored_job(project):
    config = load_config(set_config(project, **{"schedule.jobs": {"refresh": {"cron": "*/15 * * * *"}}}))
    scheduler = make_scheduler(config)
    scheduler.start(paused=True)
    sync_jobs(scheduler, config)
    scheduler.shutdown()
    config = load_config(set_config(project, **{"schedule.jobs": {"refresh": {"cron": "0 6 * * *", "timezone": "UTC"}}}))
    scheduler = make_scheduler(config)
    scheduler.start(paused=True)
    sync_jobs(scheduler, config)
    assert scheduler.get_job("refresh").next_run_time.astimezone(timezone.utc).hour == 6
    scheduler.shutdown()


def _popen(project, *args):
    env = {**os.environ, "PIPELINE_SECRET": SECRET}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"), *args],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _waits_for_the_lock(process: subprocess.Popen) -> bool:
    """True once the process logs that it is waiting for the lock (with -vv); False if it ends first."""
    return any("waiting for" in line and "lock" in line for line in process.stderr)


def test_overlapping_runs_exit_with_the_documented_status_or_wait(project):
    gate = threading.Event()
    handler = RecordingHandler(gate=gate)
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, concurrency=1)
        add_subscribers(config, 3)
        first = _popen(project, "run")
        try:
            assert handler.data_started.wait(timeout=60), "the first run never reached the server"
            second = run_cli(project, "run")
            assert second.returncode == EXIT_LOCKED == 75
            assert "another pipeline run holds" in second.stderr and "--wait" in second.stderr
            assert run_cli(project, "send").returncode == EXIT_LOCKED  # sending takes the same lock
            waiting = _popen(project, "-vv", "run", "--wait")
            assert _waits_for_the_lock(waiting), "run --wait did not wait for the lock"
        finally:
            gate.set()
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, err
        assert "no new items since the last edition" in out
    assert len(handler.received) == 3


def test_service_stops_cleanly_on_sigterm_mid_send_and_the_next_run_finishes(project):
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, concurrency=2)
        set_config(project, **{"schedule.jobs": {"weekly": {"cron": "0 9 * * mon", "timezone": "America/New_York"}}})
        addresses = add_subscribers(config, 1000)
        service = _popen(project, "serve", "--now")
        assert handler.when_count(100).wait(timeout=120), "the service never started sending"
        service.send_signal(signal.SIGTERM)
        out, err = service.communicate(timeout=60)
        assert service.returncode == 0, err
        assert "finishing the current message, then stopping" in err

        storage = open_storage(config)
        counts = storage.ledger_counts(storage.latest_edition().id)
        storage.close()
        assert counts["sending"] == 0 and counts["sent"] == handler.count < 1000  # consistent, and stopped early

        finish = _popen(project, "send")
        out, err = finish.communicate(timeout=300)
        assert finish.returncode == 0, err
    received = handler.by_recipient()
    assert sorted(received) == addresses
    assert all(len(messages) == 1 for messages in received.values())  # a clean stop leaves no duplicates


def test_status_json_reports_the_runs_that_just_happened(project, secret):
    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    run_cli(project, "run", check=True)
    run_cli(project, "run", "--job", "refresh-feeds", check=True)
    report = json.loads(run_cli(project, "status", "--json", check=True).stdout)
    assert [(r["job"], r["status"]) for r in report["runs"]] == [("refresh-feeds", "ok"), ("manual", "ok")]
    assert report["runs"][1]["summary"]["sent"] == 1 and report["runs"][0]["summary"]["action"] == "feeds"
    assert {j["name"] for j in report["jobs"]} == {"refresh-feeds", "weekly-digest", "retry-deferred"}
    assert all(j["next_run"] for j in report["jobs"])
    assert report["last_edition"]["sent"] == 1 and report["subscribers"]["subscribed"] == 1
    text = run_cli(project, "status", check=True).stdout
    assert "weekly-digest" in text and "Subscribers: 1 subscribed" in text


def test_json_log_lines(project, tmp_path):
    log_file = tmp_path / "pipeline.log"
    run_cli(project, "--log-format", "json", "--log-file", str(log_file), "-v", "run", "--no-send", check=True)
    entries = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert entries and {"time", "level", "logger", "message"} <= set(entries[0])
    assert any("job manual:" in e["message"] for e in entries)

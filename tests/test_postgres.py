"""Beyond one machine: PostgreSQL with several processes, each standing in for a machine of its own
(a separate project copy and state folder, one database)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import func, select

from pipeline import usecases
from pipeline.config import load_config
from pipeline.delivery.editions import plan_edition
from pipeline.state.storage import SCHEMA_VERSION, Storage, claim_statement, deliveries, schema_info

from .conftest import SECRET, add_subscribers, set_config, use_smtp
from .smtp_sink import RecordingHandler, SmtpSink


def _machine(project: Path, name: str) -> Path:
    """Another machine: its own copy of the project and state folder, the same database."""
    other = project.parent / name
    shutil.copytree(project, other, ignore=shutil.ignore_patterns(".state", "public", "outbox"))
    return other


def _pipeline(project: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PIPELINE_SECRET": SECRET}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"), *args],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _make_edition(config) -> str:
    with usecases.open_storage(config) as storage:
        local, _remote = usecases.read_items(config, storage, fetch=False)
        ctx = usecases.RunContext(config, storage, local)
        plan = plan_edition(ctx.items, storage, config, ctx.stored)
    assert plan.created and plan.edition_id
    return plan.edition_id


def _eventually(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # polling a condition from outside the processes under test
    return True


def _wait_for(condition, timeout: float, what: str) -> None:
    if not _eventually(condition, timeout):
        raise AssertionError(f"timed out waiting for {what}")


def test_the_first_claim_after_an_edition_is_made_takes_one_batch_without_a_nested_loop(backend):
    storage = Storage(backend.url)
    try:
        storage.merge_subscribers([(f"r{n:05d}@example.org", None, {}) for n in range(20_000)])
        from pipeline.state.storage import StoredDigest

        storage.create_edition("e1", ["urn:x:1"], StoredDigest("S", "<p>x</p>", "x"))
        statement = claim_statement("e1", 200, "w1", datetime.now(timezone.utc), "postgresql")
        compiled = statement.compile(dialect=storage.engine.dialect)
        with storage.engine.begin() as conn:
            plan = "\n".join(conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).scalars())
            conn.rollback()
        assert "InitPlan" in plan and "Nested Loop" not in plan, plan
        started = time.perf_counter()
        claims = storage.claim("e1", 200, "w1")
        elapsed = time.perf_counter() - started
    finally:
        storage.close()
    assert len(claims) == 200
    assert elapsed < 1.0, f"the first claim took {elapsed:.3f}s"  # 3.4-54 s with IN (...) before


def test_eight_processes_migrating_an_empty_database_at_once_all_succeed(backend):
    code = f"from pipeline.state.storage import Storage; Storage({backend.url!r}).close(); print('ok')"
    processes = [_python(code) for _ in range(8)]
    results = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * 8, [err for _out, err in results]
    storage = Storage(backend.url)
    try:
        with storage.engine.connect() as conn:
            assert conn.execute(select(schema_info.c.version)).scalars().all() == [SCHEMA_VERSION]
    finally:
        storage.close()


def test_four_processes_making_the_same_edition_make_one(backend, tmp_path):
    storage = Storage(backend.url)
    storage.merge_subscribers([(f"r{n}@example.org", None, {}) for n in range(300)])
    storage.close()
    go = tmp_path / "go"
    code = ("import pathlib, time\nfrom pipeline.state.storage import Storage, StoredDigest\n"
            f"s = Storage({backend.url!r})\n"
            f"while not pathlib.Path({str(go)!r}).exists():\n    time.sleep(0.001)\n"
            "print(s.create_edition('e1', ['urn:x:1'], StoredDigest('S', '<p>x</p>', 'x')))\n")
    processes = [_python(code) for _ in range(4)]
    time.sleep(1.0)  # let all four connect and migrate, then release them together
    go.touch()
    results = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, [err for _out, err in results]
    assert sorted(out.strip() for out, _err in results) == ["False", "False", "False", "True"]
    storage = Storage(backend.url)
    try:
        assert storage.ledger_counts("e1")["pending"] == 300
    finally:
        storage.close()


def test_four_workers_on_four_machines_send_each_subscriber_exactly_once(project, secret):
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, concurrency=2)
        addresses = add_subscribers(config, 5000)
        edition_id = _make_edition(config)
        machines = [_machine(project, f"machine-{n}") for n in range(4)]
        workers = [_pipeline(machine, "worker", "--once") for machine in machines]
        results = [w.communicate(timeout=300) for w in workers]
        assert [w.returncode for w in workers] == [0] * 4, [err[-2000:] for _out, err in results]
    received = Counter(m.recipient for m in handler.received)
    assert sorted(received) == addresses and set(received.values()) == {1}
    with usecases.open_storage(config) as storage:
        assert storage.ledger_counts(edition_id)["sent"] == 5000
    assert sum(1 for _out, err in results if "sent 0," not in _out) >= 2  # the work was shared


def test_a_killed_workers_messages_are_sent_by_the_others_within_a_lease(project, secret):
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, concurrency=2, rate_limit=600)
        config = load_config(set_config(project, **{"delivery.lease_seconds": 2}))
        addresses = add_subscribers(config, 2000)
        edition_id = _make_edition(config)
        workers = [_pipeline(_machine(project, f"machine-{n}"), "worker") for n in range(3)]
        try:
            assert handler.when_count(300).wait(timeout=120), "the workers never got going"
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(timeout=30)
            killed_at = time.monotonic()

            def all_sent() -> bool:
                with usecases.open_storage(config) as storage:
                    return storage.ledger_counts(edition_id)["sent"] == 2000

            finished = _eventually(all_sent, 120)
            finished_within = time.monotonic() - killed_at
            with usecases.open_storage(config) as storage:
                counts = storage.ledger_counts(edition_id)
        finally:
            for worker in workers[1:]:
                worker.send_signal(signal.SIGTERM)
            outputs = [worker.communicate(timeout=60) for worker in workers[1:]]
    assert finished, f"the other workers did not finish the edition: {counts}; " + " | ".join(
        err[-2000:] for _out, err in outputs)
    assert [w.returncode for w in workers[1:]] == [0, 0], [err[-3000:] for _out, err in outputs]
    received = Counter(m.recipient for m in handler.received)
    assert sorted(received) == addresses, "somebody was skipped"
    duplicates = sum(1 for count in received.values() if count > 1)
    assert set(received.values()) <= {1, 2} and duplicates <= 2, duplicates  # the dead worker's 2 connections
    assert finished_within < 60


def test_only_one_of_two_services_leads_and_the_other_takes_over_when_it_dies(project, secret):
    set_config(project, **{"schedule.jobs": {"refresh": {"cron": "0 3 * * *", "action": "feeds"}}})
    logs = [project.parent / f"service-{n}.log" for n in range(2)]
    services = [_pipeline(_machine(project, f"machine-{n}"), "--log-file", str(logs[n]), "serve") for n in range(2)]

    def leading() -> list[int]:
        return [n for n, log in enumerate(logs) if log.exists() and "leading the schedule" in log.read_text()]

    try:
        _wait_for(lambda: len(leading()) == 1 and all(
            log.exists() and ("standing by" in log.read_text() or "leading" in log.read_text()) for log in logs),
            60, "one service to lead and one to stand by")
        (leader,) = leading()
        other = 1 - leader
        assert "standing by" in logs[other].read_text()
        services[leader].send_signal(signal.SIGKILL)
        services[leader].wait(timeout=30)
        _wait_for(lambda: other in leading(), 30, "the standby to take over")
    finally:
        for service in services:
            if service.poll() is None:
                service.send_signal(signal.SIGTERM)
        outputs = [service.communicate(timeout=60) for service in services]
    assert services[other].returncode == 0, outputs[other][1][:3000]


def test_three_workers_share_one_rate_limit(project, secret):
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, concurrency=1, rate_limit=50)
        config = load_config(set_config(project, **{"delivery.lease_seconds": 1.5}))
        add_subscribers(config, 300)
        _make_edition(config)
        workers = [_pipeline(_machine(project, f"machine-{n}"), "worker", "--once") for n in range(3)]
        results = [w.communicate(timeout=120) for w in workers]
        errors = [line for _out, err in results for line in err.splitlines() if " ERROR " in line or "Error" in line]
        assert [w.returncode for w in workers] == [0] * 3, errors
    times = sorted(m.when for m in handler.received)
    assert len(times) == 300
    window = [t for t in times if t >= times[0] + 1.0]  # after every worker has counted the others
    rate = (len(window) - 1) / (window[-1] - window[0])
    assert rate <= 55, f"{rate:.1f} msg/s overall with rate_limit 50"


def test_status_lists_live_workers_and_their_leases(project, secret):
    config = load_config(project / "config.yaml")
    add_subscribers(config, 10)
    _make_edition(config)
    with usecases.open_storage(config) as storage:
        storage.heartbeat("machine-a-1-abc", "machine-a", 1)
        storage.claim(storage.latest_edition().id, 4, "machine-a-1-abc")
        with storage.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 10
    report = usecases.status(config)
    (worker,) = report.workers
    assert (worker.id, worker.host, worker.holds) == ("machine-a-1-abc", "machine-a", 4)


def test_renewing_leases_skips_the_row_a_send_is_recording_instead_of_waiting_on_it(backend):
    """A worker's heartbeat renews its rows while its send threads record one row and begin the next;
    waiting on their lock could deadlock with them, so the renewal leaves the locked row (its own send
    sets claimed_at) and renews the rest at once."""
    from sqlalchemy import text

    from pipeline.state.storage import StoredDigest

    storage = Storage(backend.url)
    storage.merge_subscribers([(f"reader{n}@mesems.example.org", None, {}) for n in range(3)])
    storage.create_edition("e1", ["urn:mesems:1"], StoredDigest("MESEMS trial", "<p>x</p>", "x"))
    claims = storage.claim("e1", 10, "worker-a")
    assert len(claims) == 3
    renewed: list[int] = []
    with storage.engine.connect() as sender:  # a send thread mid-transaction on its row
        sender.execute(text("SELECT 1 FROM deliveries WHERE edition_id = 'e1' AND subscriber_id = :i FOR UPDATE"),
                       {"i": claims[0].subscriber_id})
        heartbeat = threading.Thread(target=lambda: renewed.append(storage.renew_leases("worker-a")), daemon=True)
        heartbeat.start()
        heartbeat.join(timeout=10)
        waited = heartbeat.is_alive()
        sender.rollback()  # lets a waiting renewal finish either way
    heartbeat.join(timeout=10)
    assert not waited and renewed == [2]
    assert storage.renew_leases("worker-a") == 3
    storage.close()

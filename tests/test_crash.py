"""A sender killed with SIGKILL mid-edition: the next run finishes it, and nobody is skipped or mailed twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter

from pipeline.usecases import open_storage

from .conftest import SECRET, add_subscribers, use_smtp
from .smtp_sink import RecordingHandler, SmtpSink

SUBSCRIBERS = 1000
CONCURRENCY = 2


def _send(project) -> subprocess.Popen:
    env = {**os.environ, "PIPELINE_SECRET": SECRET}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"), "send"],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_minus_nine_mid_send_then_rerun_completes_exactly_once(project):
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, concurrency=CONCURRENCY)
        addresses = add_subscribers(config, SUBSCRIBERS)

        first = _send(project)
        assert handler.when_count(300).wait(timeout=120), "the sender never got going"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL
        accepted_before_kill = handler.count
        assert accepted_before_kill < SUBSCRIBERS, "killed too late to test anything"

        second = _send(project)
        out, err = second.communicate(timeout=300)
        assert second.returncode == 0, err

    storage = open_storage(config)
    try:
        edition = storage.latest_edition()
        counts = storage.ledger_counts(edition.id)
    finally:
        storage.close()
    assert counts == {"pending": 0, "sending": 0, "sent": SUBSCRIBERS, "failed": 0, "deferred": 0,
                      "skipped": 0}

    received = handler.by_recipient()
    assert sorted(received) == addresses, "somebody was skipped"
    # Each address has exactly one distinct message (by Message-ID): mail clients show it once.
    message_ids = {address: {m.message["Message-ID"] for m in messages} for address, messages in received.items()}
    assert all(len(ids) == 1 for ids in message_ids.values())
    # Raw copies: only a message the server accepted in the instant before the kill, before the dead
    # sender recorded it, goes out a second time: at most one per open connection, never a third.
    copies = Counter(len(messages) for messages in received.values())
    assert set(copies) <= {1, 2} and copies[2] <= CONCURRENCY, copies


def test_twenty_kills_at_random_points_miss_nobody_and_duplicate_at_most_one_per_connection(project):
    import random

    rng = random.Random(20211104)
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, concurrency=CONCURRENCY)
        addresses = add_subscribers(config, SUBSCRIBERS)
        duplicates_before = 0
        for kill in range(20):
            if handler.count >= SUBSCRIBERS - 60:
                break  # nothing left to interrupt
            sender = _send(project)
            target = handler.count + rng.randint(1, 40)
            assert handler.when_count(target).wait(timeout=120), f"kill {kill}: the sender never got going"
            sender.send_signal(signal.SIGKILL)
            sender.wait(timeout=30)
            copies = Counter(m.recipient for m in handler.received)
            duplicates = sum(count - 1 for count in copies.values())
            assert duplicates - duplicates_before <= CONCURRENCY, f"kill {kill}: {duplicates - duplicates_before}"
            duplicates_before = duplicates
        last = _send(project)
        _out, err = last.communicate(timeout=300)
        assert last.returncode == 0, err
    received = handler.by_recipient()
    assert sorted(received) == addresses, "somebody was skipped"
    assert all(len({m.message["Message-ID"] for m in messages}) == 1 for messages in received.values())

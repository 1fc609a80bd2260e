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


def _in_flight(config) -> list[str]:
    storage = open_storage(config)
    try:
        edition = storage.latest_edition()
        return storage.in_flight(edition.id) if edition else []
    finally:
        storage.close()


def test_twenty_kills_at_random_points_miss_nobody_and_duplicate_at_most_one_per_connection(project):
    """After each kill, once the server has read the dead sender's sockets to the end, the messages
    it accepted in that run whose rows are still 'sending' are the ones the next run sends again:
    at most one per connection, and together exactly the copies that arrive twice."""
    import random

    rng = random.Random(20211104)
    handler = RecordingHandler()
    resent_after_kill: list[int] = []
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, concurrency=CONCURRENCY)
        addresses = add_subscribers(config, SUBSCRIBERS)
        for kill in range(20):
            if handler.count >= SUBSCRIBERS - 60:
                break  # nothing left to interrupt
            run_started_at = len(handler.received)
            sender = _send(project)
            target = handler.count + rng.randint(1, 40)
            assert handler.when_count(target).wait(timeout=120), f"kill {kill}: the sender never got going"
            sender.send_signal(signal.SIGKILL)
            sender.wait(timeout=30)
            assert sink.wait_disconnected(timeout=30), f"kill {kill}: the dead sender's connections stayed open"
            accepted_this_run = {m.recipient for m in handler.received[run_started_at:]}
            unrecorded = accepted_this_run & set(_in_flight(config))
            assert len(unrecorded) <= CONCURRENCY, f"kill {kill}: {sorted(unrecorded)}"
            resent_after_kill.append(len(unrecorded))
        assert len(resent_after_kill) >= 10, "the edition ran out before the kills could test anything"
        last = _send(project)
        _out, err = last.communicate(timeout=300)
        assert last.returncode == 0, err
    received = handler.by_recipient()
    assert sorted(received) == addresses, "somebody was skipped"
    assert all(len({m.message["Message-ID"] for m in messages}) == 1 for messages in received.values())
    # Every second copy is one a kill left unrecorded: nothing else sends a message twice.
    assert len(handler.received) - len(addresses) == sum(resent_after_kill)

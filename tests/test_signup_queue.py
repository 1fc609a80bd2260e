"""The sign-up's notice queue: a form's mail leaves after the answer, through a drainer that retries.

The form's request only queues its mail, so the answer never waits on the relay (and a new address's
answer cannot be told from a known one's by its time: ``test_signup_timing.py``).  These tests drive the
drainer's pass (``Signups.deliver_queued``) with the clock the app uses, against real relays on loopback.
"""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.config import load_config
from pipeline.service.web import make_app, make_web_server
from pipeline.usecases import open_storage
from pipeline.usecases.signup import SignupForm, Signups

from .conftest import run_cli, set_config, use_smtp
from .smtp_sink import RecordingHandler, SmtpSink, free_port
from .test_signup import Client, Clock, outbox


@pytest.fixture
def site(project, secret):
    set_config(project, **{"signup.check_deliverability": False})
    return project


def _form(client: Client, clock: Clock, email: str, ip: str = "203.0.113.7") -> dict:
    stamp = client.stamp()
    clock.advance(seconds=5)
    return {"email": email, "stamp": stamp}


def _queued_signup(config, storage, clock: Clock, email: str) -> None:
    """A signup whose mail is queued and nobody woken (a server stopped right after answering)."""
    signups = Signups(config, storage, clock=clock)
    stamp = signups.form_stamp()
    clock.advance(seconds=5)
    assert signups.subscribe(SignupForm(email, stamp=stamp, client_ip="203.0.113.7")).queued


def _wait_for(condition, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_signup_is_answered_while_the_relay_is_down_and_its_mail_goes_when_the_relay_is_back(site):
    port = free_port()  # nothing listens here yet: the relay is down
    config = use_smtp(site, port)
    clock = Clock()
    with open_storage(config) as storage:
        drained = []
        app = make_app(config, storage, clock=clock, on_notice_queued=lambda: drained.append(1))
        client = Client(app)
        answer = client.request("POST", "/subscribe", _form(client, clock, "grace@mesems.example.org"))
        assert answer.status == 200 and "Check your inbox" in answer.body and drained == [1]
        drainer = Signups(config, storage, clock=clock)
        first = drainer.deliver_queued()
        assert (first.sent, first.retrying) == (0, 1) and storage.notice_counts() == {"queued": 1}
        handler = RecordingHandler()
        with SmtpSink(handler, port=port):
            assert drainer.deliver_queued().sent == 0  # not due yet: the first retry waits a minute
            clock.advance(minutes=1, seconds=1)
            assert drainer.deliver_queued().sent == 1
    assert [message.recipient for message in handler.received] == ["grace@mesems.example.org"]
    assert handler.received[0].message["Subject"].startswith("Confirm your subscription")
    assert storage.notice_counts() == {"sent": 1}


def test_a_relay_that_stays_down_ends_the_notice_after_its_retries(site):
    config = use_smtp(site, free_port())
    clock = Clock()
    with open_storage(config) as storage:
        _queued_signup(config, storage, clock, "grace@mesems.example.org")
        drainer = Signups(config, storage, clock=clock)
        passes = []
        for _ in range(5):
            passes.append(drainer.deliver_queued())
            clock.advance(hours=2, minutes=1)  # past the longest wait
        assert [(p.retrying, p.failed) for p in passes] == [(1, 0)] * 4 + [(0, 1)]
        assert storage.notice_counts() == {"failed": 1}
    status = run_cli(site, "status")
    assert "Sign-up mail: 0 queued, 0 being sent, 1 failed" in status.stdout, status.stderr


def test_a_relay_that_refuses_the_address_fails_the_notice_at_once(site):
    handler = RecordingHandler()
    with SmtpSink(handler, smtputf8=False) as sink:  # cannot take jörg's address
        config = use_smtp(site, sink.port)
        clock = Clock()
        with open_storage(config) as storage:
            _queued_signup(config, storage, clock, "jörg@example.org")
            report = Signups(config, storage, clock=clock).deliver_queued()
            assert (report.sent, report.retrying, report.failed) == (0, 0, 1)
            assert storage.notice_counts() == {"failed": 1}
    assert handler.received == []


def test_mail_queued_before_the_server_stopped_goes_out_when_it_starts(site):
    config = load_config(site / "config.yaml")
    with open_storage(config) as storage:
        clock = Clock()
        clock.advance(seconds=-10)  # queued a moment ago: due for the server's real clock
        _queued_signup(config, storage, clock, "grace@mesems.example.org")
        assert outbox(config) == []
        server = make_web_server(config, storage, "127.0.0.1", 0)  # not even serving yet: its drainer starts
        try:
            _wait_for(lambda: storage.notice_counts() == {"sent": 1})
        finally:
            server.server_close()
        assert [mail["To"] for mail in outbox(config)] == ["grace@mesems.example.org"]


def test_a_notice_whose_drainer_died_mid_send_is_taken_back_after_its_lease(site):
    config = load_config(site / "config.yaml")
    clock = Clock()
    with open_storage(config) as storage:
        _queued_signup(config, storage, clock, "grace@mesems.example.org")
        (claimed,) = storage.claim_notices(clock.now, clock.now)  # a drainer took it and was killed
        drainer = Signups(config, storage, clock=clock)
        clock.advance(minutes=9)
        assert drainer.deliver_queued().sent == 0  # its lease still runs
        clock.advance(minutes=2)
        assert drainer.deliver_queued().sent == 1
    assert claimed.attempts == 1 and len(outbox(config)) == 1


def test_a_notice_no_longer_wanted_is_dropped_not_sent(site):
    config = load_config(site / "config.yaml")
    clock = Clock()
    with open_storage(config) as storage:
        _queued_signup(config, storage, clock, "grace@mesems.example.org")
        storage.operator_add("grace@mesems.example.org", None, None, confirmed=True, now=clock.now)
        report = Signups(config, storage, clock=clock).deliver_queued()
        assert (report.sent, report.dropped) == (0, 1)
        assert storage.notice_counts() == {"dropped": 1}
    assert outbox(config) == []


def test_two_drainers_on_one_queue_send_each_notice_once(site):
    set_config(site, **{"signup.ip_limit": 1000})
    config = load_config(site / "config.yaml")
    clock = Clock()
    addresses = [f"reader{n:03d}@mesems.example.org" for n in range(60)]
    with open_storage(config) as storage:
        for address in addresses:
            _queued_signup(config, storage, clock, address)
    start = threading.Barrier(2)
    reports = []

    def drain() -> None:
        with open_storage(config) as own:  # each drainer its own connection pool, as two processes would have
            signups = Signups(config, own, clock=clock)
            start.wait()
            reports.append(signups.deliver_queued())

    threads = [threading.Thread(target=drain) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sum(report.sent for report in reports) == len(addresses)
    assert sorted(mail["To"] for mail in outbox(config)) == addresses  # each once

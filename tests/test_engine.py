"""The send engine against an in-memory ledger: every way a send can end, ends cleanly."""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.delivery.engine import Sender, SendSettings
from pipeline.delivery.transports import PermanentError, TransientError
from pipeline.errors import PipelineError
from pipeline.state.storage import DEFERRED, FAILED, LEDGER_STATUSES, PENDING, SENDING, SENT, SKIPPED, Claim, Outcome

T0 = datetime(2021, 11, 4, 9, 0, tzinfo=timezone.utc)


class MemoryLedger:
    """The Ledger protocol in a dict, with the same ownership rules as the database."""

    def __init__(self, count: int, *, fail_records_after: int | None = None):
        self.rows = {n: {"email": f"reader{n:03d}@example.org", "status": PENDING, "attempts": 0, "worker": None,
                         "retry_at": None, "first": None} for n in range(count)}
        self.lock = threading.RLock()
        self.records = 0
        self.fail_records_after = fail_records_after
        self.now = T0

    def claim(self, edition_id, limit, worker):
        with self.lock:
            due = [n for n, r in self.rows.items() if r["status"] == PENDING
                   or (r["status"] == DEFERRED and r["retry_at"] <= self.now)][:limit]
            for n in due:
                self.rows[n].update(status=SENDING, worker=worker)
            return [Claim(edition_id, n, self.rows[n]["email"], self.rows[n]["attempts"], worker, self.rows[n]["first"])
                    for n in due]

    def begin_attempt(self, claim):
        with self.lock:
            row = self.rows[claim.subscriber_id]
            if row["status"] != SENDING or row["worker"] != claim.worker:
                return False
            row["first"] = row["first"] or self.now
            return True

    def record_results(self, results: list[Outcome]):
        with self.lock:
            if self.fail_records_after is not None and self.records >= self.fail_records_after:
                raise OSError("disk full")
            for o in results:
                row = self.rows[o.claim.subscriber_id]
                if row["status"] == SENDING and row["worker"] == o.claim.worker:
                    row.update(status=o.status, attempts=o.attempts, retry_at=o.retry_at, worker=None)
            self.records += 1

    def record_and_begin(self, outcome: Outcome, claim):
        with self.lock:  # one transaction: a failing ledger records neither
            self.record_results([outcome])
            return self.begin_attempt(claim)

    def release_stale(self, edition_id, claimed_before):
        with self.lock:
            stale = [r for r in self.rows.values() if r["status"] == SENDING]
            for row in stale:
                row.update(status=PENDING, worker=None)
            return len(stale)

    def renew_leases(self, worker):
        return 0

    def ledger_counts(self, edition_id):
        with self.lock:
            return {s: sum(1 for r in self.rows.values() if r["status"] == s) for s in LEDGER_STATUSES}

    def next_retry(self, edition_id):
        with self.lock:
            due = [r["retry_at"] for r in self.rows.values() if r["status"] == DEFERRED]
            return min(due, default=None)

    def unsubscribe(self, n):
        with self.lock:
            if self.rows[n]["status"] in (PENDING, SENDING, DEFERRED):
                self.rows[n]["status"] = SKIPPED


class Transport:
    name = "smtp"

    def __init__(self, reply=None, *, connect_error: Exception | None = None):
        self.reply = reply or (lambda recipient: "250 OK")
        self.connect_error = connect_error
        self.sent: list[str] = []
        self.lock = threading.Lock()

    def connect(self):
        if self.connect_error is not None:
            raise self.connect_error
        transport = self

        class Connection:
            def send(self, sender, recipient, message, key):
                reply = transport.reply(recipient)
                with transport.lock:
                    transport.sent.append(recipient)
                return reply

            def close(self):
                pass

        return Connection()


# No waiting for retries unless a test asks for it: a deferred row waits for a later run.
SETTINGS = SendSettings("news@example.org", batch_size=10, connections=2, retry_window=timedelta(0))


def _sender(ledger, transport, settings=SETTINGS, **kwargs) -> Sender:
    return Sender(ledger, "e1", lambda claim: b"message", transport, settings, progress=False,
                  clock=lambda: ledger.now, **kwargs)


def test_every_row_is_sent_once_and_recorded():
    ledger = MemoryLedger(25)
    report = _sender(ledger, transport := Transport()).run()
    assert report.sent == 25 and sorted(transport.sent) == sorted(r["email"] for r in ledger.rows.values())
    assert ledger.ledger_counts("e1")[SENT] == 25


def test_a_transport_that_cannot_connect_ends_the_send_with_claims_handed_back():
    ledger = MemoryLedger(100)
    with pytest.raises(PipelineError, match="sending stopped: .*Permission denied"):
        _sender(ledger, Transport(connect_error=PermissionError("Permission denied: 'outbox'"))).run()
    assert ledger.ledger_counts("e1")[PENDING] == 100


def test_a_ledger_that_fails_ends_the_send_cleanly():
    ledger = MemoryLedger(50, fail_records_after=5)
    with pytest.raises(PipelineError, match="disk full"):
        _sender(ledger, Transport()).run()
    counts = ledger.ledger_counts("e1")
    assert counts[SENT] == 5 and counts[PENDING] + counts[SENDING] == 45  # the next run takes 'sending' back


def test_a_temporary_refusal_is_deferred_then_sent_by_a_later_run():
    failing = {"reader001@example.org"}

    def reply(recipient):
        if recipient in failing:
            raise TransientError("451 4.7.1 try again later")
        return "250 OK"

    ledger = MemoryLedger(3)
    first = _sender(ledger, Transport(reply)).run()
    assert (first.sent, first.deferred, first.retried, first.failed) == (2, 1, 1, 0)
    retry_at = ledger.rows[1]["retry_at"]
    assert retry_at == T0 + SETTINGS.retry_delay
    assert _sender(ledger, Transport(reply)).run().sent == 0  # not due yet: not even tried
    failing.clear()
    ledger.now = retry_at
    assert _sender(ledger, Transport(reply)).run().sent == 1
    assert ledger.ledger_counts("e1")[SENT] == 3


def test_a_message_refused_temporarily_for_longer_than_retry_for_is_given_up():
    ledger = MemoryLedger(1)
    transport = Transport(lambda r: (_ for _ in ()).throw(TransientError("452 4.2.2 mailbox full")))
    _sender(ledger, transport).run()
    ledger.now = T0 + SETTINGS.retry_for + timedelta(minutes=1)
    report = _sender(ledger, transport).run()
    assert report.failed == 1 and ledger.rows[0]["status"] == FAILED


def test_a_relay_that_cannot_be_reached_stops_the_send_instead_of_deferring_everyone():
    def refused(recipient):
        raise TransientError("connect to 127.0.0.1:25: Connection refused", unreachable=True)

    ledger = MemoryLedger(500)
    report = _sender(ledger, Transport(refused)).run()
    assert report.unreachable and "Connection refused" in report.unreachable
    counts = ledger.ledger_counts("e1")
    assert counts[DEFERRED] <= SETTINGS.connections  # one tried message per connection
    assert counts[PENDING] == 500 - counts[DEFERRED] and counts[SENDING] == 0


def test_a_row_unsubscribed_after_it_was_claimed_is_not_sent():
    ledger = MemoryLedger(20)

    def reply(recipient):
        if recipient == "reader000@example.org":
            ledger.unsubscribe(5)  # claimed in the same batch, not yet sent
        return "250 OK"

    transport = Transport(reply)
    report = _sender(ledger, transport, replace(SETTINGS, connections=1)).run()
    assert "reader005@example.org" not in transport.sent
    assert report.withdrawn == 1 and report.sent == 19 and ledger.rows[5]["status"] == SKIPPED


def test_one_address_that_cannot_be_rendered_fails_alone():
    ledger = MemoryLedger(10)

    def render(claim):
        if claim.subscriber_id == 3:
            raise UnicodeEncodeError("ascii", "ü", 0, 1, "ordinal not in range(128)")
        return b"message"

    report = Sender(ledger, "e1", render, Transport(), SETTINGS, progress=False, clock=lambda: ledger.now).run()
    assert (report.sent, report.failed) == (9, 1) and ledger.rows[3]["status"] == FAILED


def test_a_permanent_refusal_fails_only_that_row():
    def reply(recipient):
        if recipient == "reader002@example.org":
            raise PermanentError("550 5.1.1 No such user")
        return "250 OK"

    ledger = MemoryLedger(4)
    report = _sender(ledger, Transport(reply)).run()
    assert (report.sent, report.failed) == (3, 1)


# -- temporary refusals never hold a connection (issue 26) ----------------------------------------

GREYLIST = timedelta(seconds=60)
WAITING = replace(SETTINGS, connections=1, batch_size=200, retry_delay=timedelta(seconds=2),
                  retry_window=timedelta(minutes=10))


class GreylistingRelay(Transport):
    """451 for each greylisted recipient until GREYLIST has passed since its first try (as postgrey
    does), on the ledger's clock; records when each message was accepted."""

    def __init__(self, ledger: MemoryLedger, greylisted: set[str]):
        self.first_try: dict[str, datetime] = {}
        self.accepted_at: dict[str, datetime] = {}
        self.tries: list[tuple[str, datetime]] = []

        def reply(recipient):
            now = ledger.now
            self.tries.append((recipient, now))
            first = self.first_try.setdefault(recipient, now)
            if recipient in greylisted and now - first < GREYLIST:
                raise TransientError("451 4.7.1 Greylisted, try again later")
            self.accepted_at[recipient] = now
            return "250 OK"

        super().__init__(reply)


def _waiting_sender(ledger, transport, settings=WAITING, **kwargs) -> Sender:
    def sleep(seconds: float) -> None:  # the send waits for a retry to come due: time passes at once
        ledger.now += timedelta(seconds=seconds)

    return _sender(ledger, transport, settings, sleep=sleep, **kwargs)


def test_a_greylisting_relay_gets_every_recipient_within_two_greylist_delays_in_one_send():
    ledger = MemoryLedger(1000)
    everyone = {row["email"] for row in ledger.rows.values()}
    relay = GreylistingRelay(ledger, greylisted=everyone)
    report = _waiting_sender(ledger, relay).run()
    assert (report.sent, report.deferred, report.failed) == (1000, 0, 0)
    assert sorted(relay.sent) == sorted(everyone)  # each accepted exactly once
    # Tries at 0, 2, 6, 14, 30 s are refused; the one at 62 s is past the 60 s greylist.
    latest = max(relay.accepted_at.values()) - T0
    assert latest == timedelta(seconds=62) and latest < 2 * GREYLIST
    assert report.retried == 5 * 1000 and ledger.ledger_counts("e1")[SENT] == 1000


def test_recipients_the_relay_does_not_greylist_are_not_slowed_at_all():
    ledger = MemoryLedger(400)
    greylisted = {row["email"] for n, row in ledger.rows.items() if n % 2 == 0}
    relay = GreylistingRelay(ledger, greylisted)
    report = _waiting_sender(ledger, relay).run()
    assert report.sent == 400
    others = [row for row in ledger.rows.values() if row["email"] not in greylisted]
    # Accepted on their first try, before any time passed: the connection never waited for a retry.
    assert all(relay.accepted_at[row["email"]] == T0 and row["attempts"] == 1 for row in others)
    first_pass = [recipient for recipient, when in relay.tries if when == T0]
    assert len(first_pass) == 400  # one try per recipient, in ledger order, before any retry
    assert first_pass == [row["email"] for row in ledger.rows.values()]


def test_retry_times_double_up_to_the_longest_delay_and_the_window_ends_the_send():
    ledger = MemoryLedger(1)
    relay = Transport(lambda r: (_ for _ in ()).throw(TransientError("452 4.2.2 mailbox full")))
    tries: list[datetime] = []
    original = relay.reply
    relay.reply = lambda recipient: (tries.append(ledger.now), original(recipient))[1]
    settings = replace(WAITING, max_retry_delay=timedelta(seconds=60))
    report = _waiting_sender(ledger, relay, settings).run()
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(tries)]
    assert gaps[:6] == [2, 4, 8, 16, 32, 60] and set(gaps[5:]) == {60}
    assert tries[-1] <= T0 + settings.retry_window < ledger.rows[0]["retry_at"]  # the next try: a later run
    assert (report.deferred, report.retried, report.sent) == (1, len(tries), 0)
    assert ledger.rows[0]["status"] == DEFERRED and ledger.rows[0]["attempts"] == len(tries)


def test_a_later_run_continues_the_schedule_where_the_last_one_stopped():
    ledger = MemoryLedger(1)
    relay = Transport(lambda r: (_ for _ in ()).throw(TransientError("451 4.3.0 try later")))
    _sender(ledger, relay).run()  # no window: one try
    _sender(ledger, relay).run()  # not due yet: not tried
    assert ledger.rows[0]["attempts"] == 1 and ledger.rows[0]["retry_at"] == T0 + timedelta(seconds=2)
    ledger.now = ledger.rows[0]["retry_at"]
    _sender(ledger, relay).run()
    assert ledger.rows[0]["attempts"] == 2 and ledger.rows[0]["retry_at"] == ledger.now + timedelta(seconds=4)


def test_a_stop_while_waiting_for_retries_returns_at_once_and_leaves_the_row_deferred():
    stop = threading.Event()
    ledger = MemoryLedger(5)
    relay = GreylistingRelay(ledger, greylisted={"reader003@example.org"})
    report = _sender(ledger, relay, WAITING, stop=stop, sleep=lambda seconds: stop.set()).run()
    assert report.stopped and (report.sent, report.deferred) == (4, 1)
    assert ledger.rows[3]["status"] == DEFERRED and ledger.rows[3]["retry_at"] == T0 + timedelta(seconds=2)


def test_a_connection_is_not_kept_open_while_the_send_waits_for_retries(monkeypatch):
    from pipeline.delivery import engine

    monkeypatch.setattr(engine, "IDLE_CLOSE", 0.0)  # close at once when idle (5 s in use)
    ledger = MemoryLedger(3)
    relay = GreylistingRelay(ledger, greylisted={row["email"] for row in ledger.rows.values()})
    closed = threading.Event()
    connect = relay.connect

    def connect_and_watch():
        connection = connect()
        connection.close = closed.set  # type: ignore[method-assign]
        return connection

    relay.connect = connect_and_watch  # type: ignore[method-assign]

    def sleep(seconds: float) -> None:
        assert closed.wait(10), "the idle connection was kept open while waiting"
        closed.clear()
        ledger.now += timedelta(seconds=seconds)

    report = _sender(ledger, relay, WAITING, sleep=sleep).run()
    assert report.sent == 3 and sorted(relay.sent) == sorted(r["email"] for r in ledger.rows.values())

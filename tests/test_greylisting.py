"""A greylisting relay (451 on each recipient's first try, accepted once its delay has passed), for real:
one `send` delivers everyone within about two greylist delays, and nobody else waits (issue 26)."""

from __future__ import annotations

from pipeline import usecases

from .conftest import add_subscribers, use_smtp
from .smtp_sink import Behaviour, RecordingHandler, SmtpSink

GREYLIST = 2.0  # seconds; 60 s or more on real relays (`python -m bench greylist` times 1,000 at 60 s)
# The first retry 0.3 s after a refusal, doubling: tries at 0, 0.3, 0.9 and 2.1 s, so every greylisted
# recipient is accepted at its fourth try, 2.1 s after its first, whatever G between 0.9 and 2.1 s.
RETRY = {"retry_delay": 0.3, "retry_window": 60}


def _send(project, count: int, greylisted: set[str] | None = None, **smtp):
    handler = RecordingHandler(Behaviour(greylist=GREYLIST, greylisted=greylisted), pipelining=True)
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, **{**RETRY, **smtp})
        addresses = add_subscribers(config, count)
        outcome = usecases.run(config, action="send", progress=False)
    return handler, addresses, outcome


def test_one_send_delivers_every_greylisted_recipient_once_within_two_greylist_delays(project, secret):
    handler, addresses, outcome = _send(project, 300)
    report = outcome.reports[0]
    assert (report.sent, report.deferred, report.failed) == (300, 0, 0) and outcome.status == "ok"
    received = handler.by_recipient()
    assert sorted(received) == addresses and all(len(messages) == 1 for messages in received.values())
    for address, (message,) in received.items():
        waited = message.when - handler.first_try[address]
        assert GREYLIST <= waited <= 2 * GREYLIST, (address, waited)
    assert report.retried == sum(handler.tries.values()) - 300  # every refusal was tried again, no more


def test_recipients_not_greylisted_are_delivered_on_their_first_try_without_waiting(project, secret):
    greylisted = {f"reader{n:05d}@example.org" for n in range(0, 300, 2)}
    handler, addresses, outcome = _send(project, 300, greylisted, concurrency=1)
    assert outcome.reports[0].sent == 300
    received = handler.by_recipient()
    others = [address for address in addresses if address not in greylisted]
    assert all(handler.tries[address] == 1 for address in others)
    # One connection: had it waited for a greylisted recipient's retry, the next recipient would have
    # been accepted after it; instead every other recipient is in before the first greylisted one.
    last_other = max(received[address][0].when for address in others)
    first_greylisted = min(received[address][0].when for address in greylisted)
    assert last_other < first_greylisted


def test_a_send_with_no_retry_window_leaves_greylisted_recipients_to_the_retry_job(project, secret):
    handler, addresses, outcome = _send(project, 20, retry_window=0)
    report = outcome.reports[0]
    assert (report.sent, report.deferred) == (0, 20) and report.next_retry is not None
    assert outcome.status == "failed" and handler.received == []

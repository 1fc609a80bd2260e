"""The pipelined SMTP path (MAIL, RCPT and DATA in one write) against a real server that offers it."""

from __future__ import annotations

from pipeline import app

from .conftest import add_subscribers, use_smtp
from .smtp_sink import Behaviour, RecordingHandler, SmtpSink


def _send(project, behaviour: Behaviour, count: int, **smtp):
    handler = RecordingHandler(behaviour, pipelining=True)
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, **smtp)
        addresses = add_subscribers(config, count)
        report = app.run(config, progress=False).reports[0]
    return handler, addresses, report


def test_every_message_arrives_once_and_intact(project, secret):
    handler, addresses, report = _send(project, Behaviour(), 50)
    assert (report.sent, report.failed) == (50, 0)
    received = handler.by_recipient()
    assert sorted(received) == addresses and all(len(m) == 1 for m in received.values())
    for address, (message,) in received.items():
        parsed = message.message
        assert parsed["To"] == address and parsed.get_body(("html",)).get_content().count("token=") >= 1


def test_temporary_and_permanent_refusals_are_classified_as_without_pipelining(project, secret):
    behaviour = Behaviour(defer={"reader00001@example.org": 2}, reject={"reader00002@example.org"})
    handler, _addresses, report = _send(project, behaviour, 4)
    assert (report.sent, report.failed, report.retried) == (3, 1, 2)
    assert report.failures == [("reader00002@example.org", "550 5.1.1 No such user here")]
    assert [len(m) for m in handler.by_recipient().values()] == [1, 1, 1]


def test_a_dropped_connection_is_reopened_and_nothing_is_lost(project, secret):
    handler, addresses, report = _send(project, Behaviour(drop_after={3, 7}), 10, concurrency=1)
    assert (report.sent, report.failed, report.retried) == (10, 0, 2)
    assert sorted(handler.by_recipient()) == addresses

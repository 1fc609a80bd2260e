"""The pipelined SMTP path (MAIL, RCPT and DATA in one write) against a real server that offers it."""

from __future__ import annotations

from pipeline import usecases

from .conftest import add_subscribers, use_smtp
from .smtp_sink import Behaviour, RecordingHandler, SmtpSink


def _send(project, behaviour: Behaviour, count: int, **smtp):
    handler = RecordingHandler(behaviour, pipelining=True)
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, **smtp)
        addresses = add_subscribers(config, count)
        report = usecases.run(config, progress=False).reports[0]
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


# -- one round trip per message: the next envelope goes out with this message's body (issue 26) -------

def _connection(sink):
    from pipeline.config import Smtp
    from pipeline.delivery.transports import SmtpTransport

    return SmtpTransport(Smtp(host="127.0.0.1", port=sink.port, security="none", timeout=10)).connect()


def _message(recipient: str):
    from pipeline.mail.message import dot_stuff

    return dot_stuff(f"From: news@example.org\r\nTo: {recipient}\r\nSubject: Research update\r\n\r\n"
                     f".A line that starts with a dot\r\nFor {recipient}\r\n".encode())


def test_the_next_envelope_goes_out_with_the_body_and_both_messages_arrive_once():
    handler = RecordingHandler(pipelining=True)
    with SmtpSink(handler) as sink:
        connection = _connection(sink)
        first, second = "reader00000@example.org", "reader00001@example.org"
        connection.send("news@example.org", first, _message(first), "0", then=("news@example.org", second))
        assert connection.announced == ("news@example.org", second)  # its MAIL, RCPT and DATA already answered
        assert [code for code, _ in connection.announced_replies] == [250, 250, 354]
        connection.send("news@example.org", second, _message(second), "1")
        connection.close()
    received = handler.by_recipient()
    assert sorted(received) == [first, second] and all(len(m) == 1 for m in received.values())
    assert received[second][0].raw.endswith(f"\r\n\r\n.A line that starts with a dot\r\nFor {second}\r\n".encode())


def test_an_announced_message_that_is_not_sent_is_never_delivered():
    handler = RecordingHandler(pipelining=True)
    with SmtpSink(handler) as sink:
        connection = _connection(sink)
        first, withdrawn, third = (f"reader0000{n}@example.org" for n in range(3))
        connection.send("news@example.org", first, _message(first), "0", then=("news@example.org", withdrawn))
        # The withdrawn reader unsubscribed after the claim: the engine sends the next one instead.
        connection.send("news@example.org", third, _message(third), "2", then=("news@example.org", withdrawn))
        connection.close()  # a stop with an envelope announced: closed in the DATA phase, no QUIT
    assert sorted(handler.by_recipient()) == [first, third]


def test_a_temporary_refusal_of_the_announced_recipient_is_its_own_outcome(project, secret):
    behaviour = Behaviour(defer={"reader00002@example.org": 1}, reject={"reader00004@example.org"})
    handler, addresses, report = _send(project, behaviour, 6, concurrency=1)
    assert (report.sent, report.failed, report.retried) == (5, 1, 1)
    received = handler.by_recipient()
    assert sorted(received) == [a for a in addresses if a != "reader00004@example.org"]
    assert all(len(m) == 1 for m in received.values())

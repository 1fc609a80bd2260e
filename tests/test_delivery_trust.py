"""Delivery people can trust, against a real SMTP server on loopback: international addresses,
failures that are visible, and a status that shows every message."""

from __future__ import annotations

from click.testing import CliRunner

from pipeline import usecases
from pipeline.cli import cli

from .conftest import add_subscribers, use_smtp
from .smtp_sink import Behaviour, RecordingHandler, SmtpSink


def _invoke(project, *args: str):
    return CliRunner().invoke(cli, ["--config", str(project / "config.yaml"), *args])


def test_an_internationalised_domain_is_stored_once_and_mailed_in_its_ascii_form(project, secret):
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port)
        add_subscribers(config, 3)
        assert _invoke(project, "subscribers", "add", "User@Bücher.example", "--confirmed").output.strip() == \
            "user@xn--bcher-kva.example: added"
        # the same address written in punycode is the same subscriber
        assert _invoke(project, "subscribers", "add", "user@xn--bcher-kva.example", "--confirmed").output.strip() == \
            "user@xn--bcher-kva.example: already subscribed"
        result = _invoke(project, "run")
    assert result.exit_code == 0, result.output
    received = handler.by_recipient()
    assert len(received) == 4 and len(received["user@xn--bcher-kva.example"]) == 1
    assert received["user@xn--bcher-kva.example"][0].message["To"] == "user@xn--bcher-kva.example"


def test_a_non_ascii_local_part_goes_out_where_the_server_offers_smtputf8(project, secret):
    handler = RecordingHandler()
    with SmtpSink(handler, smtputf8=True) as sink:
        use_smtp(project, sink.port)
        _invoke(project, "subscribers", "add", "josé@example.org", "--confirmed")
        result = _invoke(project, "run")
    assert result.exit_code == 0, result.output
    (message,) = handler.received
    assert message.recipient == "josé@example.org" and "To: josé@example.org\r\n".encode() in message.raw


def test_a_non_ascii_local_part_fails_alone_where_the_server_lacks_smtputf8(project, secret):
    handler = RecordingHandler()
    with SmtpSink(handler, smtputf8=False) as sink:
        config = use_smtp(project, sink.port)
        addresses = add_subscribers(config, 2)
        _invoke(project, "subscribers", "add", "josé@example.org", "--confirmed")
        result = _invoke(project, "run")
        assert result.exit_code == 2, result.output  # partial: some delivered, one failed
        assert "failed: josé@example.org" in result.output and "SMTPUTF8" in result.output
        assert sorted(handler.by_recipient()) == addresses
        assert _invoke(project, "run").exit_code == 0  # a rerun does not trip over it again


def test_a_test_copy_to_an_internationalised_domain_is_sent(project, secret):
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        use_smtp(project, sink.port)
        result = _invoke(project, "send", "--to", "editor@bücher.example")
    assert result.exit_code == 0, result.output
    assert [m.recipient for m in handler.received] == ["editor@xn--bcher-kva.example"]


def test_a_run_where_every_message_failed_exits_non_zero_and_is_recorded_failed(project, secret):
    addresses = [f"reader{n:05d}@example.org" for n in range(5)]
    handler = RecordingHandler(Behaviour(reject=set(addresses)))
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port)
        add_subscribers(config, 5)
        result = _invoke(project, "run")
    assert result.exit_code == 1 and "no message could be delivered" in result.output
    with usecases.open_storage(config) as storage:
        (record,) = storage.recent_runs()
    assert record.status == "failed" and record.summary["failed"] == 5


def test_an_outage_of_the_relay_defers_and_the_next_send_delivers_everyone(project, secret):
    from .smtp_sink import free_port

    port = free_port()  # nothing listens here yet: the relay is down
    config = use_smtp(project, port, retry_delay=0)
    addresses = add_subscribers(config, 20)
    down = _invoke(project, "run")
    assert down.exit_code == 1 and "could not be reached" in down.output
    status = _invoke(project, "status").output
    assert "deferred" in status and "pending" in status
    handler = RecordingHandler()
    sink = SmtpSink(handler)
    sink.port = port
    sink.controller.port = port
    with sink:
        up = _invoke(project, "send")
    assert up.exit_code == 0, up.output
    assert sorted(handler.by_recipient()) == addresses


def test_status_counts_every_ledger_state(project, secret):
    handler = RecordingHandler(Behaviour(defer={"reader00001@example.org": 99}, reject={"reader00002@example.org"}))
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, retry_window=0)
        add_subscribers(config, 4)
        _invoke(project, "subscribers", "remove", "reader00003@example.org")
        _invoke(project, "run")
    line = next(line for line in _invoke(project, "status").output.splitlines() if line.startswith("Last edition"))
    assert "sent 1, failed 1, deferred 1, pending 0, sending 0" in line and "next retry" in line


def test_the_retry_job_sends_due_deferred_messages_and_makes_no_new_edition(project, secret):
    from .conftest import write_item

    handler = RecordingHandler(Behaviour(defer={"reader00001@example.org": 1}))
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, retry_window=0, retry_delay=0)
        add_subscribers(config, 2)
        assert _invoke(project, "run").exit_code == 2  # one delivered, one deferred
        write_item(project, "new-grant", 'title: "New research grants announced"\ndate: 2021-11-12T09:00:00-05:00')
        result = _invoke(project, "send", "--queued-only")
        assert result.exit_code == 0, result.output
    assert sorted(m.recipient for m in handler.received) == ["reader00000@example.org", "reader00001@example.org"]
    with usecases.open_storage(config) as storage:
        assert len(storage.list_editions()) == 1  # the new item waits for the next real run


def test_a_server_that_refuses_the_sender_stops_the_send_with_one_error(project, secret):
    handler = RecordingHandler(Behaviour(refuse_sender="530 5.7.0 Authentication required"))
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port)
        add_subscribers(config, 50)
        result = _invoke(project, "run")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if "530 5.7.0" in line]
    assert len(errors) == 2 and errors[-1].startswith("Error: "), result.output  # one log line, one error
    with usecases.open_storage(config) as storage:
        counts = storage.ledger_counts(storage.latest_edition().id)
    assert counts["failed"] == 0 and counts["pending"] == 50  # nobody is failed for the server's refusal


def test_a_slow_reply_after_the_body_is_waited_for_not_resent(project, secret):
    handler = RecordingHandler(Behaviour(reply_delay=0.6))
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, concurrency=1, timeout=0.2, data_timeout=5)
        addresses = add_subscribers(config, 2)
        result = _invoke(project, "run")
    assert result.exit_code == 0, result.output
    assert sorted(m.recipient for m in handler.received) == addresses  # each once


def test_status_names_the_top_failure_reasons_and_retry_failed_queues_them_again(project, secret):
    handler = RecordingHandler(Behaviour(reject={"reader00000@example.org", "reader00001@example.org"}))
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port)
        add_subscribers(config, 3)
        assert _invoke(project, "run").exit_code == 2
        assert "2 x 550 5.1.1 No such user here" in _invoke(project, "status").output
        handler.behaviour.reject.clear()  # the mailboxes exist now
        # 550 5.1.1 at send time is a hard bounce (issue 14): suppressed, so not queued again until an
        # operator lifts the suppression with a reason.
        kept = _invoke(project, "send", "--retry-failed")
        assert "0 failed messages queued again" in kept.output
        assert "2 failed messages are of suppressed addresses" in kept.output
        for n in range(2):
            lifted = _invoke(project, "subscribers", "unsuppress", f"reader{n:05d}@example.org",
                             "--reason", "the mailbox exists now")
            assert "suppression lifted" in lifted.output
        again = _invoke(project, "send", "--retry-failed")
    assert again.exit_code == 0, again.output
    assert "2 failed messages queued again" in again.output
    assert sorted(m.recipient for m in handler.received) == [f"reader{n:05d}@example.org" for n in range(3)]


def test_a_retry_with_nothing_due_reads_fetches_and_renders_nothing(project, secret, monkeypatch):
    """The retry job runs every few minutes and is usually idle: it must not parse the content,
    poll the sources or render a page to find that out."""
    config = use_smtp(project, 1)  # no server: nothing may be sent, or even connected to
    add_subscribers(config, 2)

    def must_not_run(*args, **kwargs):
        raise AssertionError("an idle retry read the content or fetched a source")

    from pipeline.usecases import common
    from pipeline.usecases import runs as run_module

    for module in (common, run_module):  # where a run reads stories and fetches sources
        monkeypatch.setattr(module, "read_content", must_not_run)
        monkeypatch.setattr(module, "read_remote", must_not_run)
    result = _invoke(project, "send", "--queued-only")
    assert result.exit_code == 0, result.output
    assert "no queued message is due" in result.output
    assert "no queued message is due" in _invoke(project, "status").output

"""Sending the digest to a real SMTP server on loopback, and reading it back as a mail client would."""

from __future__ import annotations

import re
import threading
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline import usecases
from pipeline.config import load_config
from pipeline.mail.message import Envelope, HeaderInjection, MessageTemplate, build_message, recipient_for
from pipeline.mail.tokens import read_token
from pipeline.publish.digest import UNSUBSCRIBE_PLACEHOLDER, render_digest
from pipeline.sources import read_content
from pipeline.state.storage import StoredDigest
from pipeline.usecases import open_storage

from .conftest import SECRET, add_subscribers, use_smtp, write_item
from .smtp_sink import Behaviour, RecordingHandler, SmtpSink


@pytest.fixture
def sink():
    handler = RecordingHandler()
    with SmtpSink(handler) as server:
        yield server


def _unsubscribe_url(raw: bytes) -> str:
    match = re.match(rb"<(https://[^>]+)>", _raw_header(raw, "List-Unsubscribe"))
    assert match
    return match.group(1).decode()


def _header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def _raw_header(raw: bytes, name: str) -> bytes:
    """A header as it is on the wire, continuation lines included."""
    match = re.search(rb"(?im)^" + name.encode() + rb": ([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", _header_block(raw))
    assert match, f"no {name} header"
    return match.group(1)


def test_each_subscriber_gets_a_compliant_multipart_message(project, secret, sink):
    config = use_smtp(project, sink.port)
    addresses = add_subscribers(config, 3)
    usecases.run(config, progress=False)
    received = sink.handler.by_recipient()
    assert sorted(received) == addresses
    for address, (message,) in received.items():
        raw = message.raw
        assert _raw_header(raw, "To") == address.encode()
        assert _raw_header(raw, "From") == b"National MS Society News <news@nationalmssociety.org>"
        assert _raw_header(raw, "List-Id") == b"National MS Society News <news.nationalmssociety.org>"
        assert _raw_header(raw, "List-Unsubscribe-Post") == b"List-Unsubscribe=One-Click"
        assert re.fullmatch(rb"<[0-9a-f]{16}\.[0-9a-f]{24}@nationalmssociety\.org>", _raw_header(raw, "Message-ID"))
        assert parsedate_to_datetime(_raw_header(raw, "Date").decode()).tzinfo is not None
        assert _raw_header(raw, "Date").endswith(b" GMT")
        parsed = message.message
        assert parsed.get_content_type() == "multipart/alternative"
        text, html = parsed.get_payload()
        assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
        assert "144 people" in html.get_content() and "1-800-344-4867" in text.get_content()
        assert parsed["Subject"].startswith("National MS Society News: International Mesenchymal Stem Cell Trial")


def test_list_unsubscribe_is_plain_ascii_on_the_wire_and_personal(project, secret, sink):
    config = use_smtp(project, sink.port)
    add_subscribers(config, 2)
    usecases.run(config, progress=False)
    urls = set()
    for message in sink.handler.received:
        value = _raw_header(message.raw, "List-Unsubscribe")
        assert b"=?" not in value and b"\r\n" not in value  # no RFC 2047 encoded-words, not folded
        match = re.fullmatch(rb"<(https://[^>]+)>, <mailto:unsubscribe@nationalmssociety\.org\?subject=unsubscribe%20"
                             rb"(u1\.[A-Za-z0-9_-]+)>", value)
        assert match, value
        assert match.group(2).decode() == parse_qs(urlsplit(match.group(1).decode()).query)["token"][0]
        url = match.group(1).decode()
        token = parse_qs(urlsplit(url).query)["token"][0]
        assert read_token(SECRET.encode(), token) == message.recipient
        body = message.message.get_body(("html",)).get_content()
        assert f'href="{url}"' in body and UNSUBSCRIBE_PLACEHOLDER not in body
        urls.add(url)
    assert len(urls) == 2


def test_fast_personalisation_gives_the_same_bytes_as_building_each_message(config):
    config = load_config(config.source_file)
    digest = render_digest(read_content(config), config)
    envelope = Envelope.for_digest(digest, "0123456789abcdef", config.delivery, datetime(2021, 11, 5, tzinfo=timezone.utc))
    template = MessageTemplate(envelope, UNSUBSCRIBE_PLACEHOLDER)
    for address in ["a@example.org", "jane.o'hara+news@sub.example.co.uk", "x" * 60 + "@example.org"]:
        recipient = recipient_for(address, "0123456789abcdef", config.delivery, b"0123456789abcdef0", "https://e.org/u")
        assert template.render(recipient) == build_message(envelope, recipient, UNSUBSCRIBE_PLACEHOLDER)


def test_thousand_subscribers_get_exactly_one_message_each(project, secret, sink):
    config = use_smtp(project, sink.port, concurrency=4)
    addresses = add_subscribers(config, 1000)
    result = usecases.run(config, progress=False)
    assert (result.reports[0].sent, result.reports[0].failed) == (1000, 0)
    received = sink.handler.by_recipient()
    assert sorted(received) == addresses
    assert all(len(messages) == 1 for messages in received.values())


def test_temporary_refusals_are_retried_and_sent_once(project, secret):
    handler = RecordingHandler(Behaviour(defer={"reader00001@example.org": 2}))
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port)
        add_subscribers(config, 3)
        report = usecases.run(config, progress=False).reports[0]
    assert (report.sent, report.failed, report.retried) == (3, 0, 2)
    assert [len(m) for m in handler.by_recipient().values()] == [1, 1, 1]


def test_permanent_refusal_marks_only_that_subscriber_failed(project, secret):
    handler = RecordingHandler(Behaviour(reject={"reader00001@example.org"}))
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port)
        add_subscribers(config, 3)
        report = usecases.run(config, progress=False).reports[0]
    assert (report.sent, report.failed) == (2, 1)
    assert report.failures == [("reader00001@example.org", "550 5.1.1 No such user here")]
    assert sorted(handler.by_recipient()) == ["reader00000@example.org", "reader00002@example.org"]


def test_dropped_connection_is_reopened_and_nothing_is_lost(project, secret):
    handler = RecordingHandler(Behaviour(drop_after={3, 7}))
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, concurrency=1)
        addresses = add_subscribers(config, 10)
        report = usecases.run(config, progress=False).reports[0]
    assert (report.sent, report.failed, report.retried) == (10, 0, 2)
    assert sorted(handler.by_recipient()) == addresses
    assert all(len(m) == 1 for m in handler.by_recipient().values())


def test_a_message_still_refused_when_the_retry_window_ends_is_deferred_to_a_later_run(project, secret):
    handler = RecordingHandler(Behaviour(defer={"reader00000@example.org": 99}))
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port, retry_window=0.5)  # tries at 0, .01, .03, .07, .15, .31 s
        add_subscribers(config, 1)
        outcome = usecases.run(config, progress=False)
    report = outcome.reports[0]
    assert (report.sent, report.failed, report.deferred, report.retried) == (0, 0, 1, 6)
    assert handler.tries["reader00000@example.org"] == 6
    assert outcome.status == "failed" and report.next_retry is not None
    with open_storage(config) as storage:
        assert storage.ledger_counts(report.edition_id)["deferred"] == 1


def test_rerun_without_new_content_sends_nothing_and_one_new_item_sends_just_it(project, secret, sink):
    config = use_smtp(project, sink.port)
    add_subscribers(config, 2)
    usecases.run(config, progress=False)
    assert len(sink.handler.received) == 2
    second = usecases.run(config, progress=False)
    assert second.reports == [] and second.edition.reason == "no new items since the last edition"
    assert len(sink.handler.received) == 2
    write_item(project, "new-grant", 'title: "New research grants announced"\ndate: 2021-11-12T09:00:00-05:00')
    third = usecases.run(config, progress=False)
    assert [i.slug for i in third.edition.items] == ["new-grant"]
    new_messages = sink.handler.received[2:]
    assert len(new_messages) == 2
    for message in new_messages:
        html = message.message.get_body(("html",)).get_content()
        assert "New research grants announced" in html and "Mesenchymal" not in html


def test_unsubscribed_address_is_never_mailed(project, secret, sink):
    config = use_smtp(project, sink.port)
    add_subscribers(config, 3)
    storage = open_storage(config)
    storage.unsubscribe("reader00002@example.org")
    storage.close()
    usecases.run(config, progress=False)
    assert sorted(sink.handler.by_recipient()) == ["reader00000@example.org", "reader00001@example.org"]


@pytest.fixture
def tls_sink(tmp_path):
    """An SMTP server that requires STARTTLS with a certificate made for the test; yields it and the cert."""
    import ssl

    from .smtp_sink import self_signed_certificate

    cert, key = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with SmtpSink(RecordingHandler(), tls_context=context) as sink:
        yield sink, cert


def test_starttls_with_a_certificate_made_by_the_test(project, secret, tls_sink):
    sink, cert = tls_sink
    config = use_smtp(project, sink.port, security="starttls", ca_file=str(cert))
    add_subscribers(config, 2)
    report = usecases.run(config, progress=False).reports[0]
    assert report.sent == 2 and len(sink.handler.received) == 2


def test_starttls_refuses_an_untrusted_certificate(project, secret, tls_sink):
    sink, _cert = tls_sink
    config = use_smtp(project, sink.port, security="starttls", retry_window=0)
    add_subscribers(config, 1)
    report = usecases.run(config, progress=False).reports[0]
    assert report.sent == 0 and report.deferred == 1 and sink.handler.received == []
    assert "CERTIFICATE_VERIFY_FAILED" in (report.unreachable or "")


def test_test_send_goes_to_one_address_and_is_not_recorded(project, secret, sink):
    config = use_smtp(project, sink.port)
    add_subscribers(config, 2)
    usecases.send_test(config, "editor@example.org")
    with open_storage(config) as storage:
        assert storage.latest_edition() is None
    (message,) = sink.handler.received
    assert message.recipient == "editor@example.org"
    assert message.message["Subject"].startswith("[TEST] National MS Society News")
    usecases.run(config, progress=False)
    assert len(sink.handler.received) == 3  # the real edition still goes to both subscribers


def test_header_values_with_line_breaks_are_refused(config):
    config = load_config(config.source_file)
    digest = render_digest(read_content(config), config)
    envelope = Envelope.for_digest(digest, "e", config.delivery, datetime(2021, 11, 5, tzinfo=timezone.utc),
                                   subject_prefix="Hi\r\nBcc: victim@example.org\r\n")
    recipient = recipient_for("a@example.org", "e", config.delivery, b"0123456789abcdef0", "https://e.org/u")
    with pytest.raises(HeaderInjection):
        build_message(envelope, recipient, UNSUBSCRIBE_PLACEHOLDER)


def test_content_cannot_inject_headers_through_the_subject(project, secret, sink):
    config = use_smtp(project, sink.port)
    add_subscribers(config, 1)
    write_item(project, "evil", 'title: "Big news\\r\\nBcc: victim@example.org"\ndate: 2022-01-01T00:00:00Z')
    usecases.run(config, progress=False)
    raw = sink.handler.received[0].raw
    assert b"\r\nBcc:" not in _header_block(raw)
    assert sink.handler.received[0].message["Subject"] == "National MS Society News: Big news Bcc: victim@example.org"


def test_without_a_secret_in_the_environment_one_is_generated_into_the_state_folder(project, sink, monkeypatch):
    monkeypatch.delenv("PIPELINE_SECRET", raising=False)
    config = use_smtp(project, sink.port)
    add_subscribers(config, 1)
    usecases.run(config, progress=False)
    secret_file = config.path("state") / "secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    token = parse_qs(urlsplit(_unsubscribe_url(sink.handler.received[0].raw)).query)["token"][0]
    assert read_token(secret_file.read_bytes().strip(), token) == "reader00000@example.org"


def test_a_short_secret_in_the_environment_stops_sending_with_a_clear_message(project, sink, monkeypatch):
    from pipeline.errors import ConfigError

    monkeypatch.setenv("PIPELINE_SECRET", "short")
    config = use_smtp(project, sink.port)
    add_subscribers(config, 1)
    with pytest.raises(ConfigError, match=r"\$PIPELINE_SECRET is set but shorter than 16 characters"):
        usecases.run(config, progress=False)
    assert sink.handler.received == []
    with usecases.open_storage(config) as storage:
        assert storage.latest_edition() is None  # nothing was queued that could not be sent


@pytest.mark.parametrize(("value", "problem"), [
    ("aaaaaaaaaaaaaaaaaaaa", "fewer than 10 different characters"),
    ("replace-with-output-of-python3-c-import-secrets-print-secrets.token_urlsafe-32", "a placeholder"),
])
def test_a_weak_or_placeholder_secret_is_refused(project, sink, monkeypatch, value, problem):
    from pipeline.errors import ConfigError

    monkeypatch.setenv("PIPELINE_SECRET", value)
    config = use_smtp(project, sink.port)
    add_subscribers(config, 1)
    with pytest.raises(ConfigError, match=problem):
        usecases.run(config, progress=False)


def test_rate_limit_spaces_messages_evenly():
    from pipeline.delivery.engine import RateLimiter

    now = [100.0]
    slept = []

    def sleep(seconds):
        slept.append(round(seconds, 6))
        now[0] += seconds

    limiter = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.wait()
    assert slept == [0.1, 0.1, 0.1, 0.1]  # the first goes at once, then one every 1/10 s
    now[0] += 5  # an idle spell earns no burst beyond the next slot
    limiter.wait()
    limiter.wait()
    assert slept[-1] == 0.1


def test_rate_limit_applies_across_connections_on_a_real_send(project, secret, sink):
    config = use_smtp(project, sink.port, rate_limit=50, concurrency=2)
    add_subscribers(config, 10)
    report = usecases.run(config, progress=False).reports[0]
    assert report.sent == 10
    stamps = sorted(m.when for m in sink.handler.received)
    assert stamps[-1] - stamps[0] >= 9 / 50 * 0.9  # ten messages at 50/s take at least ~0.18 s


class _BrokenAfter:
    """A transport whose connections break unexpectedly (not an SMTP reply) after n messages."""

    name = "smtp"

    def __init__(self, n: int):
        self.n, self.sent, self.lock = n, [], threading.Lock()

    def connect(self):
        transport = self

        class Connection:
            def send(self, sender, recipient, message, key):
                with transport.lock:
                    if len(transport.sent) >= transport.n:
                        raise RuntimeError("disk on fire")
                    transport.sent.append(recipient)
                return "250 OK"

            def close(self):
                pass

        return Connection()


def test_an_unexpected_sender_error_stops_the_send_cleanly_and_the_next_run_finishes(project, secret, sink):
    from pipeline.delivery.engine import Sender, SendSettings
    from pipeline.errors import PipelineError

    config = use_smtp(project, sink.port, concurrency=2)
    addresses = add_subscribers(config, 50)
    usecases.run(config, action="feeds", progress=False)
    with open_storage(config) as storage:  # create the edition, then send it through a transport that breaks
        storage.create_edition("e1", ["urn:x:1"], StoredDigest("Subject", "<p>x</p>", "x"))
        broken = _BrokenAfter(10)
        sender = Sender(storage, "e1", lambda claim: b"Subject: x\r\n\r\nbody\r\n", broken,
                        SendSettings("news@nationalmssociety.org", connections=2), progress=False)
        with pytest.raises(PipelineError, match="sending stopped: disk on fire"):
            sender.run()
        counts = storage.ledger_counts("e1")
        assert counts["sent"] == 10 and counts["pending"] == 40 and counts["sending"] == 0
        from pipeline.delivery.transports import transport_for

        real = transport_for(config, "e1")
        report = Sender(storage, "e1", lambda claim: b"Subject: x\r\n\r\nbody\r\n", real,
                        SendSettings.for_delivery(config.require_delivery(), real), progress=False).run()
    assert report.sent == 40
    assert sorted(broken.sent + [m.recipient for m in sink.handler.received]) == addresses


def test_test_send_with_nothing_new_shows_the_latest_edition(project, secret, sink):
    config = use_smtp(project, sink.port)
    add_subscribers(config, 1)
    usecases.run(config, progress=False)
    write_item(project, "new-grant", 'title: "New research grants announced"\ndate: 2021-11-12T09:00:00-05:00')
    usecases.run(config, progress=False)  # the latest edition holds just the new item
    usecases.send_test(config, "editor@example.org")
    html = sink.handler.received[-1].message.get_body(("html",)).get_content()
    assert "New research grants announced" in html and "Mesenchymal" not in html


def test_a_message_is_dated_when_it_goes_out_not_when_its_edition_was_made(config, secret):
    from email import message_from_bytes, policy

    from pipeline.mail.edition import EditionMail

    config = load_config(config.source_file)
    made = datetime(2021, 11, 5, 9, 0, tzinfo=timezone.utc)  # an edition whose last messages were deferred
    mail = EditionMail(render_digest(read_content(config), config), "e1", made, config, SECRET.encode())
    sent = parsedate_to_datetime(message_from_bytes(mail.render("a@example.org"), policy=policy.default)["Date"])
    assert abs((sent - datetime.now(timezone.utc)).total_seconds()) < 60

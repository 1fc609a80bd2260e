"""The headers mailbox providers check besides List-Unsubscribe: Feedback-ID, List-Archive, List-Help,
Precedence: plain ASCII on the wire, the same bytes on the fast path, and on every message sent."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from pipeline import usecases
from pipeline.config import load_config
from pipeline.mail.message import (
    Envelope,
    HeaderInjection,
    MessageTemplate,
    build_message,
    list_headers,
    recipient_for,
)
from pipeline.publish.digest import UNSUBSCRIBE_PLACEHOLDER, render_digest
from pipeline.sources import read_content

from .conftest import add_subscribers, set_config, use_smtp
from .smtp_sink import RecordingHandler, SmtpSink


def _raw_header(raw: bytes, name: str) -> bytes:
    head = raw.split(b"\r\n\r\n", 1)[0]
    match = re.search(rb"(?im)^" + name.encode() + rb": ([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head)
    assert match, f"no {name} header"
    return match.group(1)


def test_every_sent_message_carries_the_list_headers_in_plain_ascii(project, secret):
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port)
        add_subscribers(config, 2)
        outcome = usecases.run(config, progress=False)
    edition = outcome.edition.edition_id
    assert len(handler.received) == 2
    for message in handler.received:
        raw = message.raw
        assert _raw_header(raw, "Feedback-ID") == (
            f"{edition}:news.nationalmssociety.org:newsletter:nationalmssociety.org".encode())
        assert _raw_header(raw, "List-Archive") == b"<https://www.nationalmssociety.org/news-feed/archive/index.html>"
        assert _raw_header(raw, "List-Help") == b"<https://www.nationalmssociety.org/news-feed/>"
        assert _raw_header(raw, "Precedence") == b"bulk"
        head = raw.split(b"\r\n\r\n", 1)[0]
        assert head.isascii() and b"=?" not in head.split(b"Subject:")[0]


def test_the_fast_path_gives_the_same_bytes_with_the_list_headers(config):
    config = load_config(config.source_file)
    digest = render_digest(read_content(config), config)
    headers = list_headers("0123456789abcdef", config.delivery, "https://e.org/archive/index.html", "https://e.org/help")
    envelope = Envelope.for_digest(digest, "0123456789abcdef", config.delivery,
                                   datetime(2021, 11, 5, tzinfo=UTC), headers=headers)
    template = MessageTemplate(envelope, UNSUBSCRIBE_PLACEHOLDER)
    for address in ["a@example.org", "x" * 60 + "@example.org"]:
        recipient = recipient_for(address, "0123456789abcdef", config.delivery, b"0123456789abcdef0", "https://e.org/u")
        raw = template.render(recipient)
        assert raw == build_message(envelope, recipient, UNSUBSCRIBE_PLACEHOLDER)
        assert _raw_header(raw, "List-Help") == b"<https://e.org/help>"


def test_configured_values_are_used_and_non_ascii_is_refused(project):
    config = load_config(set_config(project, **{"delivery.feedback_id": "msnews", "delivery.list_help":
                                                "https://www.nationalmssociety.org/help"}))
    headers = dict(list_headers("e1", config.delivery, "https://a/archive/index.html", config.delivery.list_help))
    assert headers["Feedback-ID"] == "e1:news.nationalmssociety.org:newsletter:msnews"
    assert headers["List-Help"] == "<https://www.nationalmssociety.org/help>"
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="delivery.feedback_id"):
        load_config(set_config(project, **{"delivery.feedback_id": "séndér"}))
    envelope = Envelope("s", "<p>h</p>", "t", datetime(2021, 1, 1, tzinfo=UTC), "b", config.delivery,
                        (("List-Help", "<https://e.org/hélp>"),))
    with pytest.raises(HeaderInjection, match="ASCII"):
        build_message(envelope, recipient_for("a@example.org", "e", config.delivery, b"k" * 20, "https://e/u"), "X")

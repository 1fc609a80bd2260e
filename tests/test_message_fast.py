"""The per-recipient fast path (base64 cached per edition, dot-stuffing done once) against the reference."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pipeline.config import load_config
from pipeline.mail.message import (
    Envelope,
    HeaderInjection,
    MessageTemplate,
    Recipient,
    build_message,
    dot_stuff,
    recipient_for,
)
from pipeline.publish.digest import UNSUBSCRIBE_PLACEHOLDER, render_digest
from pipeline.sources import read_content

DATE = datetime(2021, 11, 5, tzinfo=timezone.utc)
P = UNSUBSCRIBE_PLACEHOLDER


def _urls() -> list[str]:
    """Unsubscribe URLs of every length mod 3 and mod 57 (a base64 line), with dots anywhere."""
    return [f"https://e.org/u?token={'.' * (n % 5)}{'x' * n}." for n in range(0, 130)]


@pytest.fixture
def real_envelope(config):
    config = load_config(config.source_file)
    digest = render_digest(read_content(config), config)
    return config, Envelope.for_digest(digest, "0123456789abcdef", config.delivery, DATE)


def test_real_digest_is_byte_identical_for_urls_of_every_length(real_envelope):
    config, envelope = real_envelope
    template = MessageTemplate(envelope, P)
    for n, url in enumerate(_urls()):
        recipient = Recipient(f"r{n}@example.org", url, f"<m{n}@example.org>")
        reference = build_message(envelope, recipient, P)
        assert template.render(recipient) == reference, url
        assert template.render_wire(recipient) == dot_stuff(reference), url


def test_real_recipients_are_byte_identical(real_envelope):
    config, envelope = real_envelope
    template = MessageTemplate(envelope, P)
    for address in ["a@example.org", "jane.o'hara+news@sub.example.co.uk", "x" * 60 + "@example.org",
                    "ab@example.org", "abc@example.org", "x@bücher.example"]:
        recipient = recipient_for(address, "0123456789abcdef", config.delivery, b"0123456789abcdef0",
                                  "https://e.org/u")
        assert template.render(recipient) == build_message(envelope, recipient, P)
        assert template.render_wire(recipient) == dot_stuff(template.render(recipient))


@pytest.mark.parametrize("text", [
    "", P, f"{P}\n", f".{P}\n.\n..x\r\n", f"a\r{P}\nb", f"{P}{P}", "x" * 56 + P + "y" * 200 + P + "z" * 57,
    "no placeholder at all\n.dot at line start\n", ("é" * 100 + "\n." + P) * 5 + "\n", "\n" * 60 + P,
])
def test_bodies_with_dots_at_line_start_and_awkward_breaks(real_envelope, text):
    config, envelope = real_envelope
    envelope = Envelope(envelope.subject, f"<p>{text}</p>", text, DATE, envelope.boundary, envelope.delivery)
    template = MessageTemplate(envelope, P)
    for url in _urls()[:60]:
        recipient = Recipient("r@example.org", url, "<m@example.org>")
        reference = build_message(envelope, recipient, P)
        assert template.render(recipient) == reference
        assert template.render_wire(recipient) == dot_stuff(reference)


def test_constant_pieces_with_a_dot_at_line_start_are_stuffed_only_at_line_start(real_envelope):
    """Real skeletons have no line starting with a dot (headers start with a name, bodies are base64),
    so the piece logic is checked on pieces that do: first piece, after a body, after a header value."""
    _config, envelope = real_envelope
    template = MessageTemplate(envelope, P)
    template._pieces = [b".a\r\nTo: ", "TO", b".mid-line\r\n.b\r\n\r\n", "TEXT", b".after body\r\n.\r\n"]
    template._wire_pieces = template._stuffed_pieces()
    recipient = Recipient("r@example.org", "https://e.org/u", "<m@example.org>")
    assert template.render_wire(recipient) == dot_stuff(template.render(recipient))
    assert template.render_wire(recipient).startswith(b"..a\r\nTo: r@example.org.mid-line\r\n..b")


def test_a_header_value_can_never_start_a_line(real_envelope):
    _config, envelope = real_envelope
    template = MessageTemplate(envelope, P)
    template._pieces = [b"Subject: x\r\n", "TO", b"\r\n"]
    with pytest.raises(AssertionError):
        template._stuffed_pieces()


def test_a_url_with_a_line_break_is_refused(real_envelope):
    _config, envelope = real_envelope
    with pytest.raises(HeaderInjection):
        MessageTemplate(envelope, P).render(Recipient("r@example.org", "https://e.org/u\r\n.x", "<m@example.org>"))

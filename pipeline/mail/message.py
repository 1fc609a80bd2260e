"""Email messages: built once per edition with the ``email`` package, personalised cheaply.

``build_message`` is the reference: a full ``EmailMessage`` per recipient.  It costs
milliseconds, so sending uses ``MessageTemplate``, which serialises that same
message once with sentinel values and then, per recipient, substitutes the three
personal headers and re-encodes the two bodies with the C base64 encoder.  A
test proves both give identical bytes.

Per-recipient headers (To, Message-ID, List-Unsubscribe) are written raw with
``set_raw`` and never refolded: the default policy would fold a long
List-Unsubscribe into RFC 2047 encoded-words, which breaks one-click unsubscribe
in real clients while Python's own parser hides the damage.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from ..config import Delivery
from ..errors import PipelineError
from .addresses import ascii_address
from .tokens import make_token

if TYPE_CHECKING:
    from .edition import DigestParts

CONTENT_POLICY = policy.SMTP  # CRLF, 78-column folding for the headers we let it fold
WIRE_POLICY = policy.SMTP.clone(refold_source="none")  # raw headers stay exactly as written

_SENTINEL_TO = "sentinel-recipient@sentinel.invalid"
_SENTINEL_MESSAGE_ID = "<sentinel-message-id@sentinel.invalid>"
_SENTINEL_UNSUBSCRIBE = "<https://sentinel.invalid/unsubscribe>"
_SENTINEL_TEXT = "@@TEXT-BODY@@"
_SENTINEL_HTML = "@@HTML-BODY@@"
_CRLF = b"\r\n"
_UNSAFE_HEADER = re.compile(r"[\r\n\x00]")


class HeaderInjection(PipelineError):
    """A header value with a line break: refused, never folded into a second header."""


def _header_value(value: str) -> str:
    if _UNSAFE_HEADER.search(value):
        raise HeaderInjection(f"line break in header value {value[:60]!r}")
    return value


# -- per-recipient values -------------------------------------------------------------------

@dataclass(frozen=True)
class Recipient:
    email: str
    unsubscribe_url: str
    message_id: str


def message_id_for(edition_id: str, email: str, domain: str) -> str:
    """Stable per (edition, address): a resend after a crash carries the same Message-ID,
    so receiving systems can drop the duplicate."""
    digest = hashlib.sha256(f"{edition_id}\x00{email}".encode()).hexdigest()[:24]
    return f"<{edition_id}.{digest}@{domain}>"


def recipient_for(email: str, edition_id: str, delivery: Delivery, secret: bytes, unsubscribe_base: str) -> Recipient:
    """The personal values of one message; the address as it goes on the wire (IDNA domain)."""
    url = f"{unsubscribe_base}?{urlencode({'token': make_token(secret, email)})}"
    return Recipient(ascii_address(email), url, message_id_for(edition_id, email, delivery.sending_domain))


def list_unsubscribe(url: str, delivery: Delivery) -> str:
    return f"<{url}>, <mailto:{delivery.unsubscribe_mailto}?subject=unsubscribe>"


# -- the reference builder ------------------------------------------------------------------

@dataclass(frozen=True)
class Envelope:
    """What every message of one edition shares."""

    subject: str
    html: str
    text: str
    date: datetime
    boundary: str
    delivery: Delivery
    headers: tuple[tuple[str, str], ...] = ()  # constant list headers (Feedback-ID, List-Archive, ...), ASCII

    @classmethod
    def for_digest(cls, digest: DigestParts, edition_id: str, delivery: Delivery, date: datetime,
                   subject_prefix: str = "", headers: tuple[tuple[str, str], ...] = ()) -> Envelope:
        return cls(subject=subject_prefix + digest.subject, html=digest.html, text=digest.text, date=date,
                   boundary=f"=_edition_{edition_id}", delivery=delivery, headers=headers)


def list_headers(edition_id: str, delivery: Delivery, archive_index: str, help_url: str) -> tuple[tuple[str, str], ...]:
    """The headers mailbox providers read besides List-Unsubscribe: Feedback-ID (campaign:list:kind:sender,
    as Gmail's Postmaster Tools reads it), List-Archive and List-Help (RFC 2369), Precedence: bulk."""
    list_name = re.sub(r"[^A-Za-z0-9.-]", "", delivery.list_id.rsplit("<", 1)[-1].rstrip(">")) or "list"
    sender = delivery.feedback_id or delivery.sending_domain
    return (
        ("Feedback-ID", f"{edition_id}:{list_name}:newsletter:{sender}"),
        ("List-Archive", f"<{archive_index}>"),
        ("List-Help", f"<{help_url}>"),
        ("Precedence", "bulk"),
    )


def _ascii_header(value: str) -> str:
    if not value.isascii():
        raise HeaderInjection(f"header value must be ASCII: {value[:60]!r}")
    return _header_value(value)


def build_message(envelope: Envelope, recipient: Recipient, placeholder: str) -> bytes:
    """One complete message, built from scratch with the email package (the slow, obvious path)."""
    d = envelope.delivery
    msg = EmailMessage(policy=CONTENT_POLICY)
    msg["From"] = _header_value(d.from_)
    if d.reply_to:
        msg["Reply-To"] = _header_value(d.reply_to)
    msg.set_raw("To", _header_value(recipient.email))
    msg["Subject"] = _header_value(envelope.subject)
    msg.set_raw("Date", formatdate(envelope.date.timestamp(), usegmt=True))
    msg.set_raw("Message-ID", _header_value(recipient.message_id))
    msg["List-Id"] = _header_value(d.list_id)
    msg.set_raw("List-Unsubscribe", _header_value(list_unsubscribe(recipient.unsubscribe_url, d)))
    msg.set_raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    for name, value in envelope.headers:
        msg.set_raw(name, _ascii_header(value))  # raw: plain ASCII on the wire, never encoded or refolded
    msg.set_content(envelope.text.replace(placeholder, recipient.unsubscribe_url), charset="utf-8", cte="base64")
    msg.add_alternative(envelope.html.replace(placeholder, recipient.unsubscribe_url), subtype="html",
                        charset="utf-8", cte="base64")
    msg.set_boundary(envelope.boundary)
    return msg.as_bytes(policy=WIRE_POLICY)


# -- the fast path --------------------------------------------------------------------------

def _body_bytes(text: str) -> bytes:
    """Exactly what the email package encodes for a text body: CRLF line ends, one at the end."""
    return _CRLF.join(text.encode("utf-8").splitlines()) + _CRLF


def _base64_body(text: str) -> bytes:
    return base64.encodebytes(_body_bytes(text)).replace(b"\n", _CRLF)


class MessageTemplate:
    """The serialised message of an edition, split where the personal parts go."""

    def __init__(self, envelope: Envelope, placeholder: str):
        self.envelope = envelope
        self.placeholder = placeholder
        skeleton = build_message(
            Envelope(envelope.subject, _SENTINEL_HTML, _SENTINEL_TEXT, envelope.date, envelope.boundary,
                     envelope.delivery, envelope.headers),
            Recipient(_SENTINEL_TO, "https://sentinel.invalid/unsubscribe", _SENTINEL_MESSAGE_ID),
            placeholder,
        )
        skeleton = skeleton.replace(
            list_unsubscribe("https://sentinel.invalid/unsubscribe", envelope.delivery).encode("ascii"),
            _SENTINEL_UNSUBSCRIBE.encode("ascii"))
        markers = {
            b"TO": _SENTINEL_TO.encode("ascii"),
            b"MID": _SENTINEL_MESSAGE_ID.encode("ascii"),
            b"LU": _SENTINEL_UNSUBSCRIBE.encode("ascii"),
            b"TEXT": _base64_body(_SENTINEL_TEXT),
            b"HTML": _base64_body(_SENTINEL_HTML),
        }
        self._pieces: list[bytes | str] = [skeleton]
        for key, marker in markers.items():
            if skeleton.count(marker) != 1:
                raise AssertionError(f"message skeleton has {skeleton.count(marker)} copies of the {key!r} marker")
            split: list[bytes | str] = []
            for piece in self._pieces:
                if isinstance(piece, bytes) and marker in piece:
                    before, after = piece.split(marker)
                    split.extend([before, key.decode(), after])
                else:
                    split.append(piece)
            self._pieces = split
        # Halves of the bodies that never change: split each body at the placeholder once.
        self._text_parts = envelope.text.split(placeholder)
        self._html_parts = envelope.html.split(placeholder)

    def render(self, recipient: Recipient) -> bytes:
        url = recipient.unsubscribe_url
        values = {
            "TO": _header_value(recipient.email).encode("utf-8"),  # UTF-8 only for an SMTPUTF8 local part
            "MID": _header_value(recipient.message_id).encode("ascii"),
            "LU": _header_value(list_unsubscribe(url, self.envelope.delivery)).encode("ascii"),
            "TEXT": _base64_body(url.join(self._text_parts)),
            "HTML": _base64_body(url.join(self._html_parts)),
        }
        return b"".join(values[p] if isinstance(p, str) else p for p in self._pieces)

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from functools import lru_cache
from typing import Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

from ..addresses import ascii_address
from ..config import Delivery
from ..errors import PipelineError
from ..publish.digest import PREFERENCES_PLACEHOLDER
from .tokens import make_token

CONTENT_POLICY = policy.SMTP  # CRLF, 78-column folding for the headers we let it fold
WIRE_POLICY = policy.SMTP.clone(refold_source="none")  # raw headers stay exactly as written

_SENTINEL_TO = "sentinel-recipient@sentinel.invalid"
_SENTINEL_MESSAGE_ID = "<sentinel-message-id@sentinel.invalid>"
_SENTINEL_UNSUBSCRIBE = "<https://sentinel.invalid/unsubscribe>"
_SENTINEL_TEXT = "@@TEXT-BODY@@"
_SENTINEL_HTML = "@@HTML-BODY@@"
_CRLF = b"\r\n"
_UNSAFE_HEADER = re.compile(r"[\r\n\x00]")


class DigestParts(Protocol):
    """A rendered digest (fresh, or as stored with its edition), with the unsubscribe placeholder in it."""

    @property
    def subject(self) -> str: ...

    @property
    def html(self) -> str: ...

    @property
    def text(self) -> str: ...


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
    preferences_url: str = ""  # the signed "Manage preferences" link; "" leaves the bodies' placeholder alone
    date: datetime | None = None  # when this message goes out (the Date header); None: the edition's date


def _with_preferences(body: str, recipient: Recipient) -> str:
    if not recipient.preferences_url:
        return body

    return body.replace(PREFERENCES_PLACEHOLDER, recipient.preferences_url)


def message_id_for(edition_id: str, email: str, domain: str) -> str:
    """Stable per (edition, address): a resend after a crash carries the same Message-ID,
    so receiving systems can drop the duplicate."""
    digest = hashlib.sha256(f"{edition_id}\x00{email}".encode()).hexdigest()[:24]
    return f"<{edition_id}.{digest}@{domain}>"


@lru_cache(maxsize=16)
def _sending_domain(delivery: Delivery) -> str:
    return delivery.sending_domain  # parses the From address: once per edition, not per recipient


def unsubscribe_url(unsubscribe_base: str, secret: bytes, email: str) -> str:
    """The address's own unsubscribe page: the digest's link, and the one a mailed request is answered with."""
    return f"{unsubscribe_base}?{urlencode({'token': make_token(secret, email)})}"


def recipient_for(email: str, edition_id: str, delivery: Delivery, secret: bytes, unsubscribe_base: str) -> Recipient:
    """The personal values of one message; the address as it goes on the wire (IDNA domain)."""
    url = unsubscribe_url(unsubscribe_base, secret, email)
    return Recipient(ascii_address(email), url, message_id_for(edition_id, email, _sending_domain(delivery)))


def list_unsubscribe(url: str, delivery: Delivery) -> str:
    """The one-click URL and a ``mailto:`` whose subject carries the same token, so a mail to the
    unsubscribe address names its subscriber by a signature, not by a ``From:`` anyone can write."""
    token = parse_qs(urlsplit(url).query).get("token", [""])[0]
    subject = f"unsubscribe%20{token}" if token else "unsubscribe"
    return f"<{url}>, <mailto:{delivery.unsubscribe_mailto}?subject={subject}>"


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
    msg.set_raw("Date", formatdate((recipient.date or envelope.date).timestamp(), usegmt=True))
    msg.set_raw("Message-ID", _header_value(recipient.message_id))
    msg["List-Id"] = _header_value(d.list_id)
    msg.set_raw("List-Unsubscribe", _header_value(list_unsubscribe(recipient.unsubscribe_url, d)))
    msg.set_raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    for name, value in envelope.headers:
        msg.set_raw(name, _ascii_header(value))  # raw: plain ASCII on the wire, never encoded or refolded
    msg.set_content(_with_preferences(envelope.text.replace(placeholder, recipient.unsubscribe_url), recipient),
                    charset="utf-8", cte="base64")
    msg.add_alternative(_with_preferences(envelope.html.replace(placeholder, recipient.unsubscribe_url), recipient),
                        subtype="html", charset="utf-8", cte="base64")
    msg.set_boundary(envelope.boundary)
    return msg.as_bytes(policy=WIRE_POLICY)


# -- the fast path --------------------------------------------------------------------------

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_LINE_START_DOT = re.compile(rb"(?m)^\.")  # what smtplib's DATA quotes: a dot after LF or at the start
_BASE64_LINE = 57  # encodebytes writes one 76-character line per 57 input bytes


def _body_bytes(text: str) -> bytes:
    """Exactly what the email package encodes for a text body: CRLF line ends, one at the end."""
    return _CRLF.join(text.encode("utf-8").splitlines()) + _CRLF


def _base64_body(text: str) -> bytes:
    return base64.encodebytes(_body_bytes(text)).replace(b"\n", _CRLF)


def _encode_lines(data: bytes) -> bytes:
    """base64 in 76-character CRLF lines; ``data`` starts on a line boundary."""
    return base64.encodebytes(data).replace(b"\n", _CRLF) if data else b""


class Base64Body:
    """One body's base64, encoded once per edition except around the personal URL.

    ``encodebytes`` encodes each 57-byte block of input into one line on its own, so
    the output for a run of whole blocks depends only on those bytes.  The constant
    parts between the URLs are cached per alignment (their start offset mod 57, at
    most 57 variants, made on first use); per recipient only the blocks that hold a
    URL are encoded, a few hundred bytes however long the body.
    """

    def __init__(self, text: str, placeholders: Sequence[str]):
        pattern = re.compile("|".join(re.escape(placeholder) for placeholder in placeholders))
        self.slots = pattern.findall(text)  # which personal value goes between part i-1 and part i
        parts = [_LINE_BREAK.sub(_CRLF, part.encode("utf-8")) for part in pattern.split(text)]
        # As _body_bytes: one CRLF at the end unless the text ends with a line break (a URL never does).
        if not parts[-1].endswith(_CRLF):
            parts[-1] += _CRLF
        self.parts = parts
        self._blocks: dict[tuple[int, int], bytes] = {}

    def _whole_blocks(self, index: int, skip: int) -> tuple[bytes, int]:
        """The encoded whole blocks of part ``index`` from byte ``skip`` on, and where they end."""
        part = self.parts[index]
        end = skip + (len(part) - skip) // _BASE64_LINE * _BASE64_LINE
        key = (index, skip)
        encoded = self._blocks.get(key)
        if encoded is None:
            encoded = self._blocks[key] = _encode_lines(part[skip:end])
        return encoded, end

    def encode(self, values: Mapping[str, bytes]) -> bytes:
        """``_base64_body`` of the text with each placeholder replaced by its value, byte for byte."""
        out: list[bytes] = []
        pending = b""  # bytes not yet encoded; they start on a block boundary
        for index, part in enumerate(self.parts):
            if index:
                pending += values[self.slots[index - 1]]
            need = -len(pending) % _BASE64_LINE  # bytes of this part that complete the open block
            if len(part) - need < _BASE64_LINE:
                pending += part
                continue
            out.append(_encode_lines(pending + part[:need]))
            encoded, end = self._whole_blocks(index, need)
            out.append(encoded)
            pending = part[end:]
        out.append(_encode_lines(pending))
        return b"".join(out)


class DotStuffed(bytes):
    """A message ready for the DATA phase: lines starting with a dot doubled (RFC 5321 4.5.2) and
    the terminating CRLF.CRLF appended, so the transport sends it as it is."""


def dot_stuff(message: bytes) -> DotStuffed:
    """What smtplib's ``data`` sends for ``message`` (the reference for the pre-stuffed pieces)."""
    quoted = _LINE_START_DOT.sub(b"..", message)
    if not quoted.endswith(_CRLF):
        quoted += _CRLF
    return DotStuffed(quoted + b"." + _CRLF)


_SENTINEL_DATE = datetime(1999, 12, 31, 23, 59, 58, tzinfo=timezone.utc)  # one copy, in the Date header


@lru_cache(maxsize=4)
def _date_header(moment: datetime) -> bytes:
    """The Date header's value; messages of the same second share it."""
    return formatdate(moment.timestamp(), usegmt=True).encode("ascii")


class MessageTemplate:
    """The serialised message of an edition, split where the personal parts go.

    Dot-stuffing is done once per edition on the constant pieces, which is safe because no
    personal part can start a line with a dot: the three header values follow ``Name: `` on
    their line and contain no line break (``_header_value`` refuses one), and the bodies are
    base64, whose alphabet has no dot.  The constructor checks where each personal part sits.
    """

    def __init__(self, envelope: Envelope, placeholder: str):
        self.envelope = envelope
        self.placeholder = placeholder
        skeleton = build_message(
            Envelope(envelope.subject, _SENTINEL_HTML, _SENTINEL_TEXT, envelope.date, envelope.boundary,
                     envelope.delivery, envelope.headers),
            Recipient(_SENTINEL_TO, "https://sentinel.invalid/unsubscribe", _SENTINEL_MESSAGE_ID,
                      date=_SENTINEL_DATE),
            placeholder,
        )
        skeleton = skeleton.replace(
            list_unsubscribe("https://sentinel.invalid/unsubscribe", envelope.delivery).encode("ascii"),
            _SENTINEL_UNSUBSCRIBE.encode("ascii"))
        markers = {
            b"DATE": formatdate(_SENTINEL_DATE.timestamp(), usegmt=True).encode("ascii"),
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
        self._wire_pieces = self._stuffed_pieces()
        # The bodies' constant bytes, encoded once; per recipient only the blocks around the URL.

        self._preferences_placeholder = PREFERENCES_PLACEHOLDER
        self._text = Base64Body(envelope.text, [placeholder, PREFERENCES_PLACEHOLDER])
        self._html = Base64Body(envelope.html, [placeholder, PREFERENCES_PLACEHOLDER])

    def _stuffed_pieces(self) -> list[bytes | str]:
        """The pieces as they go on the wire: constant ones dot-stuffed here, once, and the last one
        ending with the terminating CRLF.CRLF.  A constant piece starts a line when it is the first or
        follows a body (base64 ends with CRLF); after a header value it continues that value's line."""
        stuffed: list[bytes | str] = []
        at_line_start = True
        for piece in self._pieces:
            if isinstance(piece, str):
                if piece in ("TEXT", "HTML"):
                    if not at_line_start:
                        raise AssertionError(f"the {piece} body does not start a line")
                    at_line_start = True  # base64 output ends with CRLF
                else:
                    if at_line_start:
                        raise AssertionError(f"the {piece} header value would start a line")
                    at_line_start = False  # a header value never ends with a line break
                stuffed.append(piece)
                continue
            quoted = _LINE_START_DOT.sub(b"..", piece)
            if not at_line_start and piece.startswith(b"."):
                quoted = quoted[1:]  # mid-line: that first dot does not start a line
            stuffed.append(quoted)
            if piece:
                at_line_start = piece.endswith(b"\n")
        if not self._pieces or not isinstance(stuffed[-1], bytes) or not stuffed[-1].endswith(_CRLF):
            raise AssertionError("message skeleton does not end with a constant line")
        stuffed[-1] = stuffed[-1] + b"." + _CRLF
        return stuffed

    def _values(self, recipient: Recipient) -> dict[str, bytes]:
        url = recipient.unsubscribe_url
        if _UNSAFE_HEADER.search(url):
            raise HeaderInjection(f"line break in unsubscribe URL {url[:60]!r}")
        # "" leaves the preferences placeholder as it is, like _with_preferences in build_message
        preferences = recipient.preferences_url or self._preferences_placeholder
        personal = {self.placeholder: url.encode("utf-8"), self._preferences_placeholder: preferences.encode("utf-8")}
        return {
            "DATE": _date_header(recipient.date or self.envelope.date),
            "TO": _header_value(recipient.email).encode("utf-8"),  # UTF-8 only for an SMTPUTF8 local part
            "MID": _header_value(recipient.message_id).encode("ascii"),
            "LU": _header_value(list_unsubscribe(url, self.envelope.delivery)).encode("ascii"),
            "TEXT": self._text.encode(personal),
            "HTML": self._html.encode(personal),
        }

    def render(self, recipient: Recipient) -> bytes:
        """The message for one recipient, byte for byte what ``build_message`` makes."""
        values = self._values(recipient)
        return b"".join(values[p] if isinstance(p, str) else p for p in self._pieces)

    def render_wire(self, recipient: Recipient) -> DotStuffed:
        """The same message dot-stuffed and terminated for SMTP DATA: ``dot_stuff(render(r))``."""
        values = self._values(recipient)
        return DotStuffed(b"".join(values[p] if isinstance(p, str) else p for p in self._wire_pieces))

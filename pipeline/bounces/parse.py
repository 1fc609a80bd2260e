"""Reading what arrives at the bounce address: DSNs, ARF complaints and mailto unsubscribes.

Bounces are recognised by ``flufl.bounce`` (RFC 3464 DSNs and the common non-standard
formats: Postfix, Exim, Exchange, qmail, ...); a bounce counts only when it arrived at a
signed VERP return path, which names edition and subscriber, so a forged or misdirected
bounce names nobody.  ARF reports (RFC 5965) are complaints; the original message they
quote carries our signed unsubscribe token (or return path), which names the recipient.
Anything sent to ``delivery.unsubscribe_mailto`` is a request to unsubscribe its sender.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.utils import getaddresses, parseaddr
from urllib.parse import parse_qs, urlsplit

from ..mail.tokens import read_token
from ..mail.verp import BounceTarget, read_return_path

log = logging.getLogger(__name__)
logging.getLogger("flufl.bounce").setLevel(logging.WARNING)  # it logs every detector it tries at INFO

_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Cc")
_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_SMTP_REPLY = re.compile(r"\b([45]\d\d[ -][^\r\n]{3,200})")


@dataclass(frozen=True)
class Report:
    """One thing a received message tells about one subscriber."""

    kind: str  # hard, soft, complaint, unsubscribe
    reason: str
    target: BounceTarget | None = None  # from a signed return path
    email: str | None = None  # when no return path names the subscriber (complaints, unsubscribes)


UNVERIFIED_UNSUBSCRIBE = "unsubscribe-unverified"  # answered with a link, never acted on


@dataclass(frozen=True)
class Addresses:
    """The addresses that identify our own mail: the VERP domain and local part, the mailto unsubscribe."""

    secret: bytes
    bounce_local_part: str
    bounce_domain: str | None
    unsubscribe_mailto: str
    previous: tuple[bytes, ...] = ()  # earlier secrets: unsubscribe tokens in older mail still name their address
    trusted_authserv_ids: tuple[str, ...] = ()  # receiving servers whose Authentication-Results are believed


def read_message(raw: bytes, addresses: Addresses, envelope_recipients: Iterable[str] = ()) -> list[Report]:
    """What one received message says, as reports; [] for anything that names nobody of ours."""
    message = message_from_bytes(raw)
    recipients = [a.lower() for a in envelope_recipients] + _header_addresses(message, _RECIPIENT_HEADERS)
    target, forged = _verp_target(recipients, addresses)
    if forged:
        log.warning("a message to a bounce address with a forged or damaged token was ignored")
        return []
    if _is_feedback_report(message):
        return _complaint(message, addresses, target)
    if addresses.unsubscribe_mailto.lower() in recipients and target is None:
        return _unsubscribe_request(message, addresses)
    if target is None:
        log.info("a message that reached no signed return path was ignored (subject %r)",
                 str(message.get("Subject", ""))[:80])
        return []
    kind = _bounce_kind(message)
    if kind is None:
        log.info("a message to a return path is not a recognised bounce (an auto-reply?); ignored")
        return []
    return [Report(kind, _reason(message, kind), target=target)]


def _header_addresses(message: Message, names: Iterable[str]) -> list[str]:
    values = [str(value) for name in names for value in message.get_all(name, [])]
    return [address.lower() for _, address in getaddresses(values) if address]


def _verp_target(recipients: list[str], addresses: Addresses) -> tuple[BounceTarget | None, bool]:
    """The target a signed return path among the recipients names; forged when one looks like ours but is not."""
    if not addresses.bounce_domain:
        return None, False
    prefix = addresses.bounce_local_part.lower() + "+"
    forged = False
    for address in recipients:
        local, _, host = address.rpartition("@")
        if host != addresses.bounce_domain or not local.startswith(prefix):
            continue
        target = read_return_path(addresses.secret, address, addresses.bounce_local_part, addresses.bounce_domain)
        if target is not None:
            return target, False
        forged = True
    return None, forged


def _bounce_kind(message: Message) -> str | None:
    from flufl.bounce import all_failures  # optional: the bounces extra

    temporary, permanent = all_failures(message)
    if permanent:
        return "hard"
    if temporary:
        return "soft"
    if message.get_content_type() == "multipart/report":  # a DSN whose recipient lines flufl could not read
        status = _dsn_field(message, "Status")
        if status.startswith("5."):
            return "hard"
        if status.startswith("4."):
            return "soft"
    return None


def _dsn_field(message: Message, name: str) -> str:
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status" and part.is_multipart():
            for block in part.get_payload():
                if isinstance(block, Message) and block.get(name):
                    return " ".join(str(block.get(name)).split())
    return ""


def _reason(message: Message, kind: str) -> str:
    """A short, human reason: the DSN's status and diagnostic, else the first SMTP reply in the text."""
    status, diagnostic = _dsn_field(message, "Status"), _dsn_field(message, "Diagnostic-Code")
    if status or diagnostic:
        return f"{status} {diagnostic}".strip()[:500]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            text = payload.decode(part.get_content_charset() or "utf-8", "replace")
            match = _SMTP_REPLY.search(text) or _STATUS.search(text)
            if match:
                return " ".join(match.group(1).split())[:500]
    return f"{kind} bounce: {str(message.get('Subject', ''))[:200]}"


def _is_feedback_report(message: Message) -> bool:
    return (message.get_content_type() == "multipart/report"
            and str(message.get_param("report-type") or "").lower() == "feedback-report")


def _complaint(message: Message, addresses: Addresses, target: BounceTarget | None) -> list[Report]:
    """An ARF report: the recipient comes from the quoted original's signed unsubscribe token or return path."""
    feedback = next((p for p in message.walk() if p.get_content_type() == "message/feedback-report"), None)
    fields = _feedback_fields(feedback) if feedback is not None else {}
    reason = f"complaint ({fields.get('feedback-type', 'abuse')}" + (
        f", from {fields['user-agent']})" if fields.get("user-agent") else ")")
    original = _original_headers(message)
    if original is not None:
        email = _token_email(original, addresses)
        if email:
            return [Report("complaint", reason, email=email)]
        quoted_target, _ = _verp_target(_header_addresses(original, ("Return-Path",)), addresses)
        target = quoted_target or target
    if target is not None:
        return [Report("complaint", reason, target=target)]
    log.warning("a complaint report names no message of ours that can be verified; ignored")
    return []


def _feedback_fields(part: Message) -> dict[str, str]:
    payload = part.get_payload()
    if isinstance(payload, list):  # the email package parses message/* parts into sub-messages
        fields: dict[str, str] = {}
        for block in payload:
            if not isinstance(block, Message):
                continue
            for name, value in block.items():
                fields.setdefault(name.lower(), str(value))
        return fields
    return {name.strip().lower(): value.strip() for name, _, value in
            (line.partition(":") for line in str(payload).splitlines()) if value}


def _original_headers(message: Message) -> Message | None:
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            first = payload[0] if isinstance(payload, list) and payload else None
            return first if isinstance(first, Message) else None
        if kind == "text/rfc822-headers":
            data = part.get_payload(decode=True)
            return message_from_bytes(data) if isinstance(data, bytes) else None
    return None


def _token_email(original: Message, addresses: Addresses) -> str | None:
    for url in re.findall(r"<(https?://[^>]+)>", str(original.get("List-Unsubscribe", ""))):
        token = parse_qs(urlsplit(url).query).get("token", [""])[0]
        email = read_token(addresses.secret, token, addresses.previous) if token else None
        if email:
            return email
    return None


def _unsubscribe_request(message: Message, addresses: Addresses) -> list[Report]:
    """A mail to the unsubscribe address unsubscribes whom its token names (the List-Unsubscribe
    ``mailto:`` carries it in the subject, RFC 8058 style), or its sender when a receiving server we
    trust says the From domain passed DMARC.  Anything else, a forged ``From:`` above all, unsubscribes
    nobody."""
    if str(message.get("Auto-Submitted", "no")).lower() != "no" or message.get_content_type() == "multipart/report":
        return []  # auto-replies and reports are not requests
    for token in re.findall(r"\bu1\.[A-Za-z0-9_-]+", str(message.get("Subject", ""))):
        email = read_token(addresses.secret, token, addresses.previous)
        if email:
            return [Report("unsubscribe", "asked by email to the unsubscribe address (signed link)", email=email)]
    sender = parseaddr(str(message.get("From", "")))[1].lower()
    if "@" not in sender:
        return []
    if dmarc_aligned_pass(message, sender.rsplit("@", 1)[1], addresses.trusted_authserv_ids):
        return [Report("unsubscribe", "asked by email to the unsubscribe address (DMARC pass)", email=sender)]
    log.info("a mail to the unsubscribe address without a token or a trusted DMARC pass: asking its sender")
    return [Report(UNVERIFIED_UNSUBSCRIBE, "asked by email, sender not verified", email=sender)]


def dmarc_aligned_pass(message: Message, from_domain: str, trusted: Iterable[str]) -> bool:
    """True when an ``Authentication-Results`` header (RFC 8601) added by one of the ``trusted``
    receiving servers says ``dmarc=pass`` for the From domain.  Headers from anyone else, which a
    sender can write themselves, are not read."""
    trusted_ids = {server.lower() for server in trusted}
    for header in message.get_all("Authentication-Results", []):
        text = " ".join(str(header).split())
        authserv = text.split(";", 1)[0].strip().split()[0].lower() if text.strip() else ""
        if authserv not in trusted_ids:
            continue
        for result in text.split(";")[1:]:
            found = re.match(r"\s*dmarc=(\w+)\b(.*)", result, re.IGNORECASE)
            if found and found.group(1).lower() == "pass":
                domain = re.search(r"header\.from=([^\s;()]+)", found.group(2), re.IGNORECASE)
                if domain and domain.group(1).lower().rstrip(".") == from_domain:
                    return True
    return False

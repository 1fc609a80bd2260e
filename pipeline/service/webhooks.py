"""Relay webhooks on the same WSGI app as the unsubscribe page: Amazon SES (through SNS), Postmark,
SendGrid and Mailgun.  Each request is authenticated the relay's own way before anything is read:

- SES/SNS: the SNS message signature (SignatureVersion 1 or 2, RSA) verified with the certificate at
  ``SigningCertURL``, which must match ``bounces.webhooks.ses.cert_url_pattern`` and is fetched over
  verified HTTPS; subscription confirmations are confirmed the same way;
- Postmark: HTTP Basic credentials (Postmark's webhooks carry no signature);
- SendGrid: the Signed Event Webhook's ECDSA signature over timestamp + body;
- Mailgun: HMAC-SHA256 of timestamp + token with the webhook signing key.

Every event ends in ``record_bounce``; each is remembered by its id, so a redelivery counts once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from ..bounces.policy import record_bounce
from ..config import Config, SesWebhook
from ..environment import secret_from_env
from ..errors import require_extra
from ..state.storage import Storage
from .http import BadBody, read_body

log = logging.getLogger(__name__)

WEBHOOK_PREFIX = "/webhooks/"
MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Event:
    """One relay event about one address."""

    email: str
    kind: str  # hard, soft, complaint
    reason: str
    key: str  # the relay's id of the event, so a redelivery is recognised
    at: float | None = None  # when the relay says it happened (POSIX seconds); None: it did not say


@dataclass(frozen=True)
class Tally:
    """What one request's events came to: counted, and not counted for their date."""

    recorded: int = 0
    ignored: int = 0


class Rejected(Exception):
    """The request is refused with this HTTP status; nothing was recorded."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


# -- Amazon SES through SNS ---------------------------------------------------------------------

_SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}


def sns_string_to_sign(message: dict[str, Any]) -> bytes:
    """The canonical text SNS signs: the type's fields in order, name and value on their own lines."""
    fields = _SNS_FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise Rejected("400 Bad Request", f"unknown SNS message type {message.get('Type')!r}")
    lines = []
    for name in fields:
        if name == "Subject" and message.get("Subject") is None:
            continue
        if not isinstance(message.get(name), str):
            raise Rejected("400 Bad Request", f"SNS message without {name}")
        lines += [name, message[name]]
    return ("\n".join(lines) + "\n").encode("utf-8")


CERTIFICATE_FETCHES_PER_MINUTE = 6  # SNS signs with one certificate per region for months: more new URLs is abuse
CERTIFICATES_KEPT = 32


class SnsVerifier:
    """Checks SNS signatures against the signing certificate, fetched once per URL over verified HTTPS.
    Anyone can post a message naming a new certificate URL on an SNS host, so new URLs are fetched at most
    ``CERTIFICATE_FETCHES_PER_MINUTE`` times a minute (beyond: 503, which SNS retries) and few are kept."""

    def __init__(self, settings: SesWebhook, ca_file: str | None,
                 fetch: Callable[[str, ssl.SSLContext], bytes] | None = None):
        self.pattern = re.compile(settings.cert_url_pattern)
        self.topics = set(settings.topic_arns)
        self.context = ssl.create_default_context(cafile=ca_file)
        self.fetch = fetch or _https_get
        self._certificates: dict[str, Any] = {}
        self._fetched_at: list[float] = []  # monotonic times of the fetches in the last minute
        self._lock = threading.Lock()

    def trusted_url(self, url: str) -> bool:
        return url.startswith("https://") and bool(self.pattern.match(url)) and "@" not in url.split("/")[2]

    def certificate(self, url: str):

        if not self.trusted_url(url):
            raise Rejected("403 Forbidden", "SigningCertURL is not an allowed SNS address")
        with self._lock:
            cached = self._certificates.get(url)
            if cached is None:
                now_s = time.monotonic()
                self._fetched_at = [at for at in self._fetched_at if now_s - at < 60]
                if len(self._fetched_at) >= CERTIFICATE_FETCHES_PER_MINUTE:
                    raise Rejected("503 Service Unavailable", "too many new SNS certificate URLs in a minute")
                self._fetched_at.append(now_s)
        if cached is None:
            try:
                cached = x509.load_pem_x509_certificate(self.fetch(url, self.context))
            except (OSError, ValueError) as exc:
                raise Rejected("403 Forbidden", f"cannot fetch the SNS signing certificate: {exc}") from None
            with self._lock:
                while len(self._certificates) >= CERTIFICATES_KEPT:
                    self._certificates.pop(next(iter(self._certificates)))  # the oldest kept
                self._certificates[url] = cached
        now = datetime.now(UTC)
        if not cached.not_valid_before_utc <= now <= cached.not_valid_after_utc:
            raise Rejected("403 Forbidden", "the SNS signing certificate is not valid now")
        return cached

    def verify(self, message: dict[str, Any]) -> None:

        version = str(message.get("SignatureVersion"))
        algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(version)
        if algorithm is None:
            raise Rejected("403 Forbidden", f"unsupported SNS SignatureVersion {version!r}")
        if self.topics and message.get("TopicArn") not in self.topics:
            raise Rejected("403 Forbidden", "SNS topic not allowed")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise Rejected("403 Forbidden", "malformed SNS signature") from None
        key = self.certificate(str(message.get("SigningCertURL", ""))).public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Rejected("403 Forbidden", "the SNS signing certificate has no RSA key")
        try:
            key.verify(signature, sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise Rejected("403 Forbidden", "SNS signature does not verify") from None


def _https_get(url: str, context: ssl.SSLContext) -> bytes:

    response = httpx.get(url, verify=context, timeout=10, follow_redirects=False)
    response.raise_for_status()
    return response.content


def ses_events(notification: dict[str, Any], message_id: str) -> list[Event]:
    """SES bounce and complaint notifications (feedback notifications and event publishing alike)."""
    kind = notification.get("notificationType") or notification.get("eventType")
    events = []
    if kind == "Bounce":
        bounce = notification.get("bounce") or {}
        at = _iso_time(bounce.get("timestamp"))
        bounce_type = bounce.get("bounceType")
        mapped = {"Permanent": "hard", "Transient": "soft"}.get(str(bounce_type))
        if mapped is None:
            return []  # Undetermined: SES could not tell; nothing to act on
        for n, recipient in enumerate(bounce.get("bouncedRecipients") or []):
            reason = " ".join(str(part) for part in (recipient.get("status"), recipient.get("diagnosticCode")
                                                     or f"{bounce_type} {bounce.get('bounceSubType', '')}") if part)
            events.append(Event(str(recipient.get("emailAddress", "")), mapped, reason, f"{message_id}:{n}", at))
    elif kind == "Complaint":
        complaint = notification.get("complaint") or {}
        at = _iso_time(complaint.get("timestamp"))
        reason = f"complaint ({complaint.get('complaintFeedbackType') or 'unspecified'}, via SES)"
        for n, recipient in enumerate(complaint.get("complainedRecipients") or []):
            events.append(Event(str(recipient.get("emailAddress", "")), "complaint", reason, f"{message_id}:{n}", at))
    return events


# -- Postmark, SendGrid, Mailgun ------------------------------------------------------------------

_POSTMARK_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
_POSTMARK_SOFT = {"SoftBounce", "Transient", "DnsError"}
_POSTMARK_COMPLAINT = {"SpamComplaint", "SpamNotification"}


def postmark_events(body: dict[str, Any]) -> list[Event]:
    record = body.get("RecordType")
    kind = body.get("Type")
    if record == "SpamComplaint" or kind in _POSTMARK_COMPLAINT:
        mapped = "complaint"
    elif record == "Bounce" and kind in _POSTMARK_HARD:
        mapped = "hard"
    elif record == "Bounce" and kind in _POSTMARK_SOFT:
        mapped = "soft"
    else:
        return []
    reason = f"{kind}: {body.get('Description') or ''} {body.get('Details') or ''}".strip()
    return [Event(str(body.get("Email", "")), mapped, reason, f"{record}:{body.get('ID')}",
                  _iso_time(body.get("BouncedAt")))]


def sendgrid_events(body: Any) -> list[Event]:
    events = []
    for n, event in enumerate(body if isinstance(body, list) else []):
        name, reason = event.get("event"), str(event.get("reason") or "")
        if name == "bounce":
            mapped = "soft" if event.get("type") == "blocked" else "hard"
        elif name == "dropped" and reason.lower() in ("bounced address", "invalid"):
            mapped = "hard"
        elif name == "spamreport":
            mapped, reason = "complaint", "complaint (spam report, via SendGrid)"
        else:
            continue
        reason = f"{event.get('status') or ''} {reason}".strip()
        key = str(event.get("sg_event_id") or f"{event.get('sg_message_id')}:{name}:{n}")
        events.append(Event(str(event.get("email", "")), mapped, reason, key, _number(event.get("timestamp"))))
    return events


def mailgun_events(body: dict[str, Any]) -> list[Event]:
    data = body.get("event-data") or {}
    name = data.get("event")
    if name == "failed":
        mapped = {"permanent": "hard", "temporary": "soft"}.get(str(data.get("severity")))
        if mapped is None:
            return []
        status = data.get("delivery-status") or {}
        detail = status.get("description") or status.get("message") or data.get("reason") or ""
        reason = f"{status.get('code') or ''} {detail}"
    elif name == "complained":
        mapped, reason = "complaint", "complaint (via Mailgun)"
    else:
        return []
    return [Event(str(data.get("recipient", "")), mapped, reason.strip(), str(data.get("id") or ""),
                  _number(data.get("timestamp")))]


def _iso_time(value: Any) -> float | None:
    """An event's ISO 8601 date with its zone (SES, Postmark) as POSIX seconds; None if it has none."""
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return at.timestamp() if at.tzinfo is not None else None


def _number(value: Any) -> float | None:
    """An event's POSIX date (SendGrid, Mailgun); None if it has none."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _fresh_iso(timestamp: str, max_age: int) -> bool:
    """An ISO 8601 time (SNS's ``Timestamp``) within ``max_age`` seconds of now, either way."""
    try:
        at = datetime.fromisoformat(timestamp)
    except ValueError:
        return False
    if at.tzinfo is None:
        return False
    return abs(time.time() - at.timestamp()) <= max_age


def _fresh(timestamp: str, max_age: int) -> bool:
    try:
        return abs(time.time() - int(timestamp)) <= max_age
    except ValueError:
        return False


# -- the WSGI part ------------------------------------------------------------------------------

def _read_body(environ) -> bytes:
    try:
        return read_body(environ, MAX_BODY)
    except BadBody as exc:
        raise Rejected(exc.status, "request body refused") from None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Rejected("400 Bad Request", "body is not JSON") from None


def make_webhook_app(config: Config, storage: Storage, sns_fetch: Callable[[str, ssl.SSLContext], bytes] | None = None):
    """The WSGI app for ``/webhooks/<relay>``; relays without configuration answer 404."""
    hooks = config.bounces.webhooks
    policy = config.bounces.policy
    ses = hooks.ses
    if ses.enabled or hooks.sendgrid is not None:
        require_extra("bounces", "cryptography")  # SNS certificates, SendGrid's ECDSA
    verifier = (SnsVerifier(ses, str(config.resolve(ses.ca_file)) if ses.ca_file else None, sns_fetch)
                if ses.enabled else None)
    postmark_password = secret_from_env(hooks.postmark.password_env) if hooks.postmark else None
    sendgrid_key = secret_from_env(hooks.sendgrid.public_key_env) if hooks.sendgrid else None
    mailgun_key = secret_from_env(hooks.mailgun.signing_key_env) if hooks.mailgun else None

    def record(relay: str, events: Iterable[Event]) -> Tally:
        source = f"webhook:{relay}"
        counted = ignored = 0
        now = time.time()
        for event in events:
            if not event.email:
                continue
            if event.at is None or event.at < now - hooks.event_max_age_hours * 3600 or event.at > now + hooks.max_age:
                # A signed request can still carry an old event (a captured one sent again) or an undated one.
                log.warning("webhook %s: event %s not counted: %s", relay, event.key or "-",
                            "undated" if event.at is None else "dated outside bounces.webhooks.event_max_age_hours "
                            "(past) or bounces.webhooks.max_age (future)")
                ignored += 1
                continue
            # Claimed before it is counted: two copies of one event arriving at once count once, and
            # a failure gives the claim back, so the relay's retry counts it.
            with storage.processing(source, event.key) if event.key else nullcontext(True) as first:
                if first:
                    record_bounce(storage, policy, event.email, event.kind, event.reason or event.kind, source,
                                  at=datetime.fromtimestamp(event.at, UTC))  # a lift since then stands
                    counted += 1
        return Tally(counted, ignored)

    def handle_ses(environ, body: bytes) -> Tally:
        if verifier is None:
            raise Rejected("404 Not Found", "SES webhook not enabled")
        message = _json(body)
        if not isinstance(message, dict):
            raise Rejected("400 Bad Request", "not an SNS message")
        verifier.verify(message)
        if not _fresh_iso(str(message.get("Timestamp", "")), hooks.max_age):
            raise Rejected("403 Forbidden",
                           "SNS message Timestamp outside the accepted window (bounces.webhooks.max_age)")
        kind = message.get("Type")
        if kind == "SubscriptionConfirmation":
            url = str(message.get("SubscribeURL", ""))
            if not verifier.trusted_url(url):
                raise Rejected("403 Forbidden", "SubscribeURL is not an allowed SNS address")
            try:
                verifier.fetch(url, verifier.context)
            except OSError as exc:
                raise Rejected("502 Bad Gateway", f"could not confirm the SNS subscription: {exc}") from None
            log.info("confirmed the SNS subscription to %s", message.get("TopicArn"))
            return Tally()
        if kind != "Notification":
            return Tally()
        try:
            notification = json.loads(message["Message"])
        except ValueError:
            return Tally()  # e.g. the test notification SNS sends when a subscription is made
        return record("ses", ses_events(notification if isinstance(notification, dict) else {},
                                         str(message.get("MessageId"))))

    def handle_postmark(environ, body: bytes) -> Tally:
        if hooks.postmark is None or not postmark_password:
            raise Rejected("404 Not Found", "Postmark webhook not configured")
        expected = base64.b64encode(f"{hooks.postmark.username}:{postmark_password}".encode()).decode()
        given = environ.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(given.encode(), f"Basic {expected}".encode()):
            raise Rejected("401 Unauthorized", "wrong credentials")
        payload = _json(body)
        return record("postmark", postmark_events(payload if isinstance(payload, dict) else {}))

    def handle_sendgrid(environ, body: bytes) -> Tally:

        if hooks.sendgrid is None or not sendgrid_key:
            raise Rejected("404 Not Found", "SendGrid webhook not configured")
        timestamp = environ.get("HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP", "")
        try:
            signature = base64.b64decode(environ.get("HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE", ""), validate=True)
            key = load_der_public_key(base64.b64decode(sendgrid_key))
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ValueError("not an ECDSA key")
            key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, binascii.Error):
            raise Rejected("403 Forbidden", "SendGrid signature does not verify") from None
        if not _fresh(timestamp, hooks.max_age):
            raise Rejected("403 Forbidden", "SendGrid timestamp too old")
        return record("sendgrid", sendgrid_events(_json(body)))

    def handle_mailgun(environ, body: bytes) -> Tally:
        if hooks.mailgun is None or not mailgun_key:
            raise Rejected("404 Not Found", "Mailgun webhook not configured")
        payload = _json(body)
        signed = payload.get("signature") if isinstance(payload, dict) else None
        if not isinstance(signed, dict):
            raise Rejected("403 Forbidden", "Mailgun signature missing")
        timestamp, token = str(signed.get("timestamp", "")), str(signed.get("token", ""))
        expected = hmac.new(mailgun_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(signed.get("signature", ""))):
            raise Rejected("403 Forbidden", "Mailgun signature does not verify")
        if not _fresh(timestamp, hooks.max_age):
            raise Rejected("403 Forbidden", "Mailgun timestamp too old")
        with storage.processing("webhook:mailgun-token", token) as first:
            # Not first: the same signed request again (Mailgun signs only timestamp + token), already handled.
            return record("mailgun", mailgun_events(payload)) if first else Tally()

    handlers = {"ses": handle_ses, "postmark": handle_postmark, "sendgrid": handle_sendgrid, "mailgun": handle_mailgun}

    def webhook_app(environ, start_response):
        relay = environ.get("PATH_INFO", "")[len(WEBHOOK_PREFIX):].strip("/")
        answer: dict[str, object]
        try:
            handler = handlers.get(relay)
            if handler is None:
                raise Rejected("404 Not Found", "no such webhook")
            if environ.get("REQUEST_METHOD") != "POST":
                raise Rejected("405 Method Not Allowed", "use POST")
            tally = handler(environ, _read_body(environ))
            status, answer = "200 OK", {"ok": True, "recorded": tally.recorded}
            if tally.ignored:
                answer["ignored"] = tally.ignored  # answered 200 all the same: a retry would not date them better
        except Rejected as exc:
            log.warning("webhook %s refused: %s", relay or "-", exc)
            status, answer = exc.status, {"ok": False, "error": str(exc)}
        data = json.dumps(answer).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                                ("Cache-Control", "no-store")])
        return [data]

    return webhook_app

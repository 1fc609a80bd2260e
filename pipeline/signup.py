"""The signup use cases: double opt-in, its bot protection, preferences, and the consent record.

Called by the web app (``service/signup.py``), the subscriber commands and imports; like
``app.py`` it holds the rules, and the callers only translate requests and replies.

The form answers the same thing whatever the state of the address (new, pending,
active), so it cannot be used to find out who is subscribed; only a person who can
read the mailbox can confirm, and only with a POST (mail scanners follow GETs).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal
from urllib.parse import urlencode

import dns.resolver

from .config import Config
from .delivery.transports import PermanentError, TransientError, Transport, transport_for
from .environment import previous_secrets, signing_secret
from .mail.addresses import AddressError, ascii_address, normalise_address
from .mail.deliverability import ResolverFactory, check_domain
from .mail.notice import Kind, Notice, build_notice
from .mail.signup_tokens import (
    hash_token,
    make_form_stamp,
    make_preferences_token,
    new_confirmation_token,
    read_form_stamp,
    read_preferences_token,
)
from .state.storage import PENDING_CONFIRMATION, ConsentEvent, Profile, Storage, topics_key
from .urls import web_url

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Outcome = Literal["accepted", "again", "too-fast", "invalid", "rate-limited"]
PAUSES = {"": 0, "2w": 14, "1m": 30, "3m": 91}  # the preferences page's pause choices, in days


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def consent_line(config: Config) -> str:
    return config.signup.consent_text.format(site_title=config.site.title)


def preferences_url(config: Config, secret: bytes, subscriber_id: int, date: datetime) -> str:
    """A digest's signed preferences link; it works for ``signup.preferences_days`` after ``date``."""
    expires = date + timedelta(days=config.signup.preferences_days)
    token = make_preferences_token(secret, subscriber_id, expires)
    return f"{web_url(config)}preferences?{urlencode({'token': token})}"


@dataclass(frozen=True)
class SignupForm:
    """What the form posted, as the web layer read it."""

    email: str
    name: str = ""
    topics: tuple[str, ...] = ()
    stamp: str = ""
    honeypot: str = ""
    client_ip: str = ""


@dataclass(frozen=True)
class SignupResult:
    outcome: Outcome
    error: str = ""  # for the person: what to fix ("invalid"), or why to wait ("rate-limited")
    mailed: bool = False  # a confirmation went out (never shown to the person)


@dataclass(frozen=True)
class ConfirmResult:
    state: str  # confirmed, used, expired, unknown
    email: str = ""


@dataclass(frozen=True)
class SubscriberReport:
    """`pipeline subscribers show`: the subscriber and how and when they consented."""

    profile: Profile
    history: list[ConsentEvent] = field(default_factory=list)


def send_notice(config: Config, notice: Notice, key: str, what: str, transport: Transport | None = None) -> bool:
    """Send one one-off message (a confirmation, a welcome, an unsubscribe link) on its own connection;
    False, logged with ``what``, when the relay refused it or could not be reached."""
    connection = (transport or transport_for(config, "signup")).connect()
    try:
        connection.send(config.require_delivery().from_address, notice.recipient, notice.message, key=key)
    except (PermanentError, TransientError, OSError) as exc:
        log.error("%s failed: %s", what, exc)
        return False
    finally:
        connection.close()
    log.info("%s sent", what)
    return True


class Signups:
    """The signup rules over one state database; ``clock`` and ``transport`` are injectable for tests."""

    def __init__(self, config: Config, storage: Storage, *, clock: Clock = utcnow,
                 transport: Transport | None = None, secret: bytes | None = None,
                 resolver: ResolverFactory = dns.resolver.Resolver):
        delivery = config.require_delivery()
        self.config, self.storage, self.clock = config, storage, clock
        self.settings = config.signup
        self.secret = secret or signing_secret(delivery.secret_env, config.path("state"))
        self.previous = [] if secret else previous_secrets(delivery.secret_env)  # links signed before a key change
        self._transport = transport
        self.resolver = resolver  # the DNS resolver the deliverability check asks; a test's points at loopback

    # -- the form ------------------------------------------------------------------------------

    def form_stamp(self) -> str:
        return make_form_stamp(self.secret, self.clock())

    def subscribe(self, form: SignupForm) -> SignupResult:
        """One form submission.  Every refusal sends nothing; every acceptance looks the same."""
        now, settings = self.clock(), self.settings
        if form.honeypot:
            log.info("signup refused: honeypot filled")
            return SignupResult("accepted")  # a bot learns nothing
        shown = read_form_stamp(self.secret, form.stamp) if form.stamp else None
        if shown is None or now - shown > timedelta(hours=settings.max_form_age_hours):
            return SignupResult("again")  # a static or old form: show a fresh one to press again
        if now - shown < timedelta(seconds=settings.min_fill_seconds):
            log.info("signup refused: form sent %.1fs after it was shown", (now - shown).total_seconds())
            return SignupResult("too-fast")
        if not self.storage.mark_processed("form-stamp", form.stamp):
            log.info("signup refused: a form stamp used before")  # a replayed post, or a double click
            return SignupResult("again")
        hour_ago = now - timedelta(hours=1)
        if not self.storage.hit_rate("ip:" + self._hash(form.client_ip), settings.ip_limit, hour_ago, now):
            log.warning("signup refused: rate limit for one client address reached")
            return SignupResult("rate-limited", "Too many signups from your network. Please try again later.")
        try:
            email = normalise_address(form.email)
        except AddressError:
            return SignupResult("invalid", "Please enter a valid email address, such as name@example.org.")
        domain = email.rsplit("@", 1)[1]
        if any(domain == blocked or domain.endswith("." + blocked) for blocked in settings.blocked_domains):
            log.info("signup refused: blocked domain")
            return SignupResult("invalid", "This email address cannot be used to subscribe.")
        if not self.storage.hit_rate("address:" + self._hash(email), settings.address_limit, hour_ago, now):
            log.info("signup not mailed: rate limit for one address reached")
            return SignupResult("accepted")
        if settings.check_deliverability and not self._deliverable(email):
            return SignupResult("invalid", "The domain of this address does not receive email. Please check it.")
        topics = topics_key([t for t in form.topics if t in self.config.topics])
        state, profile = self.storage.start_signup(email, form.name.strip()[:300] or None, topics, now)
        if state == "active":
            return SignupResult("accepted")  # nothing new, nothing revealed
        self.storage.record_consent(profile.id, "subscribe", "form", consent_line(self.config),
                                    {"topics": list(profile.topics), "ip": self._hash(form.client_ip)}, now)
        if state == "pending" and profile.confirm_sent_at is not None and \
                now - profile.confirm_sent_at < timedelta(minutes=settings.resend_minutes):
            log.info("signup of a pending address: confirmation sent recently, not resent")
            return SignupResult("accepted")
        if not self.storage.hit_rate("confirmations", settings.confirmations_per_hour, hour_ago, now):
            log.warning("signup not mailed: signup.confirmations_per_hour reached")
            return SignupResult("accepted")
        return SignupResult("accepted", mailed=self.send_confirmation(profile))

    def _hash(self, value: str) -> str:
        """Rate-limit keys and consent details keep no raw IP or address."""
        return hmac.new(self.secret, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def _deliverable(self, email: str) -> bool:
        """False only when DNS says for certain that the domain takes no mail (``mail/deliverability.py``).
        The address is already validated; its domain is looked up in its ASCII (IDNA) form."""
        domain = ascii_address(email).rsplit("@", 1)[1]
        verdict = check_domain(domain, self.settings.deliverability_timeout, self.resolver)
        if not verdict.receives_mail:
            log.info("signup refused: the domain does not receive mail (%s)", verdict.reason)
        elif verdict.reason.startswith("dns unanswered"):
            log.warning("signup: could not look up the mail server of a domain (%s); letting it through",
                        verdict.reason)
        return verdict.receives_mail

    # -- confirmation ----------------------------------------------------------------------------

    def send_confirmation(self, profile: Profile) -> bool:
        """Store a fresh token and mail its link; False (logged) when the mail could not go out."""
        now = self.clock()
        token, digest = new_confirmation_token()
        expires = now + timedelta(hours=self.settings.confirm_hours)
        self.storage.issue_token(profile.id, digest, "confirm", now, expires)
        link = f"{web_url(self.config)}confirm?{urlencode({'token': token})}"
        return self._mail("confirm", profile, link, expires, f"confirm-{profile.id}-{int(now.timestamp())}")

    def _mail(self, kind: Kind, profile: Profile, link: str, expires: datetime | None, key: str) -> bool:
        notice = build_notice(self.config, kind, profile.email, link=link, now=self.clock(), expires=expires,
                              topics=[self._label(t) for t in profile.topics])
        return send_notice(self.config, notice, key, f"{kind} mail to subscriber {profile.id}", self._transport)

    def _label(self, topic: str) -> str:
        known = self.config.topics.get(topic)
        return (known.label or topic) if known else topic

    def check_confirmation(self, token: str) -> str:
        """For the confirm page's GET: valid, used, expired or unknown.  Changes nothing."""
        return self.storage.token_state(hash_token(token), "confirm", self.clock())[0] if token else "unknown"

    def confirm(self, token: str) -> ConfirmResult:
        """The confirm button's POST: spends the token and makes the subscriber active."""
        if not token:
            return ConfirmResult("unknown")
        now = self.clock()
        state, profile = self.storage.use_confirmation(hash_token(token), now)
        if state != "confirmed" or profile is None:
            return ConfirmResult(state)
        self.storage.record_consent(profile.id, "confirm", "confirmation-link", consent_line(self.config),
                                    {"topics": list(profile.topics)}, now)
        log.info("subscriber %d confirmed", profile.id)
        if self.settings.welcome:
            latest = self.storage.latest_edition()
            from .publish.digest import archive_url

            link = archive_url(self.config, latest.id) if latest else self.config.site.base_url
            self._mail("welcome", profile, link, None, f"welcome-{profile.id}")
        return ConfirmResult("confirmed", profile.email)

    # -- preferences -----------------------------------------------------------------------------

    def preferences_of(self, token: str) -> tuple[Profile | None, str]:
        """Whose preferences a link opens; (None, 'invalid' or 'expired') for a bad link."""
        subscriber_id, problem = read_preferences_token(self.secret, token, self.clock(), self.previous)
        if subscriber_id is None:
            return None, problem
        profile = self.storage.profile(subscriber_id=subscriber_id)
        return (profile, "") if profile else (None, "invalid")

    def update_preferences(self, profile: Profile, topics: list[str], pause: str) -> Profile:
        now = self.clock()
        chosen = topics_key([t for t in topics if t in self.config.topics])
        days = PAUSES.get(pause, 0)
        paused_until = now + timedelta(days=days) if days else None
        self.storage.set_preferences(profile.id, chosen, paused_until, now)
        self.storage.record_consent(profile.id, "preferences", "preferences", None,
                                    {"topics": chosen.split(",") if chosen else [],
                                     "paused_until": paused_until.isoformat() if paused_until else None}, now)
        updated = self.storage.profile(subscriber_id=profile.id)
        assert updated is not None
        return updated

    def unsubscribe(self, profile: Profile, method: str = "preferences") -> bool:
        return unsubscribe(self.storage, profile.email, method, now=self.clock())


# -- the operator's ways in and out ---------------------------------------------------------------

def unsubscribe(storage: Storage, email: str, method: str, *, now: datetime | None = None) -> bool:
    """Unsubscribe and record how; True when the address was subscribed (or pending)."""
    profile = storage.profile(email=email)
    if profile is None:
        return False
    changed = storage.unsubscribe(email)
    if profile.status == PENDING_CONFIRMATION:  # a pending address asked to be left alone: so be it
        changed = storage.withdraw_pending(profile.id, now or utcnow())
    if changed:
        storage.record_consent(profile.id, "unsubscribe", method, None, {}, now or utcnow())
    return changed


def operator_add(config: Config, storage: Storage, address: str, name: str | None, topics: list[str] | None, *,
                 confirmed: bool, transport: Transport | None = None, reason: str | None = None) -> tuple[str, str]:
    """`subscribers add`: active at once only with ``confirmed`` (recorded as the operator's word);
    otherwise pending, with a confirmation mail, like a form signup."""
    email = normalise_address(address)
    unknown = sorted(set(topics or []) - set(config.topics))
    if unknown:
        from .errors import PipelineError

        raise PipelineError(f"unknown topic {unknown[0]!r} (config.yaml topics: {', '.join(config.topics) or 'none'})")
    now = utcnow()
    outcome, profile = storage.operator_add(email, name, topics_key(topics) if topics is not None else None,
                                            confirmed=confirmed, now=now)
    if outcome in ("updated", "already subscribed"):  # subscribed before: no consent to record, no mail
        return email, outcome
    if confirmed:
        storage.record_consent(profile.id, "subscribe", "operator", None,
                               {"confirmed_by": reason or "operator flag --confirmed"}, now)
        return email, outcome
    storage.record_consent(profile.id, "subscribe", "operator", None, {"confirmation": "requested"}, now)
    Signups(config, storage, transport=transport).send_confirmation(profile)
    return email, "pending (confirmation sent)"


def record_import(config: Config, storage: Storage, new_emails: list[str], *, confirmed: bool, source: str,
                  transport: Transport | None = None) -> int:
    """Consent records for addresses an import added, and their confirmation mails when not ``confirmed``.
    Returns how many confirmations went out."""
    if not new_emails:
        return 0
    now = utcnow()
    ids = storage.ids_for(new_emails)
    detail = {"source": source, **({"confirmed_by": "operator flag --confirmed"} if confirmed
                                   else {"confirmation": "requested"})}
    storage.record_consents([{"subscriber_id": i, "at": now, "action": "subscribe", "method": "import",
                              "consent_text": None, "detail": detail} for i in ids.values()])
    if confirmed:
        return 0
    signups = Signups(config, storage, transport=transport)
    sent = 0
    for subscriber_id in ids.values():
        profile = storage.profile(subscriber_id=subscriber_id)
        if profile is not None and profile.status == PENDING_CONFIRMATION:
            sent += signups.send_confirmation(profile)
    return sent


def show(storage: Storage, address: str) -> SubscriberReport | None:
    profile = storage.profile(email=normalise_address(address))
    if profile is None:
        return None
    return SubscriberReport(profile, storage.consent_histories([profile.id])[profile.id])


def describe_event(event: ConsentEvent) -> str:
    """One line of consent history, for `subscribers show` and the export."""
    parts = [event.at.isoformat(timespec="seconds"), event.action, f"via {event.method}"]
    details = {k: v for k, v in event.detail.items() if k != "ip" and v not in (None, [], "")}
    if details:
        parts.append(", ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in details.items()))
    if event.consent_text:
        parts.append(f'consent text: "{event.consent_text}"')
    return "; ".join(parts)

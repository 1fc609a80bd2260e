"""The signup use cases: double opt-in, its bot protection, preferences, and the consent record.

Called by the web app (``service/signup_pages.py``), the subscriber commands and imports; like
every use case it holds the rules, and the callers only translate requests and replies.

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
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol
from urllib.parse import urlencode

import dns.resolver

from ..addresses import AddressError, ascii_address, normalise_address
from ..clock import utcnow
from ..config import Config
from ..delivery.transports import PermanentError, TransientError, Transport, transport_for
from ..environment import previous_secrets, signing_secret
from ..errors import PipelineError
from ..mail.deliverability import ResolverFactory, check_domain
from ..mail.notice import Kind, Notice, build_notice
from ..mail.signup_tokens import (
    hash_token,
    make_form_stamp,
    make_preferences_token,
    new_confirmation_token,
    read_form_stamp,
    read_preferences_token,
)
from ..publish.digest import archive_url
from ..state.storage import (
    NOTICE_DROPPED,
    NOTICE_FAILED,
    NOTICE_QUEUED,
    NOTICE_SENT,
    PENDING_CONFIRMATION,
    SUBSCRIBED,
    ConsentEvent,
    Edition,
    Profile,
    QueuedNotice,
    Storage,
    topics_key,
)
from ..urls import web_url

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Outcome = Literal["accepted", "again", "too-fast", "invalid", "rate-limited"]
PAUSES = {"": 0, "2w": 14, "1m": 30, "3m": 91}  # the preferences page's pause choices, in days
# A queued sign-up mail the relay could not take is tried again after each of these waits, then given up.
NOTICE_RETRIES = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2))
NOTICE_LEASE = timedelta(minutes=10)  # a claimed notice not finished by then (its drainer died) is taken back


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
    queued: bool = False  # a mail was queued for the address (never shown to the person)


@dataclass
class QueueReport:
    """What one pass over the notice queue did (``Signups.deliver_queued``)."""

    sent: int = 0
    retrying: int = 0  # the relay failed for now: queued again with a later due time
    failed: int = 0  # the relay refused it for good, or it ran out of attempts
    dropped: int = 0  # no longer wanted (confirmed or unsubscribed meanwhile, too old, or over the hourly cap)


@dataclass(frozen=True)
class ConfirmResult:
    state: str  # confirmed, used, expired, unknown
    email: str = ""


@dataclass(frozen=True)
class SubscriberReport:
    """`pipeline subscribers show`: the subscriber and how and when they consented."""

    profile: Profile
    history: list[ConsentEvent] = field(default_factory=list)


def deliver_notice(config: Config, notice: Notice, key: str, transport: Transport | None = None) -> None:
    """Send one one-off message on its own connection; raises ``PermanentError`` when the relay refused it
    and ``TransientError`` when it could not take it now (an unreachable relay included)."""
    try:
        connection = (transport or transport_for(config, "signup")).connect()
    except OSError as exc:  # the relay is down or unreachable
        raise TransientError(str(exc)) from exc
    try:
        connection.send(config.require_delivery().from_address, notice.recipient, notice.message, key=key)
    except OSError as exc:
        raise TransientError(str(exc)) from exc
    finally:
        connection.close()


def send_notice(config: Config, notice: Notice, key: str, what: str, transport: Transport | None = None) -> bool:
    """Send one one-off message (a welcome, an import's confirmation, an unsubscribe link); False, logged
    with ``what``, when the relay refused it or could not be reached."""
    try:
        deliver_notice(config, notice, key, transport)
    except (PermanentError, TransientError) as exc:
        log.error("%s failed: %s", what, exc)
        return False
    log.info("%s sent", what)
    return True


class SignupState(Protocol):
    """What the sign-up rules read and write, and nothing else (after listmonk's narrow stores)."""

    def mark_processed(self, source: str, key: str) -> bool: ...
    def hit_rate(self, key: str, limit: int, window_start: datetime, now: datetime) -> bool: ...
    def queue_signup(self, email: str, name: str | None, topics: str, now: datetime, *, consent_text: str,
                     consent_detail: dict[str, Any], resend_after: datetime) -> tuple[str, Profile, bool]: ...
    def claim_notices(self, now: datetime, lease_before: datetime, limit: int = 50) -> list[QueuedNotice]: ...
    def finish_notice(self, notice_id: int, status: str, now: datetime, *, error: str | None = None,
                      due_at: datetime | None = None) -> None: ...
    def profile(self, email: str | None = None, subscriber_id: int | None = None) -> Profile | None: ...
    def issue_token(self, subscriber_id: int, token_hash: str, purpose: str, now: datetime,
                    expires_at: datetime) -> None: ...
    def confirmation_sent(self, subscriber_id: int, now: datetime) -> None: ...
    def token_state(self, token_hash: str, purpose: str, now: datetime) -> tuple[str, Profile | None]: ...
    def use_confirmation(self, token_hash: str, now: datetime) -> tuple[str, Profile | None]: ...
    def set_preferences(self, subscriber_id: int, topics: str, paused_until: datetime | None,
                        now: datetime) -> None: ...
    def record_consent(self, subscriber_id: int, action: str, method: str, consent_text: str | None,
                       detail: dict[str, Any] | None = None, now: datetime | None = None) -> None: ...
    def unsubscribe(self, email: str, method: str = "operator", *, now: datetime | None = None,
                    detail: dict[str, Any] | None = None) -> bool: ...
    def latest_edition(self) -> Edition | None: ...


class Signups:
    """The signup rules over one state database; ``clock`` and ``transport`` are injectable for tests."""

    def __init__(self, config: Config, storage: SignupState, *, clock: Clock = utcnow,
                 transport: Transport | None = None, secret: bytes | None = None,
                 resolver: ResolverFactory = dns.resolver.Resolver, on_queued: Callable[[], object] | None = None):
        delivery = config.require_delivery()
        self.config, self.storage, self.clock = config, storage, clock
        self.settings = config.signup
        self.secret = secret or signing_secret(delivery.secret_env, config.path("state"))
        self.previous = [] if secret else previous_secrets(delivery.secret_env)  # links signed before a key change
        self._transport = transport
        self.resolver = resolver  # the DNS resolver the deliverability check asks; a test's points at loopback
        self.on_queued = on_queued  # told when a signup queued a mail: the web server wakes its drainer

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
        # One transaction whatever the address's state, and its mail only queued: the answer and its time
        # are the same for a new, pending, subscribed or unsubscribed address (the drainer sends later).
        state, profile, queued = self.storage.queue_signup(
            email, form.name.strip()[:300] or None, topics, now, consent_text=self.config.consent_line(),
            consent_detail={"topics": [t for t in topics.split(",") if t], "ip": self._hash(form.client_ip)},
            resend_after=now - timedelta(minutes=settings.resend_minutes))
        if not queued:
            log.info("signup: this address was mailed in the last %d minutes; nothing queued", settings.resend_minutes)
        elif self.on_queued is not None:
            self.on_queued()
        return SignupResult("accepted", queued=queued)

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
        """Store a fresh token and mail its link now (imports, operators); False (logged) when it could not go."""
        return self.try_confirmation(profile) is None

    def try_confirmation(self, profile: Profile) -> str | None:
        """``send_confirmation``, saying why not: None when it went, else the relay's refusal (logged)."""
        return self._attempt("confirm", profile, lambda: self._confirm(profile))

    @staticmethod
    def _attempt(kind: Kind, profile: Profile, send: Callable[[], None]) -> str | None:
        """Run one mail's ``send``, logged either way; None when the relay took it, else why not."""
        try:
            send()
        except (PermanentError, TransientError) as exc:
            log.error("%s mail to subscriber %d failed: %s", kind, profile.id, exc)
            return str(exc)
        log.info("%s mail to subscriber %d sent", kind, profile.id)
        return None

    def _confirm(self, profile: Profile) -> None:
        now = self.clock()
        token, digest = new_confirmation_token()
        expires = now + timedelta(hours=self.settings.confirm_hours)
        self.storage.issue_token(profile.id, digest, "confirm", now, expires)
        link = f"{web_url(self.config)}confirm?{urlencode({'token': token})}"
        self._deliver("confirm", profile, link, expires, f"confirm-{profile.id}-{int(now.timestamp())}")
        self.storage.confirmation_sent(profile.id, now)

    def _deliver(self, kind: Kind, profile: Profile, link: str, expires: datetime | None, key: str) -> None:
        notice = build_notice(self.config, kind, profile.email, link=link, now=self.clock(), expires=expires,
                              topics=[self._label(t) for t in profile.topics])
        deliver_notice(self.config, notice, key, self._transport)

    def _mail(self, kind: Kind, profile: Profile, link: str, expires: datetime | None, key: str) -> bool:
        return self._attempt(kind, profile, lambda: self._deliver(kind, profile, link, expires, key)) is None

    # -- the notice queue ------------------------------------------------------------------------

    def deliver_queued(self) -> QueueReport:
        """Send every due mail the form queued: a confirmation, or to an address that already receives the
        list a note saying so with its preferences link.  A relay that fails for now is tried again later
        (``NOTICE_RETRIES``); a notice no longer wanted, or over ``signup.confirmations_per_hour``, is dropped."""
        report = QueueReport()
        while True:
            now = self.clock()
            batch = self.storage.claim_notices(now, now - NOTICE_LEASE)
            if not batch:
                return report
            for notice in batch:
                self._deliver_queued(notice, now, report)

    def _deliver_queued(self, notice: QueuedNotice, now: datetime, report: QueueReport) -> None:
        profile = self.storage.profile(subscriber_id=notice.subscriber_id)
        wanted = {"confirm": PENDING_CONFIRMATION, "subscribed": SUBSCRIBED}.get(notice.kind)
        reason = ("the address changed state meanwhile" if profile is None or profile.status != wanted else
                  "it waited longer than its link would live"
                  if now - notice.created_at > timedelta(hours=self.settings.confirm_hours) else "")
        if not reason and not self.storage.hit_rate("confirmations", self.settings.confirmations_per_hour,
                                                    now - timedelta(hours=1), now):
            log.warning("signup mail not sent: signup.confirmations_per_hour reached")
            reason = "signup.confirmations_per_hour reached"
        if reason or profile is None:
            self.storage.finish_notice(notice.id, NOTICE_DROPPED, now, error=reason)
            report.dropped += 1
            return
        try:
            if notice.kind == "confirm":
                self._confirm(profile)
            else:
                self._deliver("subscribed", profile, preferences_url(self.config, self.secret, profile.id, now),
                              None, f"subscribed-{profile.id}-{int(now.timestamp())}")
        except TransientError as exc:
            if notice.attempts <= len(NOTICE_RETRIES):
                wait = NOTICE_RETRIES[notice.attempts - 1]
                log.warning("%s mail to subscriber %d: the relay failed (%s); trying again in %s",
                            notice.kind, profile.id, exc, wait)
                self.storage.finish_notice(notice.id, NOTICE_QUEUED, now, error=str(exc), due_at=now + wait)
                report.retrying += 1
                return
            log.error("%s mail to subscriber %d failed after %d attempts: %s", notice.kind, profile.id,
                      notice.attempts, exc)
            self.storage.finish_notice(notice.id, NOTICE_FAILED, now, error=str(exc))
            report.failed += 1
        except PermanentError as exc:
            log.error("%s mail to subscriber %d refused by the relay: %s", notice.kind, profile.id, exc)
            self.storage.finish_notice(notice.id, NOTICE_FAILED, now, error=str(exc))
            report.failed += 1
        else:
            log.info("%s mail to subscriber %d sent", notice.kind, profile.id)
            self.storage.finish_notice(notice.id, NOTICE_SENT, now)
            report.sent += 1

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
        self.storage.record_consent(profile.id, "confirm", "confirmation-link", self.config.consent_line(),
                                    {"topics": list(profile.topics)}, now)
        log.info("subscriber %d confirmed", profile.id)
        if self.settings.welcome:
            latest = self.storage.latest_edition()

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

def unsubscribe(storage: SignupState, email: str, method: str, *, now: datetime | None = None,
                detail: dict[str, Any] | None = None) -> bool:
    """Unsubscribe (or withdraw a pending signup) and record how, in one transaction; True when the address
    was subscribed (or pending)."""
    return storage.unsubscribe(email, method, now=now or utcnow(), detail=detail)


def operator_add(config: Config, storage: Storage, address: str, name: str | None, topics: list[str] | None, *,
                 confirmed: bool, transport: Transport | None = None, reason: str | None = None) -> tuple[str, str]:
    """`subscribers add`: active at once only with ``confirmed`` (recorded as the operator's word);
    otherwise pending, with a confirmation mail, like a form signup."""
    email = normalise_address(address)
    unknown = sorted(set(topics or []) - set(config.topics))
    if unknown:

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
                  confirmed_by: str = "operator flag --confirmed") -> None:
    """Consent records for the addresses an import added: where from, and with ``confirmed`` whose word it
    is (the operator's flag, a desk user), else a confirmation requested."""
    if not new_emails:
        return
    now = utcnow()
    ids = storage.ids_for(new_emails)
    detail = {"source": source, **({"confirmed_by": confirmed_by} if confirmed else {"confirmation": "requested"})}
    storage.record_consents([{"subscriber_id": i, "at": now, "action": "subscribe", "method": "import",
                              "consent_text": None, "detail": detail} for i in ids.values()])


def confirm_imported(config: Config, storage: Storage, emails: list[str],
                     transport: Transport | None = None) -> tuple[int, list[str]]:
    """Mail a confirmation to each of ``emails`` that is pending and was never mailed one (an import's new
    rows, and rows an earlier import could not mail); how many went, and each refusal as "address: why"."""
    signups = Signups(config, storage, transport=transport)
    sent, refused = 0, []
    profiles = storage.profiles(list(storage.ids_for(emails).values()))
    for profile in sorted(profiles.values(), key=lambda p: p.email):
        if profile.status != PENDING_CONFIRMATION or profile.confirm_sent_at is not None:
            continue
        problem = signups.try_confirmation(profile)
        if problem is None:
            sent += 1
        else:
            refused.append(f"{profile.email}: confirmation not sent: {problem}")
    return sent, refused


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

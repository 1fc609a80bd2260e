"""The one place that decides what a bounce or complaint does to a subscriber.

Every intake (the send itself, the bounce mailbox, the SMTP receiver, relay webhooks)
ends in ``record_bounce``: a hard bounce suppresses at once, soft bounces suppress once
``soft_limit`` of them (one per edition) fall within ``soft_window_days``, a complaint
unsubscribes and suppresses, and a mailed unsubscribe unsubscribes.  Each event is kept with its
outcome, and each unsubscribe in the consent history too, so every decision can be seen in
``pipeline subscribers show``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from ..clock import utcnow
from ..config import BouncePolicy
from ..state.rows import BounceEvent, Subscriber, Suppression

log = logging.getLogger(__name__)

Kind = Literal["hard", "soft", "complaint", "unsubscribe", "not counted"]
KINDS = ("hard", "soft", "complaint", "unsubscribe", "not counted")

HARD_BOUNCE, SOFT_BOUNCES, COMPLAINT = "hard-bounce", "soft-bounces", "complaint"
# The kinds that are the person saying stop, and the method their consent history records them with (a
# bounce suppresses the address but withdraws no consent: lifting it puts them back).
WITHDRAWALS = {"complaint": "complaint", "unsubscribe": "mailto"}


class BounceStore(Protocol):
    """The state the decision reads and writes (``state.storage.Storage`` is one)."""

    def get_subscriber(self, email: str) -> Subscriber | None: ...
    def get_subscriber_by_id(self, subscriber_id: int) -> Subscriber | None: ...
    def last_lifted(self, subscriber_id: int) -> datetime | None: ...
    def soft_bounces_since(self, subscriber_id: int, since: datetime) -> int: ...
    def bounce_history(self, subscriber_id: int) -> tuple[list[BounceEvent], list[Suppression]]: ...
    def record_bounce_event(self, subscriber_id: int, kind: str, reason: str, source: str, edition_id: str | None,
                            *, suppress: str | None = None, unsubscribe_via: str | None = None,
                            at: datetime | None = None) -> str: ...


@dataclass(frozen=True)
class BounceResult:
    email: str
    kind: str
    outcome: str  # counted, suppressed, unsubscribed, ... or "unknown address"


def record_bounce(storage: BounceStore, policy: BouncePolicy, email: str, kind: str, reason: str, source: str,
                  edition_id: str | None = None, subscriber_id: int | None = None,
                  at: datetime | None = None) -> BounceResult:
    """Record one bounce, complaint or unsubscribe request for a subscriber and apply the policy.

    ``subscriber_id`` (from a signed VERP token) wins over ``email``; an address that is not on
    the list changes nothing.  ``at`` is when it happened (a refusal during a send is looked at when
    the send ends; a relay dates its events), default now: an operator who lifted the address's
    suppression after that moment decided with it in view, so it is recorded but suppresses nothing
    (``record_bounce_event`` checks, in its transaction), and soft bounces before the lift stop counting.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown bounce kind {kind!r}")
    subscriber = (storage.get_subscriber_by_id(subscriber_id) if subscriber_id is not None
                  else storage.get_subscriber(email.strip().lower()))
    if subscriber is None:
        log.info("%s from %s names an address not on the list; ignored", kind, source)
        return BounceResult(email, kind, "unknown address")
    suppress: str | None = None
    unsubscribe_via = WITHDRAWALS.get(kind)  # how the consent record names it: the person said stop
    if kind == "hard":
        suppress = HARD_BOUNCE
    elif kind == "complaint":
        suppress = COMPLAINT
    elif kind == "soft":
        since = (at or utcnow()) - timedelta(days=policy.soft_window_days)
        lifted = storage.last_lifted(subscriber.id)
        if lifted is not None and lifted > since:
            since = lifted  # an operator lifted a suppression: earlier bounces no longer count
        earlier = storage.soft_bounces_since(subscriber.id, since)
        if edition_id is None or not _already_counted(storage, subscriber.id, edition_id, since):
            earlier += 1
        if earlier >= policy.soft_limit:
            suppress = SOFT_BOUNCES
            reason = f"{reason} ({earlier} soft bounces within {policy.soft_window_days:g} days)"
    outcome = storage.record_bounce_event(subscriber.id, kind, reason, source, edition_id,
                                          suppress=suppress, unsubscribe_via=unsubscribe_via, at=at)
    log.info("%s for subscriber %d from %s: %s", kind, subscriber.id, source, outcome)
    return BounceResult(subscriber.email, kind, outcome)


def _already_counted(storage: BounceStore, subscriber_id: int, edition_id: str, since) -> bool:
    events, _ = storage.bounce_history(subscriber_id)
    return any(e.kind == "soft" and e.edition_id == edition_id and e.created_at >= since for e in events)


_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def classify_smtp_reply(reply: str) -> str:
    """What a 5xx refusal at send time says about the address: 'hard' when the mailbox does not exist
    or is disabled, 'soft' for a full mailbox, 'not counted' for refusals about us (policy, spam,
    authentication, a server lacking SMTPUTF8) rather than the address."""
    match = re.match(r"\s*(\d{3})\b", reply)
    if not match or not match.group(1).startswith("5"):
        return "not counted"
    code = int(match.group(1))
    enhanced = _ENHANCED.search(reply)
    if enhanced:
        subject, detail = enhanced.group(2), enhanced.group(3)
        if subject == "1" or (subject == "2" and detail == "1"):
            return "hard"  # 5.1.x bad mailbox / domain; 5.2.1 mailbox disabled
        if subject == "2" and detail == "2":
            return "soft"  # 5.2.2 mailbox full: often temporary in practice
        return "not counted"  # 5.7.x policy/spam/auth, 5.3.x/5.4.x/5.5.x/5.6.x system or content problems
    return "hard" if code in (550, 551, 553) else "not counted"

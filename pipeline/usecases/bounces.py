"""Bounces, complaints and mailed unsubscribes: from the relay, the bounce mailbox or the receiver,
to the suppression list and the consent record.

Imports inside functions: the sending, linting, DKIM, bounce and feed modules load only in
the use case that needs them, so a cron run that finds nothing changed loads none of them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ..bounces.policy import BounceResult
from ..config import Config
from ..environment import signing_secret
from ..errors import PipelineError, require_extra
from ..state.runs import start_run
from ..state.storage import (
    SUBSCRIBED,
    Storage,
)
from .common import RunOutcome, open_storage

if TYPE_CHECKING:  # imported where used: a run that finds nothing changed needs none of them
    from ..bounces.parse import Addresses


log = logging.getLogger(__name__)

def bounce_addresses(config: Config, secret: bytes) -> Addresses:
    from email.utils import parseaddr

    from ..bounces.parse import Addresses
    from ..environment import previous_secrets

    delivery = config.require_delivery()
    return Addresses(secret, config.bounces.local_part, config.bounces.domain,
                     parseaddr(delivery.unsubscribe_mailto)[1].lower(), tuple(previous_secrets(delivery.secret_env)),
                     tuple(config.bounces.trusted_authserv_ids))


def handle_received(config: Config, storage: Storage, addresses: Addresses, raw: bytes, source: str,
                    envelope_recipients: list[str] | None = None) -> list[BounceResult]:
    """One received message (a bounce, a complaint, a mailto unsubscribe) through the policy."""
    from ..addresses import AddressError, normalise_address
    from ..bounces.parse import UNVERIFIED_UNSUBSCRIBE, read_message
    from ..bounces.policy import record_bounce

    results: list[BounceResult] = []
    try:
        reports = read_message(raw, addresses, envelope_recipients or ())
    except Exception as exc:  # noqa: BLE001 - one unreadable message must not stop the mailbox for good
        log.warning("%s: an unreadable message was ignored (%s: %s)", source, type(exc).__name__, exc)
        return results
    for report in reports:
        email = report.email or ""
        if email:
            try:
                email = normalise_address(email)
            except AddressError:
                continue
        if report.kind == UNVERIFIED_UNSUBSCRIBE:
            ask_before_unsubscribing(config, storage, addresses.secret, email)
            continue
        target = report.target
        results.append(record_bounce(storage, config.bounces.policy, email, report.kind, report.reason, source,
                                     edition_id=target.edition_id if target else None,
                                     subscriber_id=target.subscriber_id if target else None))
    return results


def ask_before_unsubscribing(config: Config, storage: Storage, secret: bytes, email: str) -> bool:
    """A mail to the unsubscribe address whose sender nothing vouches for: its ``From:`` may be forged,
    so the subscriber is sent their unsubscribe link instead (at most once a day per address, so a
    forger cannot mail-bomb them through us).  True when the link was sent."""
    from ..mail.message import unsubscribe_url
    from ..mail.notice import build_notice
    from ..urls import unsubscribe_base
    from .signup import send_notice

    subscriber = storage.get_subscriber(email) if email else None
    now = datetime.now(timezone.utc)
    if subscriber is None or subscriber.status != SUBSCRIBED:
        return False
    if not storage.mark_processed("unsubscribe-reply", f"{email}:{now:%Y-%m-%d}"):
        return False
    notice = build_notice(config, "unsubscribe", email, link=unsubscribe_url(unsubscribe_base(config), secret, email),
                          now=now)
    return send_notice(config, notice, f"unsubscribe-{subscriber.id}-{now:%Y%m%d}",
                       f"unsubscribe link to subscriber {subscriber.id} (asked by email)")


@dataclass
class BounceFetch:
    """What one read of the bounce mailbox did."""

    fetched: int
    already: int
    results: list[BounceResult]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        return counts


def fetch_bounces(config: Config) -> BounceFetch:
    """Read the bounce mailbox once: every new message through the policy, each exactly once."""
    from ..bounces.mailbox import fetch_mailbox, mailbox_source
    from ..environment import secret_from_env

    settings = config.bounces.mailbox
    if settings is None:
        raise PipelineError(f"{config.source_file}: bounces.mailbox: not configured")
    require_extra("bounces", "flufl.bounce", "imap_tools")
    delivery = config.require_delivery()
    password = secret_from_env(settings.password_env)
    if password is None:
        raise PipelineError(f"the bounce mailbox password is not set: put it in ${settings.password_env}")
    secret = signing_secret(delivery.secret_env, config.path("state"))
    results: list[BounceResult] = []
    with open_storage(config) as storage:
        addresses = bounce_addresses(config, secret)
        source = "mailbox"
        report = fetch_mailbox(settings, password, storage,
                               lambda raw: results.extend(handle_received(config, storage, addresses, raw, source)),
                               str(config.resolve(settings.ca_file)) if settings.ca_file else None)
    log.info("bounce mailbox %s: %d new messages, %d seen before", mailbox_source(settings), report.fetched,
             report.already)
    return BounceFetch(report.fetched, report.already, results)


def bounce_run(config: Config, job: str) -> RunOutcome:
    with open_storage(config) as storage:
        run_id = start_run(storage, job)
    started = time.monotonic()
    try:
        fetched = fetch_bounces(config)
    except BaseException as exc:
        with open_storage(config) as storage:
            storage.finish_run(run_id, "failed", {"action": "bounces", "error": str(exc)})
        raise
    outcome = RunOutcome("bounces", notes={"bounce_messages": fetched.fetched, "bounce_outcomes": fetched.counts()})
    with open_storage(config) as storage:
        storage.finish_run(run_id, "ok", outcome.summary(time.monotonic() - started))
    return outcome

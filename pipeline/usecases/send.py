"""Sending: the due editions of a run, the workers that share them, test copies, retries, and what
every message of an edition is signed and returned with.

Imports inside functions: the sending, linting, DKIM, bounce and feed modules load only in
the use case that needs them, so a cron run that finds nothing changed loads none of them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..delivery.editions import EditionPlan, items_of, items_to_look_at, plan_edition
from ..environment import signing_secret
from ..errors import PipelineError, require_extra
from ..sources.merge import merge_items
from ..state.lock import run_lock
from ..state.storage import (
    Claim,
    Storage,
)
from .common import RunContext, open_storage, read_items

if TYPE_CHECKING:  # imported where used: a run that finds nothing changed needs none of them
    from ..delivery.engine import SendReport
    from ..delivery.transports import Transport
    from ..mail.dkim import DkimSigner
    from ..mail.lint import Finding


log = logging.getLogger(__name__)

def due_editions(storage: Storage, config: Config) -> list[str]:
    """Editions with messages to send now.  On a one-machine database (SQLite, under the run lock) a
    row left 'sending' is always a dead sender's; where workers share PostgreSQL, only once its lease ran out."""
    if storage.dialect == "sqlite":
        return storage.editions_with_work()
    lease = timedelta(seconds=config.require_delivery().lease_seconds)
    stale_before = datetime.now(timezone.utc) - lease
    for edition_id in storage.editions_unsettled():  # a worker that died gives its rows back at once
        taken = storage.release_stale(edition_id, claimed_before=stale_before)
        if taken:
            log.warning("edition %s: took back %d messages from a sender that is gone", edition_id, taken)
    return storage.editions_with_work(stale_before=stale_before)



class Presence:
    """This process as a send worker: its id, its heartbeat, and how many live workers share the rate."""

    def __init__(self, storage: Storage, lease_seconds: float):
        self.storage = storage
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease = timedelta(seconds=lease_seconds)

    def beat(self) -> int:
        self.storage.heartbeat(self.id, socket.gethostname(), os.getpid())
        return max(1, len(self.storage.live_workers(since=datetime.now(timezone.utc) - 2 * self.lease)))


def send_due(ctx: RunContext, *, force: bool, stop: threading.Event | None, progress: bool | None,
              presence: Presence | None = None) -> list[SendReport]:
    """Send every edition that has messages due, oldest first, each after the pre-send checks."""
    config, storage = ctx.config, ctx.storage
    due = due_editions(storage, config)
    if not due:
        return []
    delivery = config.require_delivery()
    secret = signing_secret(delivery.secret_env, config.path("state"))
    own_presence = presence is None
    presence = presence or Presence(storage, delivery.lease_seconds)
    reports = []
    try:
        with storage.liveness(presence.id) if own_presence else _no_lock():
            for edition_id in due:
                if stop is not None and stop.is_set():
                    break
                report = _send_edition(ctx, edition_id, secret, presence, force=force, stop=stop,
                                       progress=progress)
                if report is not None:
                    reports.append(report)
    finally:
        if own_presence:
            storage.forget_worker(presence.id)
    return reports


def refused_new_edition(ctx: RunContext, force: bool) -> list[Finding]:
    """The pre-send findings that would stop the edition this run is about to create, checked before
    it is created: a refused send leaves no edition behind (and nothing queued)."""
    from ..mail.edition import EditionMail
    from ..mail.lint import blocks_sending, lint_outgoing

    config = ctx.config
    plan = plan_edition(ctx.items, ctx.storage, config, ctx.stored, dry_run=True)
    if plan.reason != "would create the edition" or plan.edition_id is None:
        return []
    secret = signing_secret(config.require_delivery().secret_env, config.path("state"))
    mail = EditionMail(ctx.stored(plan.edition_id, plan.items), plan.edition_id, datetime.now(timezone.utc),
                       config, secret)
    findings = lint_outgoing(mail.sample(), plan.items, config=config)
    return findings if blocks_sending(findings, force) else []


def _send_edition(ctx: RunContext, edition_id: str, secret: bytes, presence: Presence, *, force: bool,
                  stop: threading.Event | None, progress: bool | None) -> SendReport | None:
    from ..delivery.engine import Sender, SendSettings
    from ..delivery.topics import lint_variants, variant_mails, variant_renderer
    from ..delivery.transports import transport_for
    from ..mail.edition import EditionMail
    from ..mail.lint import LintFailed, blocks_sending, lint_outgoing

    config, storage = ctx.config, ctx.storage
    delivery = config.require_delivery()
    edition = storage.get_edition(edition_id)
    if edition is None:
        return None
    chosen = items_of(edition, ctx.items) if ctx.items else []
    stored = storage.edition_digest(edition_id)  # the bytes the edition was made with
    if stored is None:  # an edition made before digests were stored: render it from its items
        if not chosen:
            raise PipelineError(f"edition {edition_id}: none of its items exist here; cannot render it")
        stored = ctx.stored(edition_id, chosen)
    mail = EditionMail(stored, edition_id, edition.created_at, config, secret)
    mails = variant_mails(storage, mail, config)  # per-topic digests, if subscribers chose topics
    findings = lint_outgoing(mail.sample(), chosen, config=config) + lint_variants(mails, chosen, config)
    if blocks_sending(findings, force):
        raise LintFailed(findings)
    for finding in findings:
        log.warning("edition %s: sending despite a failed check (--force): %s", edition_id, finding)
    transport = transport_for(config, edition_id)
    settings = replace(SendSettings.for_delivery(delivery, transport), exclusive=storage.dialect == "sqlite")
    signer = dkim_signer(config)
    # SMTP takes messages pre-stuffed, as DATA sends them; a DKIM signature is made over the plain
    # personalised message, which the transport then stuffs itself.
    render = variant_renderer(storage, edition_id, mails, wire=transport.name == "smtp" and signer is None)
    if signer is not None:
        render = signed(render, signer)
    sender = Sender(storage, edition_id, render, transport, settings,
                    stop=stop, progress=progress, worker=presence.id, share=presence.beat,
                    envelope_for=return_paths(config, edition_id, secret))
    report = sender.run()
    record_send_refusals(config, storage, edition_id)  # 5xx replies count as bounces
    report.failures = storage.failures(edition_id)
    report.next_retry = storage.next_retry(edition_id)
    log.info("edition %s: sent %d, failed %d, deferred %d, retried %d", edition_id, report.sent,
             report.failed, report.deferred, report.retried)
    return report


# -- workers: senders on any number of machines ---------------------------------------------------

@dataclass
class WorkerReport:
    worker: str
    reports: list[SendReport] = field(default_factory=list)


def work(config: Config, *, stop: threading.Event, once: bool = False, progress: bool | None = False,
         idle_max: float = 30.0) -> WorkerReport:
    """Send whatever any edition has due until stopped; never make editions or outputs.

    Any number of workers on any number of machines can share a PostgreSQL database:
    claims carry the worker's id and a lease it renews, and rows of a dead worker are
    taken back by the others once its lease runs out.  Idle workers wait for a
    notification from whoever makes an edition (LISTEN/NOTIFY), or poll with backoff
    on SQLite, where one machine means one worker at a time under the run lock.
    """
    delivery = config.require_delivery()
    with open_storage(config) as storage, storage.work_listener() as listener:
        presence = Presence(storage, delivery.lease_seconds)
        outcome = WorkerReport(presence.id)
        local, remote = read_items(config, storage, fetch=False) if storage.dialect == "sqlite" else ([], [])
        ctx = RunContext(config, storage, merge_items(local, remote))
        idle = 1.0
        idle_max = min(idle_max, delivery.lease_seconds)  # a dead worker's rows are due after one lease
        log.info("worker %s started", presence.id)
        try:
            with storage.liveness(presence.id):
                while not stop.is_set():
                    presence.beat()
                    if due_editions(storage, config):
                        lock = run_lock(config.path("state"), wait=True, stop=stop) if storage.dialect == "sqlite" \
                            else _no_lock()
                        with lock:
                            outcome.reports += send_due(ctx, force=False, stop=stop, progress=progress,
                                                         presence=presence)
                        idle = 1.0
                        continue
                    if once:
                        break
                    if not listener.wait(min(idle, 1.0)) and storage.dialect == "sqlite":
                        stop.wait(idle)
                    idle = min(idle * 2, idle_max)
        finally:
            storage.forget_worker(presence.id)
            log.info("worker %s stopped", presence.id)
        return outcome


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


@dataclass
class SendPreview:
    edition: EditionPlan
    due: dict[str, dict[str, int]]  # edition id -> ledger counts
    subscribers: int
    blocked: list[Finding] = field(default_factory=list)  # checks that stop any send, --force or not
    # The pre-send checks the new edition fails: ``send`` without --force stops on them (as the desk's always does).
    refused: list[Finding] = field(default_factory=list)


def send_dry_run(config: Config, at: datetime | None = None) -> SendPreview:
    """What ``send`` would do (at ``at``, default now: with the stories scheduled until then); fetches,
    writes and records nothing."""
    from ..mail.lint import lint_config

    config.require_delivery()
    with open_storage(config) as storage:
        local, remote = read_items(config, storage, fetch=False, at=at)
        ctx = RunContext(config, storage, merge_items(local, remote))
        plan = plan_edition(ctx.items, storage, config, ctx.stored, dry_run=True)
        due = {edition_id: storage.ledger_counts(edition_id) for edition_id in storage.editions_with_work()}
        blocked = [finding for finding in lint_config(config) if finding.blocking]
        refused = [finding for finding in refused_new_edition(ctx, force=False) if finding not in blocked]
        return SendPreview(plan, due, storage.count_mailable(), blocked, refused)


@dataclass(frozen=True)
class SentTestCopy:
    """A test copy sent: the relay's reply, and the pre-send findings that would stop the real send."""

    reply: str
    findings: list[Finding]


def send_test(config: Config, address: str, transport: Transport | None = None) -> str:
    """Send the next (or latest) edition to one address, marked [TEST]; the ledger is not touched."""
    return send_test_copy(config, address, transport).reply


def send_test_copy(config: Config, address: str, transport: Transport | None = None) -> SentTestCopy:
    """``send_test``, also giving the findings of the checks the real send runs first (``lint``), so the
    operator hears about them before the real send stops on them."""
    from ..addresses import ascii_address, normalise_address
    from ..delivery.editions import edition_id_for
    from ..delivery.transports import PermanentError, TransientError, transport_for
    from ..mail.edition import EditionMail

    delivery = config.require_delivery()
    email = normalise_address(address)
    with open_storage(config) as storage:
        local, remote = read_items(config, storage, fetch=False)
        ctx = RunContext(config, storage, merge_items(local, remote))
        chosen = items_to_look_at(ctx.items, storage, config)
    edition_id = "test-" + edition_id_for([item.id for item in chosen])
    secret = signing_secret(delivery.secret_env, config.path("state"))
    mail = EditionMail(ctx.digest(chosen), edition_id, datetime.now(timezone.utc), config, secret,
                       subject_prefix="[TEST] ")
    from ..mail.lint import lint_outgoing

    real = EditionMail(ctx.digest(chosen, edition_id_for([item.id for item in chosen])), edition_id,
                       datetime.now(timezone.utc), config, secret)
    findings = lint_outgoing(real.sample(), chosen, config=config)
    message = mail.render_once(email)
    signer = dkim_signer(config)
    if signer is not None:
        message = signer.sign(message)
    connection = (transport or transport_for(config, edition_id)).connect()
    try:
        reply = connection.send(delivery.from_address, ascii_address(email) if email.split("@")[0].isascii()
                                else email, message, key="test")
        return SentTestCopy(reply, findings)
    except (PermanentError, TransientError) as exc:
        raise PipelineError(f"test send to {email} failed: {exc}") from None
    finally:
        connection.close()


def retry_failed(config: Config, edition_id: str | None = None) -> tuple[str, int]:
    """Put the failed messages of an edition (default: the latest) back in the queue; returns how many."""
    with open_storage(config) as storage:
        edition = storage.get_edition(edition_id) if edition_id else storage.latest_edition()
        if edition is None:
            raise PipelineError(f"no edition {edition_id}" if edition_id else "no edition has been made yet")
        kept = storage.suppressed_failures(edition.id)
        if kept:  # a refusal that was a hard bounce keeps the address off the list
            log.warning("edition %s: %d failed messages are of suppressed addresses and stay failed; lift with "
                        "`pipeline subscribers unsuppress ADDRESS --reason ...` first", edition.id, kept)
        return edition.id, storage.requeue_failed(edition.id)


def return_paths(config: Config, edition_id: str, secret: bytes) -> Callable[[Claim], str] | None:
    """The VERP envelope sender of each message of an edition, when a bounce domain is configured."""
    from ..mail.verp import make_return_path

    bounces = config.bounces
    if not bounces.domain:
        return None
    domain, local_part = bounces.domain, bounces.local_part
    return lambda claim: make_return_path(secret, edition_id, claim.subscriber_id, local_part, domain)


def record_send_refusals(config: Config, storage: Storage, edition_id: str) -> int:
    """The 5xx refusals the relay gave while sending count as bounces too (hard for a missing mailbox,
    soft for a full one, not at all for refusals about us); each failed row is looked at once, as of when
    it failed: a suppression an admin lifted since (during the send) stays lifted."""
    from ..bounces.policy import classify_smtp_reply, record_bounce

    counted = 0
    for failure in storage.unrecorded_send_failures(edition_id):
        kind = classify_smtp_reply(failure.reply)
        record_bounce(storage, config.bounces.policy, failure.email, kind, failure.reply or "refused at send time",
                      "smtp", edition_id=edition_id, subscriber_id=failure.subscriber_id, at=failure.at)
        counted += kind != "not counted"
    return counted


def dkim_signer(config: Config) -> DkimSigner | None:
    """The DKIM signer of ``delivery.dkim`` (key read once per run), or None when signing is off."""
    from ..mail.dkim import DkimSigner

    settings = config.require_delivery().dkim
    if settings is None:
        return None
    require_extra("dkim", "cryptography")
    return DkimSigner.from_file(settings.domain, settings.selector, settings.algorithm,
                                config.resolve(settings.key_file))


def signed(render: Callable[[Claim], bytes], signer: Any) -> Callable[[Claim], bytes]:
    """Each claimed row's message, DKIM-signed after personalisation (To, Message-ID, List-Unsubscribe
    and the bodies differ per recipient, so the signature must be made per message)."""
    return lambda claim: signer.sign(render(claim))

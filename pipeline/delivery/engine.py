"""Editions and the send ledger: every subscriber gets each edition once, even across crashes.

An edition is the set of items not sent before (or the newest N); its id is a hash
of its item ids, so running the same edition again is recognised.  Creating it
queues one ledger row per subscriber; sending claims rows in batches
(pending -> sending), sends, and records each server reply (sent | failed) before
the next message.  After a crash, rows left in 'sending' are sent again with the
same Message-ID: the one case SMTP cannot settle (the server accepted, we died
before recording it) becomes a duplicate that receivers can drop by Message-ID,
never a subscriber skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import make_msgid

from tqdm import tqdm

from ..config import Config
from ..publish.digest import UNSUBSCRIBE_PLACEHOLDER, Digest, render_digest
from ..errors import ConfigError, PipelineError
from ..items import Item, newest_first
from ..mail.lint import LintFailed, Sample, blocks_sending, lint_outgoing
from ..mail.message import Envelope, MessageTemplate, Recipient, build_message, recipient_for
from ..state.storage import FAILED, PENDING, SENT, SUBSCRIBED, Claim, Edition, Storage, utcnow
from .transports import PermanentError, TransientError, Transport, transport_for

log = logging.getLogger(__name__)

MIN_SECRET_LENGTH = 16
STALE_CLAIM = timedelta(minutes=15)
MAX_RETRY_DELAY = 60.0


def edition_id_for(item_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(item_ids)).encode("utf-8")).hexdigest()[:16]


def unsubscribe_base(config: Config) -> str:
    return config.digest.unsubscribe_url or config.site.url("unsubscribe")


def signing_secret(config: Config) -> bytes:
    """The unsubscribe-token secret, from the environment only; never logged."""
    name = config.require_delivery().secret_env
    value = os.environ.get(name, "")
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(f"set ${name} to a random secret of at least {MIN_SECRET_LENGTH} characters "
                          "(it signs the unsubscribe links); e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return value.encode("utf-8")


def choose_items(items: list[Item], storage: Storage, config: Config) -> list[Item]:
    """The items of the next edition: new ones only, or simply the newest N."""
    newest = newest_first(items)
    if config.require_delivery().edition == "new":
        already = storage.sent_item_ids()
        newest = [item for item in newest if item.id not in already]
    return newest[: config.digest.limit]


@dataclass
class EditionPlan:
    edition_id: str | None
    items: list[Item]
    created: bool = False
    reason: str = ""


def prepare_edition(items: list[Item], storage: Storage, config: Config, *, dry_run: bool = False) -> EditionPlan:
    """Create the next edition if there is something new and someone to send it to."""
    chosen = choose_items(items, storage, config)
    if not chosen:
        return EditionPlan(None, [], reason="no new items since the last edition")
    edition_id = edition_id_for([item.id for item in chosen])
    if storage.get_edition(edition_id):
        return EditionPlan(edition_id, chosen, reason="edition exists already")
    if storage.count_subscribers(SUBSCRIBED) == 0:
        return EditionPlan(None, chosen, reason="no subscribers")
    if dry_run:
        return EditionPlan(edition_id, chosen, reason="would create the edition")
    digest = render_digest(chosen, config, edition_id)
    created = storage.create_edition(edition_id, [item.id for item in chosen], digest.subject,
                                     record_items=config.require_delivery().edition == "new")
    log.info("edition %s: %d items, queued for %d subscribers", edition_id, len(chosen),
             storage.get_edition(edition_id).recipients)
    return EditionPlan(edition_id, chosen, created=created, reason="new edition")


def edition_items(edition: Edition, items: list[Item]) -> list[Item]:
    by_id = {item.id: item for item in items}
    missing = [i for i in edition.item_ids if i not in by_id]
    if missing:
        log.warning("edition %s: %d items no longer in the sources: %s", edition.id, len(missing), ", ".join(missing))
    return newest_first([by_id[i] for i in edition.item_ids if i in by_id])


@dataclass
class SendReport:
    edition_id: str
    sent: int = 0
    failed: int = 0
    retried: int = 0
    skipped: int = 0  # already handled by an earlier run
    stopped: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class RateLimiter:
    """Spaces messages evenly across all connections; 0 means no limit."""

    def __init__(self, per_second: float, clock=time.monotonic, sleep=time.sleep):
        self.interval = 1.0 / per_second if per_second else 0.0
        self.clock, self.sleep = clock, sleep
        self.next = clock()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = self.clock()
            at = max(now, self.next)
            self.next = at + self.interval
        if at > now:
            self.sleep(at - now)


SAMPLE_RECIPIENT = "subscriber@example.org"


def sample_message(digest: Digest, template: MessageTemplate, edition_id: str, config: Config,
                   secret: bytes) -> Sample:
    """The message one made-up recipient would get: what the pre-send checks look at."""
    recipient = recipient_for(SAMPLE_RECIPIENT, edition_id, config.require_delivery(), secret, unsubscribe_base(config))
    html, text = digest.with_unsubscribe(recipient.unsubscribe_url)
    return Sample(html, text, template.render(recipient))


def next_edition_items(items: list[Item], storage: Storage, config: Config) -> list[Item]:
    """What a look before sending should show: the next edition, else the latest one, else the newest items."""
    chosen = choose_items(items, storage, config)
    latest = storage.latest_edition()
    if not chosen and latest is not None:
        chosen = edition_items(latest, items)
    chosen = chosen or newest_first(items)[: config.digest.limit]
    if not chosen:
        raise PipelineError("no items to show")
    return chosen


def lint_next_edition(items: list[Item], storage: Storage, config: Config) -> tuple[list[Item], list]:
    """Pre-send checks of what the next send would carry (or the latest edition), and of the feeds."""
    from ..publish.feeds import ATOM_FILE, RSS_FILE, build_feeds

    delivery = config.require_delivery()
    chosen = next_edition_items(items, storage, config)
    edition_id = edition_id_for([item.id for item in chosen])
    digest = render_digest(chosen, config, edition_id)
    envelope = Envelope.for_digest(digest, edition_id, delivery, datetime.now(timezone.utc))
    secret = os.environ.get(delivery.secret_env, "").encode() or b"lint-only-secret-never-sent"
    sample = sample_message(digest, MessageTemplate(envelope, UNSUBSCRIBE_PLACEHOLDER), edition_id, config, secret)
    feeds = build_feeds(items, config).files()
    return chosen, lint_outgoing(sample, chosen, {RSS_FILE: feeds[RSS_FILE], ATOM_FILE: feeds[ATOM_FILE]}, config)


class LedgerWriter:
    """Records send outcomes from all connections in group commits on one thread.

    Sending threads hand over each server reply and go on; the writer commits what
    queued up within a few milliseconds in one transaction.  What a crash can lose
    is only those few replies, and their rows are resent with the same Message-ID.
    """

    def __init__(self, storage: Storage, max_batch: int = 500, window: float = 0.005):
        self.storage = storage
        self.max_batch = max_batch
        self.window = window  # like PostgreSQL's commit_delay: a few ms to gather a group
        self.queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self.thread.start()

    def put(self, claim: Claim, status: str, reply: str | None, attempts: int) -> None:
        if self.error is not None:
            raise PipelineError(f"cannot record send results: {self.error}")
        self.queue.put((claim, status, reply, attempts))

    def _run(self) -> None:
        while (first := self.queue.get()) is not None:
            batch = [first]
            closing = False
            deadline = time.monotonic() + self.window
            while len(batch) < self.max_batch:
                try:
                    more = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                batch.append(more)
            try:
                self.storage.record_results(batch)
            except BaseException as exc:  # surfaced to the senders and the caller
                log.error("could not record %d send results: %s", len(batch), exc)
                self.error = exc
                return
            if closing:
                return

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise PipelineError(f"could not record send results: {self.error}")


class Sender:
    """Sends one edition's pending ledger rows over a few reused connections."""

    def __init__(self, config: Config, storage: Storage, edition: Edition, digest: Digest, secret: bytes,
                 transport: Transport, *, stop: threading.Event | None = None, progress: bool | None = None,
                 exclusive: bool = True):
        self.config, self.storage, self.edition = config, storage, edition
        self.exclusive = exclusive
        self.abort = threading.Event()  # a sender hit an unexpected error: every sender stops
        self.error: BaseException | None = None
        self.delivery = config.require_delivery()
        self.secret = secret
        self.transport = transport
        self.stop = stop or threading.Event()
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.digest = digest
        envelope = Envelope.for_digest(digest, edition.id, self.delivery, edition.created_at)
        self.template = MessageTemplate(envelope, UNSUBSCRIBE_PLACEHOLDER)  # render + inline + MIME: once
        self.unsubscribe_base = unsubscribe_base(config)
        self.limiter = RateLimiter(self.delivery.smtp.rate_limit if transport.name == "smtp" else 0)
        self.workers = self.delivery.smtp.concurrency if transport.name == "smtp" else 1
        self.worker_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def run(self) -> SendReport:
        report = SendReport(self.edition.id)
        # Holding the run lock, every 'sending' row belongs to a sender that died. Workers that share
        # a database without the lock (PostgreSQL) only take back claims older than a lease.
        before = utcnow() if self.exclusive else utcnow() - STALE_CLAIM
        released = self.storage.release_stale(self.edition.id, claimed_before=before)
        if released:
            log.warning("edition %s: %d messages were in flight when a sender stopped; sending them again "
                        "with their original Message-ID", self.edition.id, released)
        counts = self.storage.ledger_counts(self.edition.id)
        report.skipped = counts["sent"] + counts["failed"] + counts["skipped"]
        todo = counts["pending"] + counts["sending"]
        work: queue.Queue[tuple[Claim, bytes] | None] = queue.Queue(maxsize=self.workers * 4)
        self.ledger = LedgerWriter(self.storage)
        bar = tqdm(total=todo, unit="msg", desc=f"edition {self.edition.id}", disable=not self.progress,
                   file=sys.stderr, leave=False)
        threads = [threading.Thread(target=self._work, args=(work, report, bar), name=f"sender-{n}", daemon=True)
                   for n in range(self.workers)]
        for thread in threads:
            thread.start()
        try:
            while not self.stop.is_set() and not self.abort.is_set():
                claims = self.storage.claim(self.edition.id, self.delivery.batch_size, self.worker_id)
                if not claims:
                    break
                for claim in claims:
                    # Rendered here, ahead of the senders, so the per-recipient work overlaps
                    # with the network round trips instead of adding to them.
                    work.put((claim, self._render(claim)))
        finally:
            for _ in threads:
                work.put(None)
            for thread in threads:
                thread.join()
            bar.close()
            self.ledger.close()
        if self.error is not None:
            raise PipelineError(f"edition {self.edition.id}: sending stopped: {self.error}") from self.error
        report.stopped = self.stop.is_set()
        report.failures = self.storage.failures(self.edition.id)
        return report

    def _work(self, work: queue.Queue, report: SendReport, bar: tqdm) -> None:
        connection = self.transport.connect()
        try:
            while (task := work.get()) is not None:
                claim, message = task
                if self.stop.is_set() or self.abort.is_set():  # not started: back to pending for the next run
                    self._release(claim)
                    continue
                try:
                    self._send_one(connection, claim, message, report)
                except Exception as exc:  # noqa: BLE001 - stop every sender, keep draining so none blocks
                    log.error("edition %s: sender failed: %s", self.edition.id, exc)
                    self.error = self.error or exc
                    self.abort.set()
                bar.update(1)
        finally:
            connection.close()

    def _release(self, claim: Claim) -> None:
        try:
            self.ledger.put(claim, PENDING, None, claim.attempts)
        except PipelineError:
            pass  # the ledger is down; the row stays 'sending' and the next run takes it back

    def sample(self) -> Sample:
        return sample_message(self.digest, self.template, self.edition.id, self.config, self.secret)

    def _render(self, claim: Claim) -> bytes:
        recipient = recipient_for(claim.email, self.edition.id, self.delivery, self.secret, self.unsubscribe_base)
        return self.template.render(recipient)

    def _send_one(self, connection, claim: Claim, message: bytes, report: SendReport) -> None:
        attempts = claim.attempts
        smtp = self.delivery.smtp
        while True:
            self.limiter.wait()
            attempts += 1
            try:
                reply = connection.send(self.delivery.from_address, claim.email, message, key=str(claim.subscriber_id))
            except PermanentError as exc:
                self.ledger.put(claim, FAILED, str(exc), attempts)
                log.warning("edition %s: %s refused: %s", self.edition.id, claim.email, exc)
                report.add(failed=1)
                return
            except TransientError as exc:
                if attempts >= smtp.max_attempts:
                    self.ledger.put(claim, FAILED, f"gave up after {attempts} attempts: {exc}", attempts)
                    log.warning("edition %s: %s failed after %d attempts: %s", self.edition.id, claim.email, attempts, exc)
                    report.add(failed=1)
                    return
                delay = min(smtp.retry_delay * 2 ** (attempts - 1), MAX_RETRY_DELAY)
                log.info("edition %s: %s deferred (%s); retry in %.2fs", self.edition.id, claim.email, exc, delay)
                report.add(retried=1)
                if self.stop.wait(delay):
                    self.ledger.put(claim, PENDING, None, attempts)
                    return
                continue
            self.ledger.put(claim, SENT, reply, attempts)
            report.add(sent=1)
            return


def send_pending(items: list[Item], storage: Storage, config: Config, *, stop: threading.Event | None = None,
                 progress: bool | None = None, transport: Transport | None = None,
                 force: bool = False) -> list[SendReport]:
    """Send every edition that still has unsent messages, oldest first, each after the pre-send checks."""
    reports = []
    pending = storage.editions_with_work()
    if not pending:
        return reports
    secret = signing_secret(config)
    for edition_id in pending:
        if stop is not None and stop.is_set():
            break
        edition = storage.get_edition(edition_id)
        chosen = edition_items(edition, items)
        if not chosen:
            raise PipelineError(f"edition {edition_id}: none of its items exist any more; cannot render it")
        digest = render_digest(chosen, config, edition_id)
        sender = Sender(config, storage, edition, digest, secret, transport or transport_for(config, edition_id),
                        stop=stop, progress=progress)
        findings = lint_outgoing(sender.sample(), chosen, config=config)
        if blocks_sending(findings, force):
            raise LintFailed(findings)
        for finding in findings:
            log.warning("edition %s: sending despite a failed check (--force): %s", edition_id, finding)
        report = sender.run()
        log.info("edition %s: sent %d, failed %d, retried %d, skipped %d", edition_id, report.sent,
                 report.failed, report.retried, report.skipped)
        reports.append(report)
    return reports


def send_test(items: list[Item], storage: Storage, config: Config, address: str,
              transport: Transport | None = None) -> str:
    """Send the next (or latest) edition to one address, marked [TEST]; the ledger is not touched."""
    delivery = config.require_delivery()
    chosen = next_edition_items(items, storage, config)
    edition_id = "test-" + edition_id_for([item.id for item in chosen])
    digest = render_digest(chosen, config)
    envelope = Envelope.for_digest(digest, edition_id, delivery, datetime.now(timezone.utc), subject_prefix="[TEST] ")
    base = recipient_for(address, edition_id, delivery, signing_secret(config), unsubscribe_base(config))
    recipient = Recipient(address, base.unsubscribe_url, make_msgid(domain=delivery.sending_domain))
    message = build_message(envelope, recipient, UNSUBSCRIBE_PLACEHOLDER)
    connection = (transport or transport_for(config, edition_id)).connect()
    try:
        return connection.send(delivery.from_address, address, message, key="test")
    except (PermanentError, TransientError) as exc:
        raise PipelineError(f"test send to {address} failed: {exc}") from None
    finally:
        connection.close()


"""The use cases: every command, the scheduler's jobs and the preview server call these, and only these.

One run builds all its context first (items, edition plan, one rendered digest per
edition), then writes, then sends, in the manner of Pelican's ``run()``:

    sources -> items -> edition plan -> digests (once each) -> outputs -> send

Each use case takes the run lock where it must and records itself in the runs table.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .bounces.policy import BounceResult
from .config import Config
from .delivery.editions import EditionPlan, items_of, items_to_look_at, newest_items, plan_edition
from .environment import database_url, lint_secret, signing_secret
from .errors import PipelineError, require_extra
from .items import Item
from .publish.digest import Digest, render_digest
from .publish.outputs import (
    input_fingerprint,
    inputs_digest,
    live_record,
    outputs_unchanged,
    plan_outputs,
    remember_outputs,
    stale_outputs,
)
from .publish.stream import VersionWriter
from .publish.versions import publish as publish_version
from .reports import (
    EditionRow,
    FailureReason,
    Feedback,
    JobRow,
    RunRow,
    StatusReport,
    SubscriberCounts,
    WorkerRow,
)
from .sources import read_content, scan_content
from .sources.merge import merge_items
from .sources.remote import read_remote, stored_remote
from .state.lock import run_lock
from .state.runs import close_interrupted, is_interrupted, start_run
from .state.storage import (
    DEFERRED,
    FAILED,
    PENDING,
    SENDING,
    SENT,
    SKIPPED,
    SUBSCRIBED,
    UNSUBSCRIBED,
    BounceEvent,
    Claim,
    Edition,
    RunRecord,
    SourceState,
    Storage,
    StoredDigest,
    Subscriber,
    Suppression,
)

if TYPE_CHECKING:  # imported where used: a run that finds nothing changed needs none of them
    from .bounces.parse import Addresses
    from .delivery.engine import SendReport
    from .delivery.transports import Transport
    from .mail.dkim import DkimSigner
    from .mail.lint import Finding

log = logging.getLogger(__name__)

MANUAL_JOB = "manual"
Action = Literal["run", "feeds", "send", "retry", "bounces"]


# -- the parts every use case shares ------------------------------------------------------------

def open_storage(config: Config) -> Storage:
    """The state database: SQLite in the state folder, or $PIPELINE_DATABASE_URL."""
    return Storage.for_state(config.path("state"), database_url())


def read_items(config: Config, storage: Storage | None, *, fetch: bool = True) -> tuple[list[Item], list[Item]]:
    """Local content and remote items.  Without ``fetch``, remote items are what the sources gave
    last time, and nothing is written: for looks that promise to change nothing."""
    local = read_content(config)
    if not config.sources or storage is None:
        return local, []
    remote = read_remote(config, storage)[0] if fetch else stored_remote(config, storage)
    return local, remote


@dataclass
class RunContext:
    """Everything one run knows, built before anything is written; digests are rendered once each."""

    config: Config
    storage: Storage
    items: list[Item]
    origins: dict[str, str] = field(default_factory=dict)  # what local items were made from, by id
    renders: int = 0
    _digests: dict[tuple[str | None, tuple[str, ...]], Digest] = field(default_factory=dict)

    def digest(self, items: list[Item], edition_id: str | None = None) -> Digest:
        key = (edition_id, tuple(sorted(item.id for item in items)))
        if key not in self._digests:
            self._digests[key] = render_digest(items, self.config, edition_id,
                                               edition_date=self.edition_date(edition_id))
            self.renders += 1
        return self._digests[key]

    def edition_date(self, edition_id: str | None) -> datetime | None:
        """An edition's date: when it was created, or now for the one this run is about to create;
        None (the newest item's date) for a digest that is no edition."""
        if edition_id is None:
            return None
        edition = self.storage.get_edition(edition_id)
        return edition.created_at if edition is not None else datetime.now(timezone.utc)

    def stored(self, edition_id: str, items: list[Item]) -> StoredDigest:
        digest = self.digest(items, edition_id)
        return StoredDigest(digest.subject, digest.html, digest.text)

    def web_digest(self, editions: list[Edition]) -> Digest | None:
        """What the site shows: the latest edition, else the newest items."""
        if editions:
            chosen = items_of(editions[0], self.items)
            return self.digest(chosen, editions[0].id) if chosen else None
        chosen = newest_items(self.items, self.config)
        return self.digest(chosen) if chosen else None


@dataclass
class RunOutcome:
    """What a run did; the CLI prints it and the runs table keeps its summary."""

    action: str
    items: list[Item] = field(default_factory=list)
    files: dict[Path, bytes] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)  # outputs the last run made and this one no longer does
    edition: EditionPlan | None = None
    reports: list[SendReport] = field(default_factory=list)
    unchanged: bool = False  # nothing changed since the last run: nothing was parsed, rendered or written
    renders: int = 0
    notes: dict[str, Any] = field(default_factory=dict)  # what a non-sending action did (e.g. bounces read)

    @property
    def status(self) -> str:
        """ok, partial (some messages failed or were deferred) or failed (none could be delivered)."""
        if not any(report.troubled for report in self.reports):
            return "ok"
        return "partial" if any(report.sent for report in self.reports) else "failed"

    def summary(self, duration: float) -> dict[str, Any]:
        return {
            "action": self.action, "unchanged": self.unchanged,
            "items": None if self.unchanged else len(self.items),
            "files_written": len(self.written), "files_removed": len(self.removed),
            "edition": self.edition.edition_id if self.edition else None,
            "edition_note": self.edition.reason if self.edition else None,
            "sent": sum(r.sent for r in self.reports), "failed": sum(r.failed for r in self.reports),
            "deferred": sum(r.deferred for r in self.reports), "retried": sum(r.retried for r in self.reports),
            "unreachable": next((r.unreachable for r in self.reports if r.unreachable), None),
            "stopped": any(r.stopped for r in self.reports), "duration_s": round(duration, 3),
            **self.notes,
        }


def action_for(config: Config, job: str | None) -> Action:
    """The action of a scheduled job (the one place a job name is resolved); manual runs are 'run'."""
    if job is None or job == MANUAL_JOB:
        return "run"
    if job not in config.schedule.jobs:
        raise PipelineError(f"{config.source_file}: schedule.jobs: no job named {job!r}")
    return config.schedule.jobs[job].action


# -- run: the whole pipeline, as one locked and recorded run --------------------------------------

def run(config: Config, *, job: str = MANUAL_JOB, action: Action | None = None, wait: bool = False,
        force: bool = False, stop: threading.Event | None = None, progress: bool | None = None) -> RunOutcome:
    """One locked, recorded run: ``run`` publishes and sends, ``feeds`` only publishes, ``send`` makes the
    new edition (if any) and sends what is due, ``retry`` only sends what is already queued and due.
    ``send`` and ``retry`` write just the archive pages their messages link to."""
    action = action or action_for(config, job)
    if action == "bounces":  # reads the bounce mailbox only; needs no run lock (every step is idempotent)
        return _bounce_run(config, job)
    with run_lock(config.path("state"), database_url=database_url(), wait=wait, stop=stop), \
            open_storage(config) as storage:
        close_interrupted(storage)  # under the lock: no other locked run is alive to be taken for dead
        run_id = start_run(storage, job)
        started = time.monotonic()
        try:
            outcome = _run(config, storage, action, force=force, stop=stop, progress=progress)
        except BaseException as exc:
            summary = {"action": action, "error": str(exc), "duration_s": round(time.monotonic() - started, 3)}
            storage.finish_run(run_id, "failed", summary)
            raise
        summary = outcome.summary(time.monotonic() - started)
        storage.finish_run(run_id, outcome.status, summary)
        log.info("job %s: %s", job, summary_line(summary))
        return outcome


def dry_run(config: Config, *, send: bool = True) -> RunOutcome:
    """Build everything in memory; write, send, fetch and record nothing."""
    with open_storage(config) as storage:
        local, remote = read_items(config, storage, fetch=False)
        ctx = RunContext(config, storage, merge_items(local, remote))
        outcome = RunOutcome("run" if send else "feeds", items=ctx.items)
        if config.delivery is not None and send:
            outcome.edition = plan_edition(ctx.items, storage, config, ctx.stored, dry_run=True)
        editions = storage.list_editions() if config.delivery is not None else []
        outcome.files = plan_outputs(ctx.items, config, editions, ctx.web_digest(editions), ctx.digest,
                                     ctx.origins)
        outcome.removed = stale_outputs(config, outcome.files)  # named, not removed
        outcome.renders = ctx.renders
        return outcome


def publish(config: Config, *, wait: bool = True) -> RunOutcome:
    """Write the outputs, send nothing, record no run: what the preview server does on each visit."""
    with run_lock(config.path("state"), database_url=database_url(), wait=wait), open_storage(config) as storage:
        return _run(config, storage, "feeds", force=False, stop=None, progress=False)


def _run(config: Config, storage: Storage, action: Action, *, force: bool, stop: threading.Event | None,
         progress: bool | None) -> RunOutcome:
    delivering = config.delivery is not None
    sending = delivering and action in ("run", "send", "retry")
    publishing = action in ("run", "feeds")
    has_work = sending and bool(_due_editions(storage, config))
    if action == "retry" and not has_work:  # a retry job's usual case: fetch, read and render nothing
        log.info("retry: no queued message is due")
        return RunOutcome(action, notes={"nothing_due": True})
    # A retry makes no edition: the items its archive pages need are those of the last fetch.
    remote = (read_remote(config, storage)[0] if action != "retry" else stored_remote(config, storage)) \
        if config.sources else []
    # Publishing reads the content folder once: the fingerprint and the parse see the same bytes.
    content = scan_content(config) if publishing else None
    inputs = inputs_digest(config, remote, content) if content is not None else b""
    if publishing and not has_work and outputs_unchanged(config, _fingerprint(inputs, storage)):
        log.info("nothing changed since the last run; outputs are up to date")
        plan = None
        if sending:  # as the last run planned it: the fingerprint covers items, editions and subscribers
            plan = EditionPlan(None, [], reason="no new items since the last edition" if storage.count_mailable()
                               else "no subscribers")
        return RunOutcome(action, edition=plan, unchanged=True)
    with _collector_paused():  # reading makes thousands of items that all live on: nothing to collect
        origins: dict[str, str] = {}
        local = read_content(config, remember=True, files=content, origins=origins)
        merged = merge_items(local, remote)
        from_files = {id(item) for item in local}  # an origin names a local item, never a remote one
        origins = {item.id: origins[item.id] for item in merged if id(item) in from_files}
        ctx = RunContext(config, storage, merged, origins)
    del content  # the stories' bytes are parsed: not kept through a send that can take hours
    with _kept_out_of_collections():
        return _build_and_send(ctx, action, sending, publishing, inputs, force=force, stop=stop, progress=progress)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cycle collection while a block only creates objects that stay alive: each collection
    would walk the growing heap for nothing (a fifth of reading 10,000 items from the parse cache)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def _kept_out_of_collections() -> Iterator[None]:
    """The items and everything else alive now stay alive for the whole run: move them out of the
    cycle collector's sight (``gc.freeze``) so the collections that the build's many short-lived
    objects trigger stop walking 10,000 items each time (a tenth of a one-file rebuild)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _build_and_send(ctx: RunContext, action: Action, sending: bool, publishing: bool, inputs: bytes, *,
                    force: bool, stop: threading.Event | None, progress: bool | None) -> RunOutcome:
    from .mail.lint import LintFailed, lint_config
    from .publish.feeds import save_archive_cache
    from .publish.site import archive_pages
    from .publish.stories import save_page_cache
    from .publish.websub import ping_hub

    config, storage = ctx.config, ctx.storage
    delivering = config.delivery is not None
    outcome = RunOutcome(action, items=ctx.items)
    blocking: list[Finding] = []
    if sending and storage.count_subscribers(SUBSCRIBED):
        # Refuse a missing or weak secret before anything is queued that could not then be sent.
        signing_secret(config.require_delivery().secret_env, config.path("state"))
        blocking = [finding for finding in lint_config(config) if finding.blocking] if action != "retry" else []
        if blocking and not publishing:  # the law's checks, which --force cannot lift: queue nothing
            raise LintFailed(blocking)
        if blocking:  # publish the feeds and pages all the same; queue and send nothing until it is fixed
            sending = False
    refused: list[Finding] = []
    if sending and action != "retry":
        refused = _refused_new_edition(ctx, force)
    if sending and action != "retry" and not refused:
        outcome.edition = plan_edition(ctx.items, storage, config, ctx.stored)
        if outcome.edition.reason and not outcome.edition.created:
            log.info("edition: %s", outcome.edition.reason)
    editions = storage.list_editions() if delivering else []
    writer = None
    if publishing:  # each output written into the next version as it is made, none held in memory
        writer = VersionWriter(config.path("output"), live_record(config))
        try:
            outcome.files = plan_outputs(ctx.items, config, editions, ctx.web_digest(editions), ctx.digest,
                                         ctx.origins, sink=writer)
        except BaseException:
            writer.discard()
            raise
    elif delivering:  # send only: the archive pages the messages' "view in browser" links point at
        outcome.files = archive_pages(editions, ctx.items, config, ctx.digest)
    # A blocked run records its files (so later runs can remove them) under a fingerprint that never
    # matches: the next run checks again, and says so again.  A send keeps the record of the set it adds to.
    fingerprint = (_fingerprint(inputs, storage) if not blocking else "") if publishing else None

    def record(version: str) -> None:  # what the new set holds, recorded before it is switched in
        remember_outputs(config, fingerprint, outcome.files if publishing else None, version)

    # The whole output folder switches at once: a reader, or a run killed now, sees the old set or the new one.
    if writer is not None:
        published = writer.finish(stale_outputs(config, outcome.files), record)
    else:
        published = publish_version(config.path("output"), outcome.files, [], record)
    outcome.written, outcome.removed = published.written, published.removed
    if publishing:
        ping_hub(config, outcome.written)
    log.info("wrote %d of %d files (%d unchanged), removed %d no longer made", len(outcome.written),
             len(outcome.files), len(outcome.files) - len(outcome.written), len(outcome.removed))
    if publishing:  # before sending, which can take hours or be stopped
        save_archive_cache(config)
        save_page_cache(config)
    if sending:
        outcome.reports = _send_due(ctx, force=force, stop=stop, progress=progress)
    if refused:  # the new edition was never made: fixing the content and running again makes it
        raise LintFailed(refused)
    if blocking:
        log.warning("published %d changed files; sending nothing until this is fixed", len(outcome.written))
        raise LintFailed(blocking)
    outcome.renders = ctx.renders
    return outcome


def _fingerprint(inputs: bytes, storage: Storage) -> str:
    return input_fingerprint(inputs, [e.id for e in storage.list_editions()], storage.count_subscribers() > 0)


def _due_editions(storage: Storage, config: Config) -> list[str]:
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


def _send_due(ctx: RunContext, *, force: bool, stop: threading.Event | None, progress: bool | None,
              presence: Presence | None = None) -> list[SendReport]:
    """Send every edition that has messages due, oldest first, each after the pre-send checks."""
    config, storage = ctx.config, ctx.storage
    due = _due_editions(storage, config)
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


def _refused_new_edition(ctx: RunContext, force: bool) -> list[Finding]:
    """The pre-send findings that would stop the edition this run is about to create, checked before
    it is created: a refused send leaves no edition behind (and nothing queued)."""
    from .mail.edition import EditionMail
    from .mail.lint import blocks_sending, lint_outgoing

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
    from .delivery.engine import Sender, SendSettings
    from .delivery.topics import lint_variants, variant_mails, variant_renderer
    from .delivery.transports import transport_for
    from .mail.edition import EditionMail
    from .mail.lint import LintFailed, blocks_sending, lint_outgoing

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
                    if _due_editions(storage, config):
                        lock = run_lock(config.path("state"), wait=True, stop=stop) if storage.dialect == "sqlite" \
                            else _no_lock()
                        with lock:
                            outcome.reports += _send_due(ctx, force=False, stop=stop, progress=progress,
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


def summary_line(summary: dict[str, Any]) -> str:
    if summary.get("unchanged"):
        return f"nothing changed since the last run, {summary.get('duration_s', 0):.2f}s"
    if summary.get("nothing_due"):
        return f"no queued message is due, {summary.get('duration_s', 0):.2f}s"
    written = summary.get("files_written", 0)
    return (f"{summary.get('items', 0)} items, {written} file{'' if written == 1 else 's'} written, "
            f"edition {summary.get('edition') or '-'}, sent {summary.get('sent', 0)}, "
            f"failed {summary.get('failed', 0)}, deferred {summary.get('deferred', 0)}, "
            f"{summary.get('duration_s', 0):.2f}s" + (" (stopped early)" if summary.get("stopped") else ""))


# -- looks that change nothing --------------------------------------------------------------------

@dataclass
class SendPreview:
    edition: EditionPlan
    due: dict[str, dict[str, int]]  # edition id -> ledger counts
    subscribers: int
    blocked: list[Finding] = field(default_factory=list)  # checks that stop any send, --force or not


def send_dry_run(config: Config) -> SendPreview:
    """What ``send`` would do; fetches, writes and records nothing."""
    from .mail.lint import lint_config

    config.require_delivery()
    with open_storage(config) as storage:
        local, remote = read_items(config, storage, fetch=False)
        ctx = RunContext(config, storage, merge_items(local, remote))
        plan = plan_edition(ctx.items, storage, config, ctx.stored, dry_run=True)
        due = {edition_id: storage.ledger_counts(edition_id) for edition_id in storage.editions_with_work()}
        return SendPreview(plan, due, storage.count_mailable(), [f for f in lint_config(config) if f.blocking])


def lint(config: Config) -> tuple[list[Item], list[Finding]]:
    """Pre-send checks of what the next send would carry (or the latest edition), and of the feeds."""
    from .delivery.editions import edition_id_for
    from .mail.edition import EditionMail
    from .mail.lint import lint_outgoing
    from .publish.feeds import ATOM_FILE, RSS_FILE, build_feeds

    delivery = config.require_delivery()
    state_permission_warnings(config)
    with open_storage(config) as storage:
        local, remote = read_items(config, storage, fetch=False)
        ctx = RunContext(config, storage, merge_items(local, remote))
        chosen = items_to_look_at(ctx.items, storage, config)
    edition_id = edition_id_for([item.id for item in chosen])
    secret = lint_secret(delivery.secret_env, config.path("state"))
    mail = EditionMail(ctx.digest(chosen, edition_id), edition_id, datetime.now(timezone.utc), config, secret)
    feeds = build_feeds(ctx.items, config).files()
    checked_feeds = {RSS_FILE: feeds[RSS_FILE], ATOM_FILE: feeds[ATOM_FILE]}
    return chosen, lint_outgoing(mail.sample(), chosen, checked_feeds, config)


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
    from .delivery.editions import edition_id_for
    from .delivery.transports import PermanentError, TransientError, transport_for
    from .mail.addresses import ascii_address, normalise_address
    from .mail.edition import EditionMail

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
    from .mail.lint import lint_outgoing

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


def validate(config: Config) -> int:
    """Check every content file; returns how many items there are."""
    return len(read_content(config))


# -- status and sources ---------------------------------------------------------------------------

def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _run_row(record: RunRecord) -> RunRow:
    return RunRow(record.id, record.job, _iso(record.started_at), _iso(record.finished_at),
                  # a run whose process is gone is interrupted, not running
                  "interrupted" if is_interrupted(record) else record.status, record.summary)


def status(config: Config, runs: int = 10) -> StatusReport:
    """Recent runs, next scheduled runs, every edition with unsettled messages, and the list's size."""
    from .state.jobs import stored_next_run_times

    loose = state_permission_warnings(config)  # looked at before opening the state tightens it
    with open_storage(config) as storage:
        stored = stored_next_run_times(config.path("state"), database_url())
        now = datetime.now(timezone.utc)
        lease = config.delivery.lease_seconds if config.delivery else 60.0
        latest = storage.latest_edition()
        unsettled = storage.editions_unsettled()
        others = [storage.get_edition(edition_id) for edition_id in unsettled]
        return StatusReport(
            runs=[_run_row(record) for record in storage.recent_runs(runs)],
            # The service's own record wins: it knows about pauses and catch-up runs.
            jobs=[JobRow(name, job.cron, job.timezone, job.action,
                         _iso(stored.get(name) or job.trigger().get_next_fire_time(None, now)),
                         "service" if stored.get(name) else "config")
                  for name, job in config.schedule.jobs.items()],
            last_edition=_edition_row(storage, latest) if latest else None,
            editions_with_unsent=[_edition_row(storage, edition) for edition in others
                                  if edition is not None and (latest is None or edition.id != latest.id)],
            workers=[WorkerRow(w.id, w.host, w.pid, round((now - w.heartbeat_at).total_seconds(), 1), w.held,
                               round((now - w.oldest_claim).total_seconds(), 1) if w.oldest_claim else None)
                     for w in storage.live_workers(since=now - timedelta(seconds=lease * 10))],
            subscribers=SubscriberCounts(storage.count_subscribers(SUBSCRIBED),
                                         storage.count_subscribers(UNSUBSCRIBED), storage.count_subscribers("pending")),
            suppressed=storage.suppression_counts(),
            feedback_30d=_feedback(storage, now),
            state_permissions=loose,
            signup_mail=storage.notice_counts(),
        )


def state_permission_warnings(config: Config) -> list[str]:
    """Entries of the state folder others could read (an older version made them 0644), each logged
    as a warning; opening the state tightens the folder and the databases."""
    from .state.files import loose_permissions

    loose = loose_permissions(config.path("state"))
    for line in loose:
        log.warning("state folder: %s", line)
    return loose


def _feedback(storage: Storage, now: datetime) -> Feedback:
    """Bounces and complaints of the last 30 days against messages sent: the rates mailbox providers judge."""
    from datetime import timedelta

    since = now - timedelta(days=30)
    counts = storage.bounce_counts_since(since)
    sent = storage.sent_since(since)
    complaints = counts.get("complaint", 0)
    return Feedback(sent, counts.get("hard", 0), counts.get("soft", 0), complaints, counts.get("unsubscribe", 0),
                    round(complaints / sent, 5) if sent else None)


def _edition_row(storage: Storage, edition: Edition) -> EditionRow:
    counts = storage.ledger_counts(edition.id)
    return EditionRow(edition.id, _iso(edition.created_at), edition.subject, len(edition.item_ids),
                      counts[PENDING], counts[SENDING], counts[SENT], counts[FAILED], counts[DEFERRED], counts[SKIPPED],
                      _iso(storage.next_retry(edition.id)),
                      [FailureReason(reply, count) for reply, count in storage.failure_reasons(edition.id)])


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


@dataclass
class SourceRow:
    name: str
    url: str
    fetched_at: datetime | None
    status: str
    item_count: int


def sources(config: Config, *, fetch: bool = False) -> tuple[int, list[SourceRow]]:
    """How many local items there are, and each remote source's last fetch; ``fetch`` fetches first."""
    with open_storage(config) as storage:
        if fetch and config.sources:
            read_remote(config, storage)
        states = {state.name: state for state in storage.all_source_states()}
    rows = []
    for source in config.sources:
        state = states.get(source.name) or SourceState(source.name)
        rows.append(SourceRow(source.name, state.url or source.url, state.fetched_at, state.status or "-",
                              state.item_count))
    return len(read_content(config)), rows


@contextmanager
def storage_for(config: Config) -> Iterator[Storage]:
    """The state database for the subscriber commands and the web app."""
    with open_storage(config) as storage:
        yield storage


# -- bounces, complaints and the suppression list ---------------------------------------------------

def return_paths(config: Config, edition_id: str, secret: bytes) -> Callable[[Claim], str] | None:
    """The VERP envelope sender of each message of an edition, when a bounce domain is configured."""
    from .mail.verp import make_return_path

    bounces = config.bounces
    if not bounces.domain:
        return None
    domain, local_part = bounces.domain, bounces.local_part
    return lambda claim: make_return_path(secret, edition_id, claim.subscriber_id, local_part, domain)


def record_send_refusals(config: Config, storage: Storage, edition_id: str) -> int:
    """The 5xx refusals the relay gave while sending count as bounces too (hard for a missing mailbox,
    soft for a full one, not at all for refusals about us); each failed row is looked at once."""
    from .bounces.policy import classify_smtp_reply, record_bounce

    counted = 0
    for subscriber_id, email, reply in storage.unrecorded_send_failures(edition_id):
        kind = classify_smtp_reply(reply)
        record_bounce(storage, config.bounces.policy, email, kind, reply or "refused at send time", "smtp",
                      edition_id=edition_id, subscriber_id=subscriber_id)
        counted += kind != "not counted"
    return counted


def dkim_signer(config: Config) -> DkimSigner | None:
    """The DKIM signer of ``delivery.dkim`` (key read once per run), or None when signing is off."""
    from .mail.dkim import DkimSigner

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


def bounce_addresses(config: Config, secret: bytes) -> Addresses:
    from email.utils import parseaddr

    from .bounces.parse import Addresses
    from .environment import previous_secrets

    delivery = config.require_delivery()
    return Addresses(secret, config.bounces.local_part, config.bounces.domain,
                     parseaddr(delivery.unsubscribe_mailto)[1].lower(), tuple(previous_secrets(delivery.secret_env)),
                     tuple(config.bounces.trusted_authserv_ids))


def handle_received(config: Config, storage: Storage, addresses: Addresses, raw: bytes, source: str,
                    envelope_recipients: list[str] | None = None) -> list[BounceResult]:
    """One received message (a bounce, a complaint, a mailto unsubscribe) through the policy."""
    from .bounces.parse import UNVERIFIED_UNSUBSCRIBE, read_message
    from .bounces.policy import record_bounce
    from .mail.addresses import AddressError, normalise_address

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
    from .mail.message import unsubscribe_url
    from .mail.notice import build_notice
    from .signup import send_notice
    from .urls import unsubscribe_base

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
    from .bounces.mailbox import fetch_mailbox, mailbox_source
    from .environment import secret_from_env

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


def _bounce_run(config: Config, job: str) -> RunOutcome:
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


def make_bounce_receiver(config: Config, storage: Storage, host: str | None = None, port: int | None = None):
    """The SMTP receiver for the bounce domain (started by the caller); each message through the policy."""
    require_extra("bounces", "flufl.bounce", "aiosmtpd")
    from .service.bounce_receiver import make_receiver

    delivery = config.require_delivery()
    addresses = bounce_addresses(config, signing_secret(delivery.secret_env, config.path("state")))
    receiver = config.bounces.receiver

    def deliver(raw: bytes, recipients: list[str]) -> None:
        handle_received(config, storage, addresses, raw, "receiver", recipients)

    tls = None
    if receiver.tls_cert and receiver.tls_key:
        from .service.bounce_receiver import tls_context

        try:
            tls = tls_context(config.resolve(receiver.tls_cert), config.resolve(receiver.tls_key))
        except (OSError, ssl.SSLError) as exc:
            raise PipelineError(f"bounces.receiver.tls_cert/tls_key: {exc}") from None
    return make_receiver(addresses, deliver, host or receiver.host, receiver.port if port is None else port,
                         receiver.max_size, tls)


@dataclass
class SubscriberDetails:
    subscriber: Subscriber
    suppression: Suppression | None
    events: list[BounceEvent]
    suppressions: list[Suppression]


def subscriber_details(config: Config, address: str) -> SubscriberDetails:
    from .mail.addresses import normalise_address

    email = normalise_address(address)
    with open_storage(config) as storage:
        subscriber = storage.get_subscriber(email)
        if subscriber is None:
            raise PipelineError(f"{email}: not a subscriber")
        events, held = storage.bounce_history(subscriber.id)
        return SubscriberDetails(subscriber, storage.active_suppression(subscriber.id), events, held)


def lift_suppression(config: Config, address: str, reason: str) -> bool:
    """An operator puts a suppressed address back on the list, with a reason that is kept."""
    from .mail.addresses import normalise_address

    if not reason.strip():
        raise PipelineError("say why the suppression is lifted (--reason)")
    email = normalise_address(address)
    with open_storage(config) as storage:
        subscriber = storage.get_subscriber(email)
        if subscriber is None:
            raise PipelineError(f"{email}: not a subscriber")
        lifted = storage.lift_suppression(subscriber.id, reason.strip())
    if lifted:
        log.info("suppression of subscriber %d lifted by an operator", subscriber.id)
    return lifted

"""The run: build all context first (items, edition plan, one rendered digest per edition), then
write, then send, in the manner of Pelican's ``run()``:

    sources -> items -> edition plan -> digests (once each) -> outputs -> send

Each run takes the run lock where it must and records itself in the runs table.

Imports inside functions: the sending, linting, DKIM, bounce and feed modules load only in
the use case that needs them, so a cron run that finds nothing changed loads none of them.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..clock import utcnow
from ..config import Config
from ..delivery.editions import EditionPlan, plan_edition
from ..environment import database_url, signing_secret
from ..publish.outputs import (
    input_fingerprint,
    inputs_digest,
    live_record,
    outputs_unchanged,
    plan_outputs,
    release_due,
    remember_outputs,
    stale_outputs,
)
from ..publish.stream import VersionWriter
from ..publish.versions import publish as publish_version
from ..sources import read_content, scan_content
from ..sources.merge import merge_items
from ..sources.remote import read_remote, stored_remote
from ..state.lock import run_lock
from ..state.runs import close_interrupted, start_run
from ..state.storage import (
    SUBSCRIBED,
    Storage,
)
from .bounces import bounce_run
from .common import (
    MANUAL_JOB,
    Action,
    RunContext,
    RunOutcome,
    action_for,
    open_storage,
    read_items,
    summary_line,
    withhold_scheduled,
)
from .send import due_editions, refused_new_edition, send_due

if TYPE_CHECKING:  # imported where used: a run that finds nothing changed needs none of them
    from ..mail.lint import Finding


log = logging.getLogger(__name__)

def run(config: Config, *, job: str = MANUAL_JOB, action: Action | None = None, wait: bool = False,
        force: bool = False, stop: threading.Event | None = None, progress: bool | None = None) -> RunOutcome:
    """One locked, recorded run: ``run`` publishes and sends, ``feeds`` only publishes, ``send`` makes the
    new edition (if any) and sends what is due, ``retry`` only sends what is already queued and due.
    ``send`` and ``retry`` write just the archive pages their messages link to."""
    action = action or action_for(config, job)
    if action == "bounces":  # reads the bounce mailbox only; needs no run lock (every step is idempotent)
        return bounce_run(config, job)
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


_waiting: dict[str, threading.Thread] = {}  # state folder -> the publish waiting for the run lock
_again: set[str] = set()  # state folders whose content changed after their waiting publish began to read it
_waiting_lock = threading.Lock()


def publish_after_current_run(config: Config) -> threading.Thread:
    """Publish the feeds and the site as soon as the run holding the lock ends (a send can take hours):
    what the desk does when a story is saved during a run, which read the content before it.  One
    waiting publish per state folder is enough, since it reads every story when it starts; asked again
    while it runs, it runs once more when done.  The thread is returned so a caller (a test) can wait."""
    key = str(config.path("state"))

    def publish_when_free() -> None:
        while True:
            try:
                run(config, action="feeds", wait=True)
            except Exception:  # noqa: BLE001 - a thread has no caller to raise to; the next run publishes
                log.exception("publishing after the run in progress failed")
            with _waiting_lock:
                if key not in _again:
                    _waiting.pop(key, None)
                    return
                _again.discard(key)

    with _waiting_lock:
        thread = _waiting.get(key)
        if thread is None:
            thread = _waiting[key] = threading.Thread(target=publish_when_free, name="publish-after-run",
                                                      daemon=True)
            thread.start()
        else:
            _again.add(key)  # it may have read the content already: once more when it is done
        return thread


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
    # A send that would mail a story which came out since the last publish publishes first, so its page is there.
    publishing = action in ("run", "feeds") or (action == "send" and release_due(config, utcnow()))
    has_work = sending and bool(due_editions(storage, config))
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
        local, release_at = withhold_scheduled(read_content(config, remember=True, files=content, origins=origins),
                                               utcnow())
        merged = merge_items(local, remote)
        from_files = {id(item) for item in local}  # an origin names a local item, never a remote one
        origins = {item.id: origins[item.id] for item in merged if id(item) in from_files}
        ctx = RunContext(config, storage, merged, origins, release_at=release_at)
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
    from ..mail.lint import LintFailed, lint_config
    from ..publish.feed_files import save_archive_cache
    from ..publish.site import archive_pages
    from ..publish.stories import save_page_cache
    from ..publish.websub import ping_hub

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
        refused = refused_new_edition(ctx, force)
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
        remember_outputs(config, fingerprint, outcome.files if publishing else None, version,
                         release_at=ctx.release_at)

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
        outcome.reports = send_due(ctx, force=force, stop=stop, progress=progress)
    if refused:  # the new edition was never made: fixing the content and running again makes it
        raise LintFailed(refused)
    if blocking:
        log.warning("published %d changed files; sending nothing until this is fixed", len(outcome.written))
        raise LintFailed(blocking)
    outcome.renders = ctx.renders
    return outcome


def _fingerprint(inputs: bytes, storage: Storage) -> str:
    return input_fingerprint(inputs, [e.id for e in storage.list_editions()], storage.count_subscribers() > 0)


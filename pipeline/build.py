"""One run: read the sources, prepare the edition, write the feeds and digest, send.

Everything is built in memory first and written only when all of it succeeded,
so bad input never replaces a good previous output.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config
from .delivery import EditionPlan, SendReport, latest_edition_items, prepare_edition, send_pending
from .digest import HTML_FILE, TEXT_FILE, Digest, digest_items, public_copy, render_digest
from .feeds import build_feeds
from .items import Item
from .output import write_all
from .sources import read_content
from .sources.remote import merge_items, read_remote
from .storage import Storage

log = logging.getLogger(__name__)

DATABASE_URL_ENV = "PIPELINE_DATABASE_URL"


@dataclass
class RunResult:
    items: list[Item]
    digest: Digest | None
    files: dict[Path, bytes]
    written: list[Path] = field(default_factory=list)
    edition: EditionPlan | None = None
    reports: list[SendReport] = field(default_factory=list)


def open_storage(config: Config) -> Storage:
    """The state database: SQLite in the state folder, or $PIPELINE_DATABASE_URL."""
    return Storage.for_state(config.path("state"), os.environ.get(DATABASE_URL_ENV))


def collect_items(config: Config, storage: Storage | None = None) -> list[Item]:
    """Local content files, then the remote sources (which need the state database)."""
    local = read_content(config)
    if not config.sources or storage is None:
        return local
    remote, _reports = read_remote(config, storage)
    return merge_items(local, remote)


def plan_outputs(items: list[Item], config: Config, shown: list[Item] | None = None) -> tuple[dict[Path, bytes], Digest | None]:
    """The bytes of every output file, keyed by path; nothing is written here.

    ``shown`` are the digest's items (the latest edition's); by default the newest ones.
    """
    out = config.path("output")
    files = {out / name: data for name, data in build_feeds(items, config).files().items()}
    digest = None
    chosen = shown if shown else digest_items(items, config)
    if chosen:
        digest = render_digest(chosen, config)
        html, text = public_copy(digest, config)
        files[out / HTML_FILE] = html
        files[out / TEXT_FILE] = text
    return files, digest


def run_pipeline(config: Config, *, dry_run: bool = False, send: bool = True, storage: Storage | None = None,
                 stop: threading.Event | None = None, progress: bool | None = None) -> RunResult:
    """Ingest, publish, and (when delivery is configured) create and send the edition."""
    own_storage = storage is None
    storage = storage or open_storage(config)
    try:
        items = collect_items(config, storage)
        plan = shown = None
        delivering = config.delivery is not None
        if delivering:
            plan = prepare_edition(items, storage, config, dry_run=dry_run) if send else None
            if plan and plan.reason and not plan.created:
                log.info("edition: %s", plan.reason)
            shown = latest_edition_items(items, storage)
        files, digest = plan_outputs(items, config, shown)
        result = RunResult(items=items, digest=digest, files=files, edition=plan)
        if dry_run:
            return result
        result.written = write_all(files)
        log.info("wrote %d of %d files (%d unchanged)", len(result.written), len(files),
                 len(files) - len(result.written))
        if send and delivering:
            result.reports = send_pending(items, storage, config, stop=stop, progress=progress)
        return result
    finally:
        if own_storage:
            storage.close()

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
from .archive import archive_pages, site_pages
from .delivery import EditionPlan, SendReport, edition_items, prepare_edition, send_pending
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


def plan_outputs(items: list[Item], config: Config, storage: Storage | None = None) -> tuple[dict[Path, bytes], Digest | None]:
    """The bytes of every output file, keyed by path; nothing is written here.

    The digest shows the latest edition when there is one (else the newest items);
    with state, the archive pages of the editions are planned too.
    """
    out = config.path("output")
    files = {out / name: data for name, data in build_feeds(items, config).files().items()}
    files.update(site_pages(config))
    editions = storage.list_editions() if storage is not None and config.delivery is not None else []
    digest = None
    if editions:
        chosen, edition_id = edition_items(editions[0], items), editions[0].id
    else:
        chosen, edition_id = digest_items(items, config), None
    if chosen:
        digest = render_digest(chosen, config, edition_id)
        html, text = public_copy(digest, config)
        files[out / HTML_FILE] = html
        files[out / TEXT_FILE] = text
    if config.delivery is not None:
        files.update(archive_pages(editions, items, config))
    return files, digest


def run_pipeline(config: Config, *, dry_run: bool = False, send: bool = True, storage: Storage | None = None,
                 stop: threading.Event | None = None, progress: bool | None = None, force: bool = False) -> RunResult:
    """Ingest, publish, and (when delivery is configured) create and send the edition."""
    own_storage = storage is None
    storage = storage or open_storage(config)
    try:
        items = collect_items(config, storage)
        plan = None
        delivering = config.delivery is not None
        if delivering:
            plan = prepare_edition(items, storage, config, dry_run=dry_run) if send else None
            if plan and plan.reason and not plan.created:
                log.info("edition: %s", plan.reason)
        files, digest = plan_outputs(items, config, storage)
        result = RunResult(items=items, digest=digest, files=files, edition=plan)
        if dry_run:
            return result
        result.written = write_all(files)
        log.info("wrote %d of %d files (%d unchanged)", len(result.written), len(files),
                 len(files) - len(result.written))
        if send and delivering:
            result.reports = send_pending(items, storage, config, stop=stop, progress=progress, force=force)
        return result
    finally:
        if own_storage:
            storage.close()

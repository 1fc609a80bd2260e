"""One run: read the sources, prepare the edition, write the feeds and digest, send.

Everything is built in memory first and written only when all of it succeeded,
so bad input never replaces a good previous output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config
from .publish.site import archive_pages, site_pages
from .delivery.engine import EditionPlan, SendReport, edition_items, prepare_edition, send_pending
from .publish.digest import HTML_FILE, TEXT_FILE, Digest, digest_items, public_copy, render_digest
from .publish.feeds import build_feeds
from .publish.images import image_files
from .items import Item
from . import __version__
from .publish.output import write_all, write_atomic
from .sources import read_content
from .sources.remote import merge_items, read_remote
from .state.storage import Storage

log = logging.getLogger(__name__)

DATABASE_URL_ENV = "PIPELINE_DATABASE_URL"
FINGERPRINT_FILE = "outputs.json"


@dataclass
class RunResult:
    items: list[Item]
    digest: Digest | None
    files: dict[Path, bytes]
    written: list[Path] = field(default_factory=list)
    edition: EditionPlan | None = None
    reports: list[SendReport] = field(default_factory=list)
    skipped: bool = False  # nothing changed since the last run: nothing was parsed, rendered or written


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
    files.update(image_files(items, config))
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


def input_fingerprint(config: Config, storage: Storage, remote: list[Item]) -> str:
    """Everything the outputs depend on, hashed: config, templates, content files, remote items,
    editions, whether anyone is subscribed, and the program's version."""
    digest = hashlib.sha256(__version__.encode())
    digest.update(config.source_file.read_bytes())
    for folder, pattern in ((config.path("templates"), "**/*"), (config.path("content"), "*.md")):
        for path in sorted(folder.glob(pattern)):
            if path.is_file():
                digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for item in remote:
        digest.update(item.model_dump_json().encode())
    digest.update(json.dumps([e.id for e in storage.list_editions()]).encode())
    digest.update(b"subscribers" if storage.count_subscribers() else b"none")
    return digest.hexdigest()


def _record_path(config: Config) -> Path:
    return config.path("state") / FINGERPRINT_FILE


def _unchanged(config: Config, fingerprint: str) -> bool:
    """True when the last run saw the same inputs and its outputs are still there, untouched."""
    try:
        record = json.loads(_record_path(config).read_text())
    except (FileNotFoundError, ValueError):
        return False
    if record.get("fingerprint") != fingerprint:
        return False
    for name, expected in record.get("outputs", {}).items():
        path = Path(name)
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            return False
    return True


def _remember(config: Config, fingerprint: str, files: dict[Path, bytes]) -> None:
    record = {"fingerprint": fingerprint,
              "outputs": {str(path): hashlib.sha256(data).hexdigest() for path, data in files.items()}}
    write_atomic(_record_path(config), json.dumps(record, indent=1, sort_keys=True).encode())


def run_pipeline(config: Config, *, dry_run: bool = False, send: bool = True, storage: Storage | None = None,
                 stop: threading.Event | None = None, progress: bool | None = None, force: bool = False) -> RunResult:
    """Ingest, publish, and (when delivery is configured) create and send the edition.

    When nothing the outputs depend on changed since the last run and no edition
    has unsent messages, the run stops early: no parsing, rendering or writing.
    """
    with nullcontext(storage) if storage is not None else open_storage(config) as storage:
        delivering = config.delivery is not None
        remote = read_remote(config, storage)[0] if config.sources else []
        has_work = delivering and send and bool(storage.editions_with_work())
        if not dry_run and not has_work and _unchanged(config, input_fingerprint(config, storage, remote)):
            log.info("nothing changed since the last run; outputs are up to date")
            plan = EditionPlan(None, [], reason="no new items since the last edition") if delivering and send else None
            return RunResult(items=[], digest=None, files={}, edition=plan, skipped=True)
        items = merge_items(read_content(config), remote)
        plan = None
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
        _remember(config, input_fingerprint(config, storage, remote), files)
        return result

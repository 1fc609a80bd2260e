"""One build: read the sources, then write the feeds and the digest.

Everything is built in memory first and written only when all of it succeeded,
so bad input never replaces a good previous output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config
from .digest import HTML_FILE, TEXT_FILE, Digest, digest_items, public_copy, render_digest
from .feeds import build_feeds
from .items import Item
from .output import write_all
from .sources import read_content

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    items: list[Item]
    digest: Digest | None
    files: dict[Path, bytes]
    written: list[Path] = field(default_factory=list)


def collect_items(config: Config) -> list[Item]:
    return read_content(config)


def plan_outputs(items: list[Item], config: Config) -> tuple[dict[Path, bytes], Digest | None]:
    """The bytes of every output file, keyed by path; nothing is written here."""
    out = config.path("output")
    files = {out / name: data for name, data in build_feeds(items, config).files().items()}
    digest = None
    chosen = digest_items(items, config)
    if chosen:
        digest = render_digest(chosen, config)
        html, text = public_copy(digest, config)
        files[out / HTML_FILE] = html
        files[out / TEXT_FILE] = text
    return files, digest


def build(config: Config, *, dry_run: bool = False) -> BuildResult:
    items = collect_items(config)
    files, digest = plan_outputs(items, config)
    result = BuildResult(items=items, digest=digest, files=files)
    if dry_run:
        log.info("dry run: would write %d files", len(files))
    else:
        result.written = write_all(files)
        log.info("wrote %d of %d files (%d unchanged)", len(result.written), len(files),
                 len(files) - len(result.written))
    return result

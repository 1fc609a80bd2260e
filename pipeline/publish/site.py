"""The web side of the digest: one archive page per edition, the archive index, the site's home page.

Archive pages are the edition's digest without any personal token; the email's
"view in browser" link points at them.  A page is rendered when it is missing
or belongs to the latest edition, so older pages are not re-rendered every run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

from ..config import Config
from ..items import Item, newest_first
from ..state.storage import Edition
from .digest import ARCHIVE_FOLDER, Digest, archive_url, edition_day, environment_for, public_copy, template_file
from .feed_files import TagFeed, tag_feeds
from .signup_form import form_view

RenderDigest = Callable[[list[Item], "str | None"], Digest]

log = logging.getLogger(__name__)

INDEX_FILE = "index.html"
STYLESHEET = "feed.xsl"


@dataclass(frozen=True)
class ArchiveEntry:
    id: str
    subject: str
    date: datetime
    count: int
    url: str


KeepPage = Callable[[Path, list[Item], Edition, Callable[[], bytes]], None]


def archive_pages(editions: list[Edition], items: list[Item], config: Config,
                  render: RenderDigest, keep: KeepPage | None = None) -> dict[Path, bytes]:
    """The archive page of each edition (only the newest is re-rendered once it exists) and the index.
    With ``keep`` (a run's ``plan_outputs``) the newest edition's page goes there with its stories and
    a way to render it, instead of being rendered here: it is rendered only if its stories changed."""
    out = config.path("output") / ARCHIVE_FOLDER
    by_id = {item.id: item for item in items}
    files: dict[Path, bytes] = {}
    for position, edition in enumerate(editions):
        path = out / f"{edition.id}.html"
        if position > 0 and path.exists():
            continue
        chosen = newest_first([by_id[i] for i in edition.item_ids if i in by_id])
        if not chosen:
            log.warning("archive: edition %s has none of its items any more; page not rendered", edition.id)
            continue
        if position == 0 and keep is not None:
            keep(path, chosen, edition, partial(_archive_page, chosen, edition.id, config, render))
            continue
        files[path] = _archive_page(chosen, edition.id, config, render)
    # The date of an edition is when it was created, as readers in digest.timezone count days.
    entries = [ArchiveEntry(e.id, e.subject, edition_day(e.created_at, config), len(e.item_ids),
                            archive_url(config, e.id))
               for e in editions]
    env = environment_for(config)
    index = env.get_template("archive.html").render(site=config.site, organisation=config.organisation,
                                                    editions=entries, signup_form=_signup_form(config))
    files[out / INDEX_FILE] = index.encode("utf-8")
    return files


def _archive_page(chosen: list[Item], edition_id: str, config: Config, render: RenderDigest) -> bytes:
    return public_copy(render(chosen, edition_id), config)[0]


def site_pages(config: Config, items: list[Item] | None = None,
               chosen_topics: list[TagFeed] | None = None) -> dict[Path, bytes]:
    """The home page that the feeds link to (with the topic feeds of these items), and the
    stylesheet that still makes the feeds readable in browsers that run XSLT."""
    out = config.path("output")
    env = environment_for(config)
    listed = tag_feeds(items or [], config) if chosen_topics is None else chosen_topics
    home = env.get_template("index.html").render(site=config.site, organisation=config.organisation,
                                                 topics=listed, signup_form=_signup_form(config))
    return {
        out / INDEX_FILE: home.encode("utf-8"),
        out / STYLESHEET: template_file(config, STYLESHEET).read_bytes(),
    }


def _signup_form(config: Config):
    """The signup form the site's pages show (static: no form stamp; the app asks once more)."""
    return form_view(config)

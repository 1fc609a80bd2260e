"""RSS 2.0 and Atom 1.0 (made with feedgen) and JSON Feed 1.1 (written from the same items).

The builders are pure: items and config in, bytes out.  Dates come from the items,
never from the clock, so unchanged input gives byte-identical feeds.  One entry
point, ``feed_files``, gives every feed document of a run: the main feeds, one set
per topic (tag), the RFC 5005 archive documents and a readable HTML page per feed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import orjson
from feedgen.ext.base import BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from ..config import Config, Job
from ..items import Item, newest_first
from .feed_entries import (
    ATOM_NS,
    ATOM_TAIL,
    DC_NS,
    MEDIA_NS,
    RSS_TAIL,
    EntryExtras,
    FeedEntries,
    attachment_of,
    author_name,
    rss_text_refs,
    spliced,
)

RSS_FILE = "rss.xml"
ATOM_FILE = "atom.xml"
JSON_FILE = "feed.json"
FEED_PAGE = "feed.html"
FEED_TEMPLATE = "feed.html"
TAGS_FOLDER = "tags/"
ARCHIVE_FOLDER = "feed-archive/"
log = logging.getLogger(__name__)
STYLESHEET_FILE = "feed.xsl"
STYLESHEET_PI = f'<?xml-stylesheet type="text/xsl" href="{STYLESHEET_FILE}"?>'.encode("ascii")

HISTORY_NS = "http://purl.org/syndication/history/1.0"
SY_NS = "http://purl.org/rss/1.0/modules/syndication/"
# What the JSON Feed `_source` extension means; JSON Feed asks every extension to point at its description.
SOURCE_EXTENSION_ABOUT = "https://pypi.org/project/newsletter-pipeline/#json-feed-source-extension"

# RSS 2.0 caps the channel image; larger values make the feed invalid, so they are left out.
_RSS_IMAGE_MAX = (144, 400)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class FeedSpec:
    """One feed's identity: where its documents live, what it is called, how it links to others."""

    folder: str = ""  # relative to the output folder, "" or ending with "/"
    title: str | None = None  # default: site.title
    description: str | None = None  # default: site.description
    page: str | None = None  # the feed's web page (relative path), its alternate link; default: the site
    hub: str | None = None  # WebSub hub advertised with rel="hub"
    archive: bool = False  # an RFC 5005 archive document (fh:archive)
    links: tuple[tuple[str, str], ...] = ()  # extra (rel, absolute href): prev-archive, next-archive, current
    ttl: int | None = None  # minutes
    rss_file: str = RSS_FILE
    atom_file: str = ATOM_FILE
    json_file: str | None = JSON_FILE
    updated: datetime | None = None  # the feed's date when it has no items (an empty archive page)
    full_text: bool = True  # each entry with the story's text; False: without it (``feed_entries.brief``)

    def path(self, name: str) -> str:
        return self.folder + name

    @property
    def stylesheet_href(self) -> str:
        """Relative on purpose (browsers load XSLT only from the feed's origin), so it climbs out of folders."""
        return "../" * self.folder.count("/") + STYLESHEET_FILE


MAIN = FeedSpec()


class _FeedExtras(BaseExtension):
    """Channel-level elements feedgen cannot write: extra atom:links (hub, archives), fh:archive, sy:*,
    and the xml-stylesheet instruction before the root element."""

    def __init__(self) -> None:
        self.links: list[tuple[str, str, str | None]] = []  # rel, href, type
        self.stylesheet: str | None = None  # href of the XSLT that lets a browser show the feed as a page
        self.archive = False
        self.update: tuple[str, int] | None = None  # sy:updatePeriod, sy:updateFrequency

    def extend_ns(self):
        namespaces = {"dc": DC_NS, "media": MEDIA_NS}
        if self.archive:
            namespaces["fh"] = HISTORY_NS
        if self.update:
            namespaces["sy"] = SY_NS
        return namespaces

    def _insert(self, parent, elements, before: str) -> None:
        position = next((i for i, child in enumerate(parent) if child.tag == before), len(parent))
        for offset, element in enumerate(elements):
            parent.insert(position + offset, element)

    def _elements(self, parent, link_tag: str) -> list:
        elements = []
        for rel, href, kind in self.links:
            attributes = {"rel": rel, "href": href, **({"type": kind} if kind else {})}
            elements.append(parent.makeelement(link_tag, attributes))
        if self.archive:
            elements.append(parent.makeelement(f"{{{HISTORY_NS}}}archive", {}))
        return elements

    def _add_stylesheet(self, root) -> None:
        """Relative on purpose: browsers load XSLT only from the feed's own origin.  Added to the
        tree feedgen serialises, so the document is not copied again to splice it in."""
        if self.stylesheet:
            root.addprevious(etree.ProcessingInstruction("xml-stylesheet",
                                                         f'type="text/xsl" href="{self.stylesheet}"'))

    def extend_rss(self, rss_feed):
        self._add_stylesheet(rss_feed)
        channel = rss_feed[0]
        elements = self._elements(channel, f"{{{ATOM_NS}}}link")
        if self.update:
            period = channel.makeelement(f"{{{SY_NS}}}updatePeriod", {})
            period.text = self.update[0]
            frequency = channel.makeelement(f"{{{SY_NS}}}updateFrequency", {})
            frequency.text = str(self.update[1])
            elements += [period, frequency]
        self._insert(channel, elements, "item")
        return rss_feed

    def extend_atom(self, atom_feed):
        self._add_stylesheet(atom_feed)
        self._insert(atom_feed, self._elements(atom_feed, "link"), "entry")
        return atom_feed


@dataclass(frozen=True)
class FeedSet:
    rss: bytes
    atom: bytes
    json: bytes

    def files(self) -> dict[str, bytes]:
        return {RSS_FILE: self.rss, ATOM_FILE: self.atom, JSON_FILE: self.json}


def feed_items(items: list[Item], config: Config) -> list[Item]:
    return newest_first(items)[: config.feeds.limit]


def last_updated(items: list[Item]) -> datetime:
    """The feed's own date is its newest item's, so a rerun does not change it."""
    return max((item.last_modified for item in items), default=_EPOCH)


def _point(fg: FeedGenerator, config: Config, spec: FeedSpec, self_file: str, atom: bool = False) -> None:
    """The parts of a feed's head that differ between its RSS and Atom documents: the self link (typed
    by the document's format, whatever its file is called) and the extra links (archives point at
    documents of their own format)."""
    site = config.site
    # feedgen uses the *last* link added as the RSS channel <link>: self first, site last.
    fg.link(href=site.url(spec.path(self_file)), rel="self", replace=True,
            type="application/atom+xml" if atom else "application/rss+xml")
    fg.link(href=site.url(spec.page) if spec.page else site.base_url, rel="alternate", type="text/html")
    extras: _FeedExtras = fg.extras
    extras.stylesheet = spec.stylesheet_href
    extras.links = [("hub", spec.hub, None)] if spec.hub else []
    extras.links.extend((rel, href, None) for rel, href in spec.links)


def _generator(items: list[Item], config: Config, spec: FeedSpec, self_file: str) -> FeedGenerator:
    """A feed's head, without entries (``FeedEntries`` makes those, once per item): serialise it as RSS,
    ``_point`` it at the Atom document, serialise it again.  Dated by ``items``, its newest."""
    site, org = config.site, config.organisation
    fg = FeedGenerator()
    fg.register_extension("extras", _FeedExtras, EntryExtras, atom=True, rss=True)
    fg.id(site.base_url)
    fg.title(spec.title or site.title)
    fg.subtitle(spec.description or site.description)
    fg.language(site.language)
    fg.author({"name": org.name, "uri": org.website})
    fg.generator("newsletter-pipeline", uri="https://pypi.org/project/feedgen/")
    fg.rights(org.copyright_line)
    _point(fg, config, spec, self_file)
    extras: _FeedExtras = fg.extras
    extras.archive = spec.archive
    if spec.ttl:
        fg.ttl(spec.ttl)
        extras.update = sy_update(spec.ttl)
    if site.logo:
        fg.logo(site.logo.url)
        width, height = site.logo.width, site.logo.height
        fits = width <= _RSS_IMAGE_MAX[0] and height <= _RSS_IMAGE_MAX[1]
        # The image links where the channel does (W3C validator: "Image link doesn't match channel link").
        fg.image(url=site.logo.url, title=spec.title or site.title,
                 link=site.url(spec.page) if spec.page else site.base_url,
                 width=str(width) if fits else None, height=str(height) if fits else None)
    if site.icon:
        fg.icon(site.icon)
    updated = last_updated(items) if items or spec.updated is None else spec.updated
    fg.lastBuildDate(updated)
    fg.updated(updated)
    return fg


def build_rss(items: list[Item], config: Config, spec: FeedSpec = MAIN) -> bytes:
    return build_rss_and_atom(items, config, spec)[0]


def build_atom(items: list[Item], config: Config, spec: FeedSpec = MAIN) -> bytes:
    return build_rss_and_atom(items, config, spec)[1]


def build_rss_and_atom(items: list[Item], config: Config, rss_spec: FeedSpec,
                       atom_spec: FeedSpec | None = None, entries: FeedEntries | None = None) -> tuple[bytes, bytes]:
    """``build_rss(items, config, rss_spec), build_atom(items, config, atom_spec)`` from one head;
    the entries from ``entries`` (a run shares one across its documents), else made here.
    The two specs may differ only in their links and file names."""
    atom_spec = atom_spec or rss_spec
    if replace(atom_spec, links=rss_spec.links, rss_file=rss_spec.rss_file, atom_file=rss_spec.atom_file) != rss_spec:
        raise ValueError("RSS and Atom documents built together must differ only in links and file names")
    own = entries is None
    made = entries if entries is not None else FeedEntries(config)
    try:
        pairs = [made.rss_and_atom(item, rss_spec.full_text) for item in items]
    finally:
        if own:
            made.close()
    fg = _generator(items, config, rss_spec, rss_spec.rss_file)
    rss = spliced(rss_text_refs(fg.rss_str(pretty=True)), RSS_TAIL, [pair[0] for pair in pairs])
    _point(fg, config, atom_spec, atom_spec.atom_file, atom=True)
    atom = spliced(fg.atom_str(pretty=True), ATOM_TAIL, [pair[1] for pair in pairs])
    return rss, atom


def build_json_feed(items: list[Item], config: Config, spec: FeedSpec = MAIN) -> bytes:
    site, org = config.site, config.organisation
    feed: dict = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": spec.title or site.title,
        "home_page_url": site.url(spec.page) if spec.page else site.base_url,
        "feed_url": site.url(spec.path(spec.json_file or JSON_FILE)),
        "description": spec.description or site.description,
        "language": site.language,
        "authors": [{"name": org.name, "url": org.website}],
    }
    if site.feed_icon:  # JSON Feed's icon is square; the wide logo would be squashed
        feed["icon"] = site.feed_icon
    if site.icon:
        feed["favicon"] = site.icon
    if spec.hub:
        feed["hubs"] = [{"type": "WebSub", "url": spec.hub}]
    entries = []
    for item in items:
        entry: dict = {"id": item.id}
        if item.own_link:
            entry["url"] = item.link
        else:
            entry["external_url"] = item.link
        entry.update({
            "title": item.title,
            "content_html": item.full_html,
            "summary": item.summary,
            # isoformat, as Atom writes them (orjson's own datetimes round offsets with seconds).
            "date_published": item.published.isoformat(),
            "date_modified": item.last_modified.isoformat(),
            "authors": [{"name": author_name(item, config)}],
        })
        if item.tags:
            entry["tags"] = list(item.tags)
        if item.image:
            entry["image"] = item.image.url
        attachment = attachment_of(item)
        if attachment:
            entry["attachments"] = [{"url": attachment.url, "mime_type": attachment.type or "image/jpeg",
                                     **({"size_in_bytes": attachment.length} if attachment.length else {})}]
        if item.source:
            entry["_source"] = {"about": SOURCE_EXTENSION_ABOUT, **item.source.model_dump(exclude_none=True)}
        entries.append(entry)
    feed["items"] = entries
    # Compact UTF-8: the bytes json.dumps(ensure_ascii=False, separators=(",", ":")) gives, 20x faster.
    # orjson refuses integers beyond 64 bits (a size in a content file can be anything): json then.
    try:
        return orjson.dumps(feed, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return (json.dumps(feed, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def build_feeds(items: list[Item], config: Config) -> FeedSet:
    """The three main feeds (newest feeds.limit items), as a subscriber's reader gets them."""
    files = feed_set(feed_items(items, config), config, main_spec(config))
    return FeedSet(rss=files[RSS_FILE], atom=files[ATOM_FILE], json=files[JSON_FILE])


# -- metadata from the schedule -----------------------------------------------------------------------

_REFERENCE = datetime(2021, 1, 4, tzinfo=ZoneInfo("UTC"))  # a fixed Monday: the result never depends on the clock


def schedule_interval(config: Config) -> int | None:
    """The shortest time in minutes between two scheduled runs that publish the feeds, or None."""
    return _shortest_interval(tuple(job for job in config.schedule.jobs.values()
                                    if job.action in ("run", "feeds")))  # send and retry never change a feed


@lru_cache(maxsize=16)
def _shortest_interval(jobs: tuple[Job, ...]) -> int | None:
    """Cached: every feed of a run (main, topics, archives) asks, and walking cron times costs milliseconds."""
    shortest = None
    for job in jobs:
        trigger = job.trigger()
        previous = trigger.get_next_fire_time(None, _REFERENCE)
        for _ in range(16):
            if previous is None:
                break
            following = trigger.get_next_fire_time(previous, previous + timedelta(seconds=1))
            if following is None:
                break
            minutes = int((following - previous).total_seconds() // 60)
            shortest = minutes if shortest is None else min(shortest, minutes)
            previous = following
    return shortest


def feed_ttl(config: Config) -> int | None:
    return config.feeds.ttl or schedule_interval(config)


def sy_update(minutes: int) -> tuple[str, int]:
    """sy:updatePeriod and sy:updateFrequency for an update every ``minutes``."""
    for period, length in (("hourly", 60), ("daily", 1440), ("weekly", 10080), ("monthly", 43200)):
        if minutes <= length:
            return period, max(1, length // minutes)
    return "yearly", 1


def main_spec(config: Config) -> FeedSpec:
    return FeedSpec(hub=config.feeds.websub_hub, ttl=feed_ttl(config))


def feed_set(items: list[Item], config: Config, spec: FeedSpec) -> dict[str, bytes]:
    rss, atom = build_rss_and_atom(items, config, spec)
    files = {spec.path(spec.rss_file): rss, spec.path(spec.atom_file): atom}
    if spec.json_file:
        files[spec.path(spec.json_file)] = build_json_feed(items, config, spec)
    return files

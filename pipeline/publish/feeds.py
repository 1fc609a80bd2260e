"""RSS 2.0 and Atom 1.0 (made with feedgen) and JSON Feed 1.1 (written from the same items).

The builders are pure: items and config in, bytes out.  Dates come from the items,
never from the clock, so unchanged input gives byte-identical feeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator

from ..config import Config
from ..items import Item, newest_first

RSS_FILE = "rss.xml"
ATOM_FILE = "atom.xml"
JSON_FILE = "feed.json"
STYLESHEET_FILE = "feed.xsl"
STYLESHEET_PI = f'<?xml-stylesheet type="text/xsl" href="{STYLESHEET_FILE}"?>'.encode("ascii")

# RSS 2.0 caps the channel image; larger values make the feed invalid, so they are left out.
_RSS_IMAGE_MAX = (144, 400)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


_ATOM_LINK = "link"  # feedgen writes Atom elements unqualified under a default namespace


class _AtomEntryLinks(BaseEntryExtension):
    """Writes an Atom entry's links with their attributes.

    feedgen 1.0 drops rel, type and length from entry links, which turns the image
    enclosure into a second "alternate" link: invalid Atom, and readers then take
    the image as the article's link.  This replaces those bare links.
    """

    def __init__(self) -> None:
        self.links: list[dict[str, str]] = []

    def extend_atom(self, entry):
        for bare in entry.findall(_ATOM_LINK):
            entry.remove(bare)
        for attributes in self.links:
            entry.append(entry.makeelement(_ATOM_LINK, attributes))
        return entry


def _entry_links(item: Item) -> list[dict[str, str]]:
    links = [{"href": item.link, "rel": "alternate", "type": "text/html"}]
    if item.image:
        links.append({"href": item.image.url, "rel": "enclosure", "type": item.image.type,
                      "length": str(item.image.length)})
    return links


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


def _author_name(item: Item, config: Config) -> str:
    return item.author or config.organisation.name


def _generator(items: list[Item], config: Config, self_file: str, html_type: str) -> FeedGenerator:
    site, org = config.site, config.organisation
    fg = FeedGenerator()
    fg.load_extension("dc")
    fg.load_extension("media")
    fg.register_extension("atomlinks", BaseExtension, _AtomEntryLinks, atom=True, rss=False)
    fg.id(site.base_url)
    fg.title(site.title)
    fg.subtitle(site.description)
    fg.language(site.language)
    fg.author({"name": org.name, "uri": org.website})
    fg.generator("newsletter-pipeline", uri="https://pypi.org/project/feedgen/")
    fg.rights(org.copyright)
    # feedgen uses the *last* link added as the RSS channel <link>: self first, site last.
    fg.link(href=site.url(self_file), rel="self",
            type="application/rss+xml" if self_file == RSS_FILE else "application/atom+xml")
    fg.link(href=site.base_url, rel="alternate", type="text/html")
    if site.logo:
        fg.logo(site.logo.url)
        width, height = site.logo.width, site.logo.height
        fits = width <= _RSS_IMAGE_MAX[0] and height <= _RSS_IMAGE_MAX[1]
        fg.image(url=site.logo.url, title=site.title, link=site.base_url,
                 width=str(width) if fits else None, height=str(height) if fits else None)
    if site.icon:
        fg.icon(site.icon)
    fg.lastBuildDate(last_updated(items))
    fg.updated(last_updated(items))

    for item in items:  # already newest first; append keeps that order
        fe = fg.add_entry(order="append")
        fe.id(item.id)
        fe.guid(item.id, permalink=item.id == item.link)
        fe.title(item.title)
        fe.link(href=item.link, rel="alternate", type="text/html")
        fe.atomlinks.links = _entry_links(item)
        fe.published(item.published)
        fe.updated(item.last_modified)
        name = _author_name(item, config)
        if config.feeds.author_email:
            fe.author({"name": name, "email": config.feeds.author_email})
        else:
            fe.author({"name": name})
            fe.dc.dc_creator(name)
        for tag in item.tags:
            fe.category(term=tag, label=tag)
        fe.summary(item.summary)
        fe.content(item.full_html, type=html_type)
        if item.image:
            image = item.image
            fe.enclosure(image.url, str(image.length), image.type)
            media = {"url": image.url, "medium": "image", "type": image.type}
            if image.width:
                media["width"] = str(image.width)
            if image.height:
                media["height"] = str(image.height)
            fe.media.content(media)
        if item.source and item.source.url:
            fe.source(url=item.source.url, title=item.source.name)
    return fg


def with_stylesheet(document: bytes) -> bytes:
    """Add the xml-stylesheet instruction that lets a browser show the feed as a page.

    Relative on purpose: browsers load XSLT only from the feed's own origin.
    feedgen cannot write processing instructions, so it goes in after the declaration.
    """
    declaration, rest = document.split(b"?>", 1)
    return declaration + b"?>\n" + STYLESHEET_PI + rest


def build_rss(items: list[Item], config: Config) -> bytes:
    return with_stylesheet(_generator(items, config, RSS_FILE, "CDATA").rss_str(pretty=True))


def build_atom(items: list[Item], config: Config) -> bytes:
    # "CDATA" is not an Atom content type: Atom gets escaped HTML with type="html".
    return with_stylesheet(_generator(items, config, ATOM_FILE, "html").atom_str(pretty=True))


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat()


def build_json_feed(items: list[Item], config: Config) -> bytes:
    site, org = config.site, config.organisation
    feed: dict = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": site.title,
        "home_page_url": site.base_url,
        "feed_url": site.url(JSON_FILE),
        "description": site.description,
        "language": site.language,
        "authors": [{"name": org.name, "url": org.website}],
    }
    if site.logo:
        feed["icon"] = site.logo.url
    if site.icon:
        feed["favicon"] = site.icon
    entries = []
    for item in items:
        entry: dict = {
            "id": item.id,
            "url": item.link,
            "title": item.title,
            "content_html": item.full_html,
            "summary": item.summary,
            "date_published": _rfc3339(item.published),
            "date_modified": _rfc3339(item.last_modified),
            "authors": [{"name": _author_name(item, config)}],
        }
        if item.tags:
            entry["tags"] = list(item.tags)
        if item.image:
            entry["image"] = item.image.url
            entry["attachments"] = [{
                "url": item.image.url,
                "mime_type": item.image.type,
                **({"size_in_bytes": item.image.length} if item.image.length else {}),
            }]
        if item.source:
            entry["_source"] = item.source.model_dump(exclude_none=True)
        entries.append(entry)
    feed["items"] = entries
    # Compact: json's C encoder only runs without indent, and readers do not care.
    return (json.dumps(feed, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def build_feeds(items: list[Item], config: Config) -> FeedSet:
    chosen = feed_items(items, config)
    return FeedSet(
        rss=build_rss(chosen, config),
        atom=build_atom(chosen, config),
        json=build_json_feed(chosen, config),
    )

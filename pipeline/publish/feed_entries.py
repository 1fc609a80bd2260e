"""Each item's RSS ``<item>`` and Atom ``<entry>``, made by feedgen once per run (``FeedEntries``) and
spliced into every feed document that lists the item (``feeds.build_rss_and_atom``).

What an entry says depends on the item and the config only, never on the feed it is in: that is what
lets one entry serve the main feed, its archive, every topic feed and theirs.
"""

from __future__ import annotations

import html
import os
import re
import tempfile
from pathlib import Path
from typing import IO

from feedgen.entry import FeedEntry
from lxml import etree

from ..config import Config
from ..items import Enclosure, Image, Item

ATOM_NS = "http://www.w3.org/2005/Atom"
MEDIA_NS = "http://search.yahoo.com/mrss/"
DC_NS = "http://purl.org/dc/elements/1.1/"
_DC_CREATOR = f"{{{DC_NS}}}creator"
_MEDIA_CONTENT = f"{{{MEDIA_NS}}}content"


class EntryExtras:
    """Entry elements written by hand where feedgen gets them wrong.

    - Atom links with their attributes: feedgen 1.0 drops rel, type and length, which
      turns an enclosure into a second "alternate" link; its own Atom links are cleared
      (``_without_atom_links``) and these written instead.
    - ``media:content`` directly in the item: feedgen wraps a single one in
      ``media:group``, which Media RSS reserves for several versions of one thing
      (W3C validator: "media:group must have multiple media:content children").
    - ``<source>``: RSS needs the source's *feed* URL; Atom needs its id and updated.
    - ``dc:creator``: feedgen's dc extension would do, but it looks up fifteen Dublin Core
      fields per entry and format to write this one (a fifth of the feeds' build time).

    feedgen makes one instance per entry and only calls ``extend_rss``/``extend_atom``, so this
    is a slotted class holding the item (not a ``BaseEntryExtension`` with a ``__dict__``): fewer
    long-lived objects per entry, fewer full cycle collections while a large feed is built.
    """

    __slots__ = ("item", "creator")

    def __init__(self) -> None:
        self.item: Item | None = None
        self.creator: str | None = None  # dc:creator, unless the entry's author has an email

    def extend_ns(self) -> dict[str, str]:
        return {}

    def _creator(self, entry) -> None:
        if self.creator:
            entry.append(entry.makeelement(_DC_CREATOR, {}))
            entry[-1].text = self.creator

    def _media(self, entry, image: Image | None) -> None:
        if image:
            # Image's validator always sets a type; the fallback only satisfies the type checker.
            media = {"url": image.url, "medium": "image", "type": image.type or "image/jpeg"}
            if image.width:
                media["width"] = str(image.width)
            if image.height:
                media["height"] = str(image.height)
            entry.append(entry.makeelement(_MEDIA_CONTENT, media))

    def extend_rss(self, entry):
        item = self.item
        assert item is not None
        self._creator(entry)
        self._media(entry, item.image)
        if item.source and item.source.feed_url:
            source = entry.makeelement("source", {"url": item.source.feed_url})
            source.text = item.source.name
            entry.append(source)
        return entry

    def extend_atom(self, entry):
        item = self.item
        assert item is not None
        self._creator(entry)
        for attributes in _entry_links(item):
            entry.append(entry.makeelement("link", attributes))
        self._media(entry, item.image)
        origin = item.source
        source_id = origin and (origin.id or origin.feed_url or origin.url)
        if origin and source_id:
            source = entry.makeelement("source", {})
            for name, text in (("id", source_id), ("title", origin.name),
                               ("updated", item.last_modified.isoformat())):
                child = source.makeelement(name, {})
                child.text = text
                source.append(child)
            for rel, href in (("self", origin.feed_url), ("alternate", origin.url)):
                if href:
                    source.append(source.makeelement("link", {"rel": rel, "href": href}))
            entry.append(source)
        return entry


def _without_atom_links(fe) -> None:
    """Drop the Atom links feedgen keeps for ``link()`` and ``enclosure()`` (it would write them
    without rel, type and length); the RSS link and enclosure stay, and ``EntryExtras`` writes the
    Atom links itself.  Cleared at the source rather than removed from every serialised entry."""
    fe._FeedEntry__atom_link = None


def _entry_links(item: Item) -> list[dict[str, str]]:
    links: list[dict[str, str]] = []
    if item.own_link:
        links.append({"href": item.link, "rel": "alternate", "type": "text/html"})
    # Atom's length is advisory and optional: left out when unknown (RSS must say 0 instead).
    attachment = attachment_of(item)
    if attachment:
        links.append({"href": attachment.url, "rel": "enclosure", "type": attachment.type or "image/jpeg",
                      **({"length": str(attachment.length)} if attachment.length else {})})
    return links


def attachment_of(item: Item) -> Image | Enclosure | None:
    """The item's one attachment, the same in every format (RSS <enclosure>, Atom rel="enclosure", JSON
    Feed ``attachments``): its file (audio, video, PDF), else its image.  The image itself is always the
    item's picture: ``media:content`` in RSS and Atom, ``image`` in JSON Feed."""
    return item.enclosure or item.image


def author_name(item: Item, config: Config) -> str:
    """Who wrote it: the item's author, else the source it came from; our name only for our own items."""
    if item.author:
        return item.author
    return item.source.name if item.source else config.organisation.name


def _fill_entry(fe: FeedEntry, item: Item, config: Config) -> None:
    """Everything of ``item`` that its RSS item and Atom entry say; nothing here depends on the feed."""
    fe.id(item.id)
    fe.guid(item.id, permalink=item.own_link and item.id == item.link)
    fe.title(item.title)
    if item.own_link:
        fe.link(href=item.link, rel="alternate", type="text/html")
    entry_extras: EntryExtras = fe.extras
    entry_extras.item = item
    fe.published(item.published)
    fe.updated(item.last_modified)
    name = author_name(item, config)
    if config.feeds.author_email and not item.source:
        fe.author({"name": name, "email": config.feeds.author_email})
    else:
        fe.author({"name": name})
        entry_extras.creator = name
    for tag in item.tags:
        fe.category(term=tag, label=tag)
    fe.summary(item.summary)  # Atom: type="text", the words as they are
    # RSS 2.0 has no text type and readers take <description> as HTML: the HTML whose rendering is
    # the summary's text, so `Q&A <MS>` reads as written and escaped markup never comes alive.
    fe._FeedEntry__rss_description = html.escape(item.summary, quote=False)
    # Atom gets escaped HTML with type="html" ("CDATA" is not an Atom content type), RSS a CDATA
    # section: feedgen keeps one content record per format, so each gets its own type.
    fe.content(item.full_html, type="html")
    fe._FeedEntry__rss_content["type"] = "CDATA"
    attachment = attachment_of(item)  # RSS allows one enclosure: the file, else the image
    if attachment:
        fe.enclosure(attachment.url, str(attachment.length), attachment.type)
    _without_atom_links(fe)


_BUFFER = 1 << 20  # bytes of entries written to the temporary file at a time (a write per entry was 10,000 calls)

# Where a document's entries go: before the end of its RSS channel, before the end of its Atom feed.
RSS_TAIL = b"  </channel>\n</rss>\n"
ATOM_TAIL = b"</feed>\n"


class FeedEntries:
    """Each item's RSS ``<item>`` and Atom ``<entry>``, made by feedgen once per run and then spliced into
    every document that lists the item: the main feed, its archive pages, every topic feed and theirs.
    (At 10,000 stories with 3-5 topics each, that is one entry built where five were.)

    An entry is serialised where it would sit in a feedgen document (under a root declaring the same
    namespaces, at the same depth, pretty-printed the same way), so a document spliced from its head
    and its entries has the bytes feedgen would have made of the whole.  Entries made are kept in an
    unnamed temporary file, not in memory: at 30,000 stories, with their brief forms, more than 250 MB."""

    def __init__(self, config: Config, folder: Path | None = None):
        self.config = config
        self.folder = folder if folder is not None and folder.is_dir() else None
        self._file: IO[bytes] | None = None
        self._size = 0
        self._unflushed = False
        self._where: dict[str, tuple[int, int, int]] = {}  # item id: offset, RSS length, Atom length (full)
        self._brief_where: dict[str, tuple[int, int, int]] = {}  # the same for the brief forms, made when asked
        self._rss_root = etree.Element("rss", nsmap=_RSS_NAMESPACES, version="2.0")
        self._channel = etree.SubElement(self._rss_root, "channel")
        self._atom_root = etree.Element("feed", xmlns=ATOM_NS, nsmap=_ENTRY_NAMESPACES)
        self.built = 0

    def rss_and_atom(self, item: Item, full: bool = True) -> tuple[bytes, bytes]:
        """The item's RSS item and Atom entry; not ``full``: the same without the story's text
        (``brief``), what a topic's archive pages carry, cut from the full ones the first time it is asked."""
        table = self._where if full else self._brief_where
        where = table.get(item.id)
        if where is not None:
            return self._read(where)
        rss, atom = self._build(item) if full else brief(*self.rss_and_atom(item), item.own_link)
        table[item.id] = self._keep(rss, atom)
        return rss, atom

    def _read(self, where: tuple[int, int, int]) -> tuple[bytes, bytes]:
        assert self._file is not None
        if self._unflushed:  # written in large buffered writes, flushed only when one is read back
            self._file.flush()
            self._unflushed = False
        offset, rss_length, atom_length = where
        data = os.pread(self._file.fileno(), rss_length + atom_length, offset)
        return data[:rss_length], data[rss_length:]

    def _build(self, item: Item) -> tuple[bytes, bytes]:
        fe = FeedEntry()
        fe.register_extension("extras", EntryExtras, atom=True, rss=True)
        _fill_entry(fe, item, self.config)
        self.built += 1
        return (rss_text_refs(_serialised(self._rss_root, self._channel, fe.rss_entry(), b"\n    <item>", RSS_TAIL)),
                _serialised(self._atom_root, self._atom_root, fe.atom_entry(), b"\n  <entry>", ATOM_TAIL))

    def _keep(self, rss: bytes, atom: bytes) -> tuple[int, int, int]:
        """Write an RSS and Atom pair to the temporary file; where they are, for ``_read``."""
        if self._file is None:
            try:
                self._file = tempfile.TemporaryFile(dir=self.folder, buffering=_BUFFER)  # noqa: SIM115 - till close
            except OSError:  # a state folder this process may not write (a dry run's): the system's
                self._file = tempfile.TemporaryFile(buffering=_BUFFER)  # noqa: SIM115
        where = (self._size, len(rss), len(atom))
        self._file.write(rss)
        self._file.write(atom)
        self._size += len(rss) + len(atom)
        self._unflushed = True
        return where

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._where.clear()
        self._brief_where.clear()
        self._size, self._unflushed = 0, False


# The story's text in a serialised entry: RSS content:encoded is one CDATA section (which cannot hold
# "]]>"), Atom content of type html is escaped text (which holds no "<"); each on a line of its own.
_RSS_TEXT = (b"<content:encoded><![CDATA[", b"]]></content:encoded>\n")
_ATOM_TEXT = (b'<content type="html">', b"</content>\n")


def brief(rss: bytes, atom: bytes, alternate: bool = True) -> tuple[bytes, bytes]:
    """The entries without the story's text: title, link, summary, dates, author, tags and picture stay.
    An Atom entry without content needs an alternate link (RFC 4287 4.1.2): without one it stays whole."""
    short_atom = _without(atom, *_ATOM_TEXT) if alternate else atom  # ``alternate``: the entry links its page
    return _without(rss, *_RSS_TEXT), short_atom


def _without(entry: bytes, start: bytes, end: bytes) -> bytes:
    at = entry.find(start)
    if at < 0:
        return entry
    stop = entry.index(end, at) + len(end)
    return entry[: entry.rindex(b"\n", 0, at) + 1] + entry[stop:]


_ENTRY_NAMESPACES = {"dc": DC_NS, "media": MEDIA_NS}  # what ``_FeedExtras.extend_ns`` always declares
_RSS_NAMESPACES = {**_ENTRY_NAMESPACES, "atom": ATOM_NS, "content": "http://purl.org/rss/1.0/modules/content/"}


def _serialised(root, parent, element, start: bytes, tail: bytes) -> bytes:
    """``element``'s bytes as they are in a pretty-printed document whose entries sit in ``parent``."""
    parent.append(element)
    try:
        data = etree.tostring(root, pretty_print=True, encoding="UTF-8")
    finally:
        parent.remove(element)
    if not data.endswith(tail):
        raise AssertionError(f"a serialised entry's document that does not end with {tail!r}")
    return data[data.index(start) + 1: len(data) - len(tail)]


def spliced(head: bytes, tail: bytes, entries: list[bytes]) -> bytes:
    if not head.endswith(tail):
        raise AssertionError(f"a feed head that does not end with {tail!r}")
    return b"".join((head[: len(head) - len(tail)], *entries, tail))


# Plain-text RSS elements (titles, categories, creators, sources): "&" and "<" as hexadecimal character
# references, as the RSS Best Practices Profile asks (W3C validator, AA: "Encode & and < in plain text
# using hexadecimal character references"); the characters read back are the same.
_RSS_TEXT_ELEMENT = re.compile(rb"(<(title|category|dc:creator|source)(?:\s[^>]*)?>)([^<]*?&[^<]*)(</\2>)")


def rss_text_refs(data: bytes) -> bytes:
    def encode(match: re.Match) -> bytes:
        text = match.group(3).replace(b"&amp;", b"&#x26;").replace(b"&lt;", b"&#x3C;").replace(b"&gt;", b"&#x3E;")
        return match.group(1) + text + match.group(4)

    return _RSS_TEXT_ELEMENT.sub(encode, data) if b"&" in data else data

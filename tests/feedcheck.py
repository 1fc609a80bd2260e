"""Schema-level checks of RSS 2.0 and Atom 1.0, after the rules the W3C Feed Validation Service applies.

The W3C validator is a web service; these checks encode the rules it reports as errors
at its default level (required elements, date formats, link and id rules) so the
tests can run offline.
"""

from __future__ import annotations

import email.utils
import re
from datetime import datetime
from urllib.parse import urlsplit

from lxml import etree

ATOM = "http://www.w3.org/2005/Atom"
CONTENT = "http://purl.org/rss/1.0/modules/content/"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")


def _absolute(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _rfc822(text: str) -> bool:
    try:
        return email.utils.parsedate_to_datetime(text).tzinfo is not None
    except (TypeError, ValueError):
        return False


def rss_problems(data: bytes) -> list[str]:
    root = etree.fromstring(data)
    problems = []
    if root.tag != "rss" or root.get("version") != "2.0":
        return ["root element must be <rss version=\"2.0\">"]
    channels = root.findall("channel")
    if len(channels) != 1:
        return ["exactly one <channel> required"]
    channel = channels[0]
    for name in ("title", "link", "description"):
        if len(channel.findall(name)) != 1 or not (channel.findtext(name) or "").strip():
            problems.append(f"channel: exactly one non-empty <{name}> required")
    if not _absolute(channel.findtext("link") or ""):
        problems.append("channel/link must be an absolute URL")
    selfs = [l for l in channel.findall(f"{{{ATOM}}}link") if l.get("rel") == "self"]
    if len(selfs) != 1 or not _absolute(selfs[0].get("href", "")):
        problems.append("channel: one atom:link rel=self with an absolute href recommended")
    if not LANGUAGE.match(channel.findtext("language") or ""):
        problems.append("channel/language must be a language tag such as en-us")
    for name in ("lastBuildDate", "pubDate"):
        value = channel.findtext(name)
        if value is not None and not _rfc822(value):
            problems.append(f"channel/{name} must be an RFC 822 date")
    image = channel.find("image")
    if image is not None:
        for name in ("url", "title", "link"):
            if not image.findtext(name):
                problems.append(f"channel/image: <{name}> required")
        if int(image.findtext("width") or 88) > 144 or int(image.findtext("height") or 31) > 400:
            problems.append("channel/image: width <= 144 and height <= 400")
    guids = set()
    for index, item in enumerate(channel.findall("item")):
        where = f"item[{index}]"
        if not (item.findtext("title") or item.findtext("description")):
            problems.append(f"{where}: title or description required")
        for name in ("title", "link", "description", "pubDate", "guid"):
            if len(item.findall(name)) > 1:
                problems.append(f"{where}: at most one <{name}>")
        link = item.findtext("link")
        if link is not None and not _absolute(link):
            problems.append(f"{where}/link must be absolute")
        guid = item.find("guid")
        if guid is not None:
            if guid.get("isPermaLink", "true") == "true" and not _absolute(guid.text or ""):
                problems.append(f"{where}/guid: a permalink guid must be an absolute URL")
            if guid.text in guids:
                problems.append(f"{where}/guid: duplicate")
            guids.add(guid.text)
        if item.findtext("pubDate") is not None and not _rfc822(item.findtext("pubDate")):
            problems.append(f"{where}/pubDate must be an RFC 822 date")
        author = item.findtext("author")
        if author is not None and "@" not in author:
            problems.append(f"{where}/author must be an email address")
        for enclosure in item.findall("enclosure"):
            if not (_absolute(enclosure.get("url", "")) and (enclosure.get("length") or "").isdigit() and enclosure.get("type")):
                problems.append(f"{where}/enclosure needs absolute url, numeric length and type")
    return problems


def atom_problems(data: bytes) -> list[str]:
    root = etree.fromstring(data)
    problems = []
    if root.tag != f"{{{ATOM}}}feed":
        return ["root element must be atom:feed"]

    def one(parent, name, where):
        found = parent.findall(f"{{{ATOM}}}{name}")
        if len(found) != 1 or not (found[0].text or "").strip():
            problems.append(f"{where}: exactly one non-empty atom:{name} required")
        return found[0] if found else None

    def check_date(element, where):
        if element is not None and not RFC3339.match(element.text or ""):
            problems.append(f"{where}: date must be RFC 3339")

    def check_links(parent, where):
        alternates = set()
        for link in parent.findall(f"{{{ATOM}}}link"):
            if not _absolute(link.get("href", "")):
                problems.append(f"{where}: link href must be absolute")
            if link.get("rel", "alternate") == "alternate":
                key = (link.get("type"), link.get("hreflang"))
                if key in alternates:
                    problems.append(f"{where}: two alternate links with the same type and hreflang")
                alternates.add(key)

    one(root, "id", "feed")
    one(root, "title", "feed")
    check_date(one(root, "updated", "feed"), "feed/updated")
    check_links(root, "feed")
    if not [l for l in root.findall(f"{{{ATOM}}}link") if l.get("rel") == "self"]:
        problems.append("feed: a rel=self link is recommended")
    feed_author = root.find(f"{{{ATOM}}}author") is not None
    ids = set()
    for index, entry in enumerate(root.findall(f"{{{ATOM}}}entry")):
        where = f"entry[{index}]"
        entry_id = one(entry, "id", where)
        if entry_id is not None:
            if entry_id.text in ids:
                problems.append(f"{where}: duplicate id")
            ids.add(entry_id.text)
        one(entry, "title", where)
        check_date(one(entry, "updated", where), f"{where}/updated")
        check_date(entry.find(f"{{{ATOM}}}published"), f"{where}/published")
        check_links(entry, where)
        author = entry.find(f"{{{ATOM}}}author")
        if author is None and not feed_author:
            problems.append(f"{where}: atom:author required (in the entry or the feed)")
        if author is not None and not author.findtext(f"{{{ATOM}}}name"):
            problems.append(f"{where}: author needs a name")
        content = entry.find(f"{{{ATOM}}}content")
        if content is not None:
            kind = content.get("type", "text")
            if kind not in ("text", "html", "xhtml") and "/" not in kind:
                problems.append(f"{where}: content type {kind!r} is not text, html, xhtml or a MIME type")
        if content is None and not [l for l in entry.findall(f"{{{ATOM}}}link") if l.get("rel", "alternate") == "alternate"]:
            problems.append(f"{where}: an entry without content needs an alternate link")
    return problems


def parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))

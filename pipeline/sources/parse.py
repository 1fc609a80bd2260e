"""Parsing a fetched feed (RSS 0.9x/1.0/2.0, Atom 0.3/1.0 with feedparser, JSON Feed 1.x by hand)
into ``RawEntry`` objects of one shape, whatever the format."""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urljoin

from ..items import guess_type
from .fetch import Fetched, SourceError

log = logging.getLogger(__name__)


@dataclass
class RawEntry:
    """One entry as a feed gives it, in a shape common to every feed format."""

    id: str | None
    link: str | None
    title: str
    content_html: str
    summary: str
    published: datetime | None
    updated: datetime | None
    author: str | None
    tags: list[str] = field(default_factory=list)
    image: dict[str, Any] | None = None
    enclosure: dict[str, Any] | None = None  # a non-image file: audio, video, a document
    title_html: bool = True  # the title field is HTML at its source (Atom type="html"); else plain text
    summary_html: bool = True
    # The format says what its text fields are (Atom type="text", JSON Feed): plain text is kept exactly
    # as written, markup-looking text and all; RSS titles are only guessed to be text.
    text_declared: bool = False



def _struct_to_datetime(value) -> datetime | None:
    if not value:
        return None
    try:
        year, month, day, hour, minute, second = value[:6]
        return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return None


def _iso_to_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _looks_like_json(fetched: Fetched) -> bool:
    kind = fetched.content_type.split(";")[0].strip().lower()
    return kind in ("application/feed+json", "application/json") or fetched.body.lstrip()[:1] == b"{"


def parse_json_feed(body: bytes, url: str) -> tuple[dict[str, Any], list[RawEntry]]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"not a feed: invalid JSON ({exc})") from None
    if not isinstance(data, dict) or not str(data.get("version", "")).startswith("https://jsonfeed.org/version/"):
        raise SourceError("not a feed: JSON without a JSON Feed version")
    home = data.get("home_page_url") if isinstance(data.get("home_page_url"), str) else url
    entries = []
    for item in data.get("items") or []:
        if not isinstance(item, dict):
            continue
        link = item.get("url") if isinstance(item.get("url"), str) else None
        base = urljoin(url, link) if link else home
        authors = item.get("authors") or ([item["author"]] if isinstance(item.get("author"), dict) else [])
        author = next((a.get("name") for a in authors if isinstance(a, dict) and a.get("name")), None)
        image = item.get("image") or item.get("banner_image")
        attachments = [a for a in item.get("attachments") or []
                       if isinstance(a, dict) and isinstance(a.get("url"), str)]
        enclosure = next(({"url": urljoin(base, a["url"]), "type": a.get("mime_type"), "length": a.get("size_in_bytes")}
                          for a in attachments), None)
        entries.append(RawEntry(
            id=str(item["id"]) if item.get("id") not in (None, "") else None,
            link=urljoin(url, link) if link else None,
            title=str(item.get("title") or ""),
            content_html=str(item.get("content_html") or "") or _text_to_html(str(item.get("content_text") or "")),
            summary=str(item.get("summary") or ""),
            published=_iso_to_datetime(item.get("date_published")),
            updated=_iso_to_datetime(item.get("date_modified")),
            author=author,
            tags=[str(t) for t in item.get("tags") or [] if isinstance(t, (str, int))],
            image={"url": urljoin(str(base or ""), image)} if isinstance(image, str) else None,
            enclosure=enclosure,
            title_html=False,  # JSON Feed titles and summaries are plain text by definition
            summary_html=False,
            text_declared=True,
        ))
    return {"title": data.get("title"), "link": home, "id": data.get("feed_url")}, entries


def _text_to_html(text: str) -> str:
    return "".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def parse_xml_feed(body: bytes, url: str, content_type: str) -> tuple[dict[str, Any], list[RawEntry]]:
    import feedparser  # at the point of use: only runs that fetch sources pay for importing it

    parsed = feedparser.parse(body, response_headers={"content-location": url,
                                                      "content-type": content_type or "application/xml"})
    if parsed.bozo and not parsed.entries and not parsed.get("version"):
        raise SourceError(f"not a feed ({parsed.get('bozo_exception')})")
    if not parsed.get("version") and not parsed.entries:
        raise SourceError("not a feed (no RSS, Atom or RDF root element)")
    if parsed.bozo:
        log.info("feed %s is malformed (%s); read leniently", url, parsed.get("bozo_exception"))
    entries = []
    for entry in parsed.entries:
        content = entry.get("content") or []
        atom = str(parsed.get("version") or "").startswith("atom")
        html_body = next((c.get("value", "") for c in content if "html" in c.get("type", "")), None)
        if html_body is None:
            text_body = content[0] if content else {"value": entry.get("summary", ""),
                                                   "type": (entry.get("summary_detail") or {}).get("type", "")}
            html_body = text_body.get("value", "")
            if atom and text_body.get("type") == "text/plain":  # Atom type="text": the words, as HTML text
                html_body = _text_to_html(html_body)
        image, enclosure = None, None
        for media in (entry.get("media_content") or []) + (entry.get("enclosures") or []):
            url = media.get("url") or media.get("href")
            if not url:
                continue
            kind = (media.get("type") or "").strip().lower() or guess_type(url) or ""
            is_image = kind.startswith("image/") or (not kind and media.get("medium") == "image")
            if is_image and image is None:
                image = {"url": url, "type": kind if kind.startswith("image/") else None,
                         "length": media.get("length") or media.get("filesize"),
                         "width": media.get("width"), "height": media.get("height")}
            elif not is_image and enclosure is None and media in (entry.get("enclosures") or []):
                enclosure = {"url": url, "type": kind or None, "length": media.get("length")}
        title_type = (entry.get("title_detail") or {}).get("type", "text/plain")
        summary_type = (entry.get("summary_detail") or {}).get("type", "text/html")
        entries.append(RawEntry(
            id=entry.get("id") or None,
            link=entry.get("link") or None,
            title=entry.get("title", ""),
            content_html=html_body or "",
            summary=entry.get("summary", "") if content else "",
            # dict.get: feedparser's own get() maps a missing updated_parsed to published_parsed.
            published=_struct_to_datetime(dict.get(entry, "published_parsed") or dict.get(entry, "created_parsed")),
            updated=_struct_to_datetime(dict.get(entry, "updated_parsed")),
            author=entry.get("author") or None,
            tags=[t.get("term") or t.get("label") for t in entry.get("tags") or [] if t.get("term") or t.get("label")],
            image=image,
            enclosure=enclosure,
            title_html="html" in title_type,
            summary_html="html" in summary_type or not (content or atom),
            text_declared=atom,
        ))
    feed = {"title": parsed.feed.get("title"), "link": parsed.feed.get("link") or url, "id": parsed.feed.get("id")}
    return feed, entries


def parse(fetched: Fetched) -> tuple[dict[str, Any], list[RawEntry]]:
    if not fetched.body.strip():
        raise SourceError("not a feed (empty response)")
    if _looks_like_json(fetched):
        return parse_json_feed(fetched.body, fetched.url)
    return parse_xml_feed(fetched.body, fetched.url, fetched.content_type)

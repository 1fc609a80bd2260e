"""Normalising: a raw entry becomes the JSON-ready fields we store, and a stored row becomes an ``Item``:
plain-text titles and summaries, sanitised HTML, absolute links, typed images and enclosures."""

from __future__ import annotations

import hashlib
import html
import json
import re
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urljoin

from ..config import RemoteSource
from ..items import (
    Enclosure,
    Image,
    Item,
    Source,
    clean_html,
    guess_type,
    html_to_text,
    is_absolute_http,
    newest_first,
    plain_text,
    strip_xml_illegal,
)
from ..state.storage import StoredEntry
from ..text import exact_text, shorten_words
from .parse import RawEntry, _iso_to_datetime

_LARGEST = 2**53  # bytes or pixels beyond this are not real; JSON readers lose precision past it


def _int_or_none(value: Any) -> int | None:
    """A positive size as a feed gave it, or None for anything else (text, zero, absurdly large)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number <= _LARGEST else None


_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


def item_id_for(raw: RawEntry) -> str:
    """guid/id, else the link, else a hash of fields that do not change between fetches.

    Atom needs ids that are IRIs; a guid that is not one (RSS allows any string) becomes
    a name-based UUID of it, the same for every source that carries the same guid.
    """
    given = strip_xml_illegal(raw.id or "").strip()
    if given:
        return given if _IRI.match(given) else f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, given)}"
    link = strip_xml_illegal(raw.link or "").strip()
    if link and is_absolute_http(link):
        return link
    stable = "\x00".join([raw.title, raw.published.isoformat() if raw.published else "", raw.content_html[:2000], link])
    return "urn:sha256:" + hashlib.sha256(stable.encode("utf-8", "surrogatepass")).hexdigest()


def entry_data(raw: RawEntry, source: RemoteSource, feed: dict[str, Any], feed_url: str) -> dict[str, Any]:
    """The item's fields as stored (JSON-ready); dates without a value are filled in from state later."""
    feed_link = feed.get("link")
    home = feed_link if isinstance(feed_link, str) and is_absolute_http(urljoin(feed_url, feed_link)) else feed_url
    home = urljoin(feed_url, home)
    link = urljoin(home, strip_xml_illegal(raw.link).strip()) if raw.link else ""
    own_link = is_absolute_http(link)
    if not own_link:  # no link of its own: readers get the home page, but it is not the item's identity
        link = home
    content = clean_html(raw.content_html or raw.summary, base_url=link)
    as_text = exact_text if raw.text_declared else plain_text
    if raw.summary:
        summary = html_to_text(raw.summary) if raw.summary_html else as_text(raw.summary)
    else:
        summary = html_to_text(raw.content_html)
    summary = shorten_words(summary, 400)
    title = (html_to_text(raw.title) if raw.title_html else as_text(raw.title)) or shorten_words(summary, 80) \
        or "(untitled)"
    image = None
    if raw.image and raw.image.get("url"):
        url = urljoin(link, str(raw.image["url"]).strip())
        kind = raw.image.get("type") or guess_type(url)
        if is_absolute_http(url):
            image = {"url": url, "alt": title, "type": kind if kind and kind.startswith("image/") else None,
                     "length": _int_or_none(raw.image.get("length")) or 0,
                     "width": _int_or_none(raw.image.get("width")), "height": _int_or_none(raw.image.get("height"))}
    enclosure = None
    if raw.enclosure and raw.enclosure.get("url"):
        url = urljoin(link, str(raw.enclosure["url"]).strip())
        kind = str(raw.enclosure.get("type") or guess_type(url) or "application/octet-stream").lower()
        if is_absolute_http(url) and re.fullmatch(r"[\w.+-]+/[\w.+-]+", kind):
            enclosure = {"url": url, "type": kind, "length": _int_or_none(raw.enclosure.get("length")) or 0}
    feed_id = feed.get("id") if isinstance(feed.get("id"), str) and _IRI.match(feed["id"].strip()) else None
    return {
        "title": title,
        "link": link,
        "own_link": own_link,
        "summary": summary or title,
        "content_html": content or f"<p>{html.escape(title, quote=False)}</p>",  # title is plain text: escape it
        "author": plain_text(raw.author) if raw.author else source.author,
        "tags": [plain_text(t) for t in raw.tags if plain_text(t)],
        "image": image,
        "enclosure": enclosure,
        "published": raw.published.isoformat() if raw.published else None,
        "feed_updated": raw.updated.isoformat() if raw.updated else None,
        "credit": source.credit or plain_text(feed.get("title") or "") or source.name,
        "home": home,
        "feed_url": feed_url,
        "feed_id": feed_id.strip() if feed_id else None,
    }


def content_hash(data: dict[str, Any]) -> str:
    """What counts as a real change: not the feed's own 'updated' stamp."""
    fields = {k: data.get(k) for k in ("title", "link", "summary", "content_html", "author", "tags", "image",
                                       "published", "enclosure")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8", "surrogatepass")).hexdigest()


def item_from_row(row: StoredEntry, source: RemoteSource) -> Item:
    data = row.data
    first_seen = row.first_seen
    published = _iso_to_datetime(data.get("published")) or first_seen - timedelta(seconds=data.get("seen_order", 0))
    updated = None
    if row.updated:  # the content changed after we first saw it
        feed_updated = _iso_to_datetime(data.get("feed_updated"))
        updated = feed_updated if feed_updated and feed_updated > published else row.updated
        if updated <= published:
            updated = None
    item_id = row.item_id
    image = Image(**{k: v for k, v in data["image"].items() if v is not None}) if data.get("image") else None
    enclosure = Enclosure(**data["enclosure"]) if data.get("enclosure") else None
    own_link = data.get("own_link", data["link"] != data.get("home"))  # rows stored before own_link existed
    return Item(
        id=item_id,
        slug=f"{source.name}-{hashlib.sha1(item_id.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}",
        title=data["title"], link=data["link"], published=published, updated=updated, author=data.get("author"),
        summary=data["summary"], content_html=data["content_html"], tags=tuple(data.get("tags") or ()),
        image=image, enclosure=enclosure, own_link=own_link,
        source=Source(name=data.get("credit") or source.name, url=data.get("home"),
                      feed_url=data.get("feed_url") or source.url, id=data.get("feed_id")),
    )


def select_items(items: list[Item], source: RemoteSource) -> list[Item]:
    if source.tags:
        wanted = {t.lower() for t in source.tags}
        items = [item for item in items if wanted & {t.lower() for t in item.tags}]
    return newest_first(items)[: source.max_items]

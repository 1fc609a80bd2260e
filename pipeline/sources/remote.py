"""Remote feeds (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, JSON Feed 1.x) turned into clean Items.

Fetching is polite and bounded: conditional GET with the stored ETag and
Last-Modified, a whole-fetch deadline, a size limit on the decompressed body, a
descriptive User-Agent, redirects followed (a permanent one moves the source).
Every source is isolated: whatever goes wrong is one log line naming the source,
and the items seen from it before stay in the outputs, because they live in the
state database.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import feedparser
import httpx

from ..config import Config, Fetch, RemoteSource
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
from ..state.storage import SourceState, Storage, StoredEntry, utcnow

log = logging.getLogger(__name__)

PERMANENT_REDIRECTS = {301, 308}


class SourceError(Exception):
    """Why one source gave nothing new this time."""


@dataclass
class Fetched:
    status: int
    body: bytes = b""
    content_type: str = ""
    url: str = ""
    etag: str | None = None
    last_modified: str | None = None
    moved_to: str | None = None


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


@dataclass
class SourceReport:
    name: str
    ok: bool
    status: str
    items: list[Item]


# -- fetching ------------------------------------------------------------------------------------

def fetch(client: httpx.Client, url: str, settings: Fetch, state: SourceState | None) -> Fetched:
    headers = {}
    if state:
        if state.etag:
            headers["If-None-Match"] = state.etag
        if state.last_modified:
            headers["If-Modified-Since"] = state.last_modified
    deadline = time.monotonic() + settings.timeout
    try:
        with client.stream("GET", url, headers=headers) as response:
            moved = None
            for hop in response.history:
                if hop.status_code in PERMANENT_REDIRECTS:
                    moved = str(response.url)
            if response.status_code == 304:
                return Fetched(304, url=str(response.url), moved_to=moved,
                               etag=response.headers.get("etag") or (state.etag if state else None),
                               last_modified=response.headers.get("last-modified")
                               or (state.last_modified if state else None))
            if response.status_code >= 400:
                raise SourceError(f"HTTP {response.status_code} {response.reason_phrase}")
            declared = response.headers.get("content-length")
            if (declared and declared.isdigit() and int(declared) > settings.max_bytes
                    and "content-encoding" not in response.headers):
                raise SourceError(f"response of {declared} bytes is over the limit of {settings.max_bytes} bytes")
            chunks, size = [], 0
            for chunk in response.iter_bytes():  # decompressed: the limit holds for gzip bombs too
                size += len(chunk)
                if size > settings.max_bytes:
                    raise SourceError(f"response is over the limit of {settings.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise SourceError(f"timed out after {settings.timeout:g}s")
                chunks.append(chunk)
            return Fetched(response.status_code, b"".join(chunks), response.headers.get("content-type", ""),
                           str(response.url), response.headers.get("etag"), response.headers.get("last-modified"),
                           moved)
    except httpx.TimeoutException:
        raise SourceError(f"timed out after {settings.timeout:g}s") from None
    except httpx.TooManyRedirects:
        raise SourceError("too many redirects") from None
    except httpx.HTTPError as exc:
        raise SourceError(f"{type(exc).__name__}: {exc}") from None


def make_client(settings: Fetch) -> httpx.Client:
    timeout = httpx.Timeout(settings.timeout, connect=min(settings.timeout, 10.0))
    return httpx.Client(timeout=timeout, follow_redirects=True, max_redirects=5,
                        headers={"User-Agent": settings.user_agent, "Accept-Encoding": "gzip, deflate",
                                 "Accept": "application/atom+xml, application/rss+xml, application/feed+json, "
                                           "application/json;q=0.9, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.5"})


# -- parsing -------------------------------------------------------------------------------------

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
        ))
    return {"title": data.get("title"), "link": home, "id": data.get("feed_url")}, entries


def _text_to_html(text: str) -> str:
    return "".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def parse_xml_feed(body: bytes, url: str, content_type: str) -> tuple[dict[str, Any], list[RawEntry]]:
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
        html_body = next((c.get("value", "") for c in content if "html" in c.get("type", "")), None)
        if html_body is None:
            html_body = content[0].get("value", "") if content else entry.get("summary", "")
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
            summary_html="html" in summary_type or not content,
        ))
    feed = {"title": parsed.feed.get("title"), "link": parsed.feed.get("link") or url, "id": parsed.feed.get("id")}
    return feed, entries


def parse(fetched: Fetched) -> tuple[dict[str, Any], list[RawEntry]]:
    if not fetched.body.strip():
        raise SourceError("not a feed (empty response)")
    if _looks_like_json(fetched):
        return parse_json_feed(fetched.body, fetched.url)
    return parse_xml_feed(fetched.body, fetched.url, fetched.content_type)


# -- normalising ---------------------------------------------------------------------------------

def _int_or_none(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


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
    if raw.summary:
        summary = html_to_text(raw.summary) if raw.summary_html else plain_text(raw.summary)
    else:
        summary = html_to_text(raw.content_html)
    if len(summary) > 400:
        summary = summary[:400].rsplit(" ", 1)[0] + "…"
    title = (html_to_text(raw.title) if raw.title_html else plain_text(raw.title)) or summary[:80] or "(untitled)"
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


# -- one source, all sources ---------------------------------------------------------------------

def _current(state: SourceState | None, source: RemoteSource) -> SourceState:
    """The stored state if it belongs to the URL configured now; a changed URL starts afresh
    (no redirect target, ETag or Last-Modified carried over from the old one)."""
    return state if state and state.configured_url == source.url else SourceState(source.name)


def _fetch_and_parse(client: httpx.Client, source: RemoteSource, settings: Fetch, state: SourceState):
    fetched = fetch(client, state.url or source.url, settings, state)
    if fetched.status == 304:
        return fetched, None
    return fetched, parse(fetched)


def _store_entries(storage: Storage, source: RemoteSource, fetched: Fetched, parsed, known: bool, now: datetime) -> str:
    feed, entries = parsed
    if not known:  # source_items rows need their source's row first
        storage.save_source_state(source.name, configured_url=source.url, url=source.url, status="new")
    stored = [(item_id_for(raw), entry_data(raw, source, feed, fetched.url)) for raw in entries]
    for position, (_item_id, data) in enumerate(stored):
        # Undated entries seen in one fetch would share one first-seen second (the W3C validator warns about
        # equal atom:updated values); the feed's order, kept with the row, spaces them a second apart.
        data["seen_order"] = position
    unique = {item_id: data for item_id, data in stored}  # a feed repeating an id: the last wins
    storage.merge_source_items(source.name, [(i, content_hash(d), d) for i, d in unique.items()], now)
    return f"ok ({len(unique)} entries)"


def read_remote(config: Config, storage: Storage) -> tuple[list[Item], list[SourceReport]]:
    """Fetch every configured source concurrently; store what they give; return items from all of them."""
    if not config.sources:
        return [], []
    rows = {source.name: storage.source_state(source.name) for source in config.sources}
    states = {source.name: _current(rows[source.name], source) for source in config.sources}
    with make_client(config.fetch) as client, ThreadPoolExecutor(max_workers=config.fetch.concurrency) as pool:
        futures = {source.name: pool.submit(_fetch_and_parse, client, source, config.fetch, states[source.name])
                   for source in config.sources}
        outcomes = {}
        for name, future in futures.items():
            try:
                outcomes[name] = future.result()
            except SourceError as exc:
                outcomes[name] = exc
            except Exception as exc:  # noqa: BLE001 - one broken source must never stop the others
                outcomes[name] = SourceError(f"{type(exc).__name__}: {exc}")
    items: list[Item] = []
    reports = []
    now = utcnow()
    for source in config.sources:
        outcome, state = outcomes[source.name], states[source.name]
        url = state.url or source.url
        if isinstance(outcome, SourceError):
            ok, status = False, str(outcome)
            values = {"url": url, "etag": state.etag, "last_modified": state.last_modified,
                      "status": f"error: {outcome}"}
        else:
            fetched, parsed = outcome
            if fetched.moved_to:
                log.warning("source %s moved permanently to %s; fetching it from there from now on",
                            source.name, fetched.moved_to)
            ok = True
            status = ("not modified (304)" if parsed is None
                      else _store_entries(storage, source, fetched, parsed, rows[source.name] is not None, now))
            values = {"url": fetched.moved_to or url, "etag": fetched.etag, "last_modified": fetched.last_modified,
                      "status": status}
        kept = select_items([item_from_row(row, source) for row in storage.stored_source_items(source.name)], source)
        storage.save_source_state(source.name, configured_url=source.url, fetched_at=now, item_count=len(kept),
                                  **values)
        if ok:
            log.info("source %s: %s, %d items", source.name, status, len(kept))
        else:
            log.warning("source %s (%s): %s; keeping %d items seen before", source.name, source.url, status, len(kept))
        reports.append(SourceReport(source.name, ok, status, kept))
        items.extend(kept)
    return items, reports


def stored_remote(config: Config, storage: Storage) -> list[Item]:
    """What every source gave at its last fetch, without fetching or writing anything."""
    items: list[Item] = []
    for source in config.sources:
        items.extend(select_items([item_from_row(row, source) for row in storage.stored_source_items(source.name)],
                                  source))
    return items


def canonical_link(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def merge_items(*groups: list[Item]) -> list[Item]:
    """One stream: the first item with a given id or canonical link wins (local content first).

    Only an item's own link identifies it: items that fell back to their source's home
    page share that link without being the same story.
    """
    seen_ids: set[str] = set()
    seen_links: set[str] = set()
    merged = []
    for group in groups:
        for item in group:
            link = canonical_link(item.link) if item.own_link else None
            if item.id in seen_ids or (link is not None and link in seen_links):
                continue
            seen_ids.add(item.id)
            if link is not None:
                seen_links.add(link)
            merged.append(item)
    return merged

"""The one item model every source produces and every output consumes.

Feeds, JSON Feed and digest all read the same ``Item``, so ids, links, dates and
titles cannot disagree between formats.  Text is cleaned of characters XML 1.0
forbids as the item is made, so no output stage can crash on them.
"""

from __future__ import annotations

import hashlib
import html
import mimetypes
import re
import threading
import unicodedata
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Self
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import nh3
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .text import exact_text, html_to_text, plain_text, strip_xml_illegal

__all__ = ["Enclosure", "Image", "Item", "Source", "clean_html", "html_to_text", "is_absolute_http", "newest_first",
           "exact_text", "plain_text", "strip_xml_illegal", "tag_slug", "to_uri"]

_SAFE_SCHEMES = {"http", "https", "mailto"}
_URL_ATTRIBUTES = {"href", "src"}
_ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "cite", "code", "em", "figcaption", "figure",
    "h2", "h3", "h4", "hr", "i", "img", "li", "ol", "p", "pre", "q", "small", "strong",
    "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "u", "ul",
}
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height", "title"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "abbr": {"title"},
    "q": {"cite"},
    "blockquote": {"cite"},
}


# Characters a URI may carry as they are (RFC 3986 reserved + unreserved, and % for existing escapes).
_URI_SAFE = "!#$%&'()*+,/:;=?@[]~-._"


def to_uri(url: str) -> str:
    """The URL form of an IRI: spaces and non-ASCII characters percent-encoded, the host in IDNA.

    Feeds must carry URLs, not IRIs (W3C validator: "IRI found where URL expected"),
    and a space makes a URL invalid.  Existing %-escapes are left alone, so this is idempotent.
    """
    url = url.strip()
    if url.isascii() and " " not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.hostname and not parts.hostname.isascii():
        try:
            netloc = netloc.replace(parts.hostname, parts.hostname.encode("idna").decode("ascii"))
        except UnicodeError:
            netloc = quote(netloc, safe=_URI_SAFE)
    return urlunsplit((parts.scheme, netloc, quote(parts.path, safe=_URI_SAFE), quote(parts.query, safe=_URI_SAFE),
                       quote(parts.fragment, safe=_URI_SAFE)))


@lru_cache(maxsize=4096)  # pure, and asked for every tag of every item by each feed, page and topic
def tag_slug(tag: str) -> str:
    """The one slug of a tag name, used for its feed folder everywhere (``Stem Cells`` -> ``stem-cells``).

    Tags differing only in case, accents or punctuation share a slug, so they share a feed.
    """
    ascii_text = unicodedata.normalize("NFKD", tag).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:60].strip("-")
    return slug or "tag-" + hashlib.sha1(tag.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()[:10]


def is_absolute_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


_cleaning = threading.local()  # .base_url: what the URLs of the HTML being cleaned on this thread are relative to


def _absolute_url(tag: str, attribute: str, value: str) -> str | None:
    """nh3's attribute filter: URLs made absolute against the base of the HTML being cleaned; unsafe ones dropped."""
    if attribute not in _URL_ATTRIBUTES and attribute != "cite":
        return value
    absolute = to_uri(urljoin(_cleaning.base_url, value.strip()))
    scheme = urlsplit(absolute).scheme
    if scheme not in _SAFE_SCHEMES or (scheme != "mailto" and not is_absolute_http(absolute)):
        return None
    return absolute


# Built once: nh3.clean builds its whole rule set on every call (half of cleaning a 3 KB story).
_cleaner = nh3.Cleaner(tags=_ALLOWED_TAGS, attributes=_ALLOWED_ATTRIBUTES, url_schemes=_SAFE_SCHEMES,
                       attribute_filter=_absolute_url, link_rel="noopener noreferrer", strip_comments=True)


def clean_html(html: str, base_url: str) -> str:
    """Sanitise untrusted or authored HTML and make every link and image URL absolute.

    Readers and RSS-to-email services ignore ``xml:base``, so relative URLs must go.
    One nh3 pass does both: the attribute filter resolves URLs and drops unsafe ones.
    """
    _cleaning.base_url = base_url
    return _cleaner.clean(strip_xml_illegal(html)).strip()


# Per distinct set of field names given, one set shared by every instance given exactly those.
_shared_field_sets: dict[frozenset[str], set[str]] = {}


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_post_init(self, context: Any, /) -> None:
        self._share_field_names()

    def _share_field_names(self) -> None:
        """Share the names of the fields given among instances that were given the same ones: pydantic
        keeps a set of them per instance (728 bytes for a story, 20 MB of a 30,000-story run).  Frozen
        models never change it in place (``model_copy`` copies it before an update)."""
        names = self.__pydantic_fields_set__
        object.__setattr__(self, "__pydantic_fields_set__", _shared_field_sets.setdefault(frozenset(names), names))

    def __setstate__(self, state: dict[Any, Any]) -> None:
        """Unpickled (the content cache) they share it too."""
        super().__setstate__(state)
        self._share_field_names()

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy shares it too (pydantic gives each copy a set of its own)."""
        copied = super().model_copy(update=update, deep=deep)
        copied._share_field_names()
        return copied

    @field_validator("*", mode="before")
    @classmethod
    def _xml_safe(cls, value: Any) -> Any:
        if isinstance(value, str):
            return strip_xml_illegal(value)
        if isinstance(value, (list, tuple)):
            return [strip_xml_illegal(v) if isinstance(v, str) else v for v in value]
        return value


def guess_type(url: str) -> str | None:
    """The media type a URL's file extension names, if any."""
    return mimetypes.guess_type(urlsplit(url).path)[0]


class Image(Model):
    url: str
    alt: str
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    type: str | None = Field(default=None, description="image/*; default: from the file extension, else image/jpeg.")
    length: int = Field(default=0, ge=0, description="Size in bytes, for the RSS enclosure (0: unknown).")
    local_file: str | None = Field(default=None, description="The content-relative file published at `url` "
                                   "(set by the content reader, never written in front matter).")

    _uri = field_validator("url")(lambda value: to_uri(value))

    @field_validator("type")
    @classmethod
    def _an_image(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith("image/"):
            raise ValueError(f"{value!r} is not an image type (image/...); put audio, video or documents "
                             "under `enclosure`")
        return value.lower() if value else None

    @model_validator(mode="after")
    def _typed(self) -> Image:
        if self.type is None:
            guessed = guess_type(self.url)
            object.__setattr__(self, "type", guessed if guessed and guessed.startswith("image/") else "image/jpeg")
        return self


class Enclosure(Model):
    """A file that goes with the item (a podcast episode, a PDF): the RSS enclosure, an Atom enclosure link."""

    url: str
    type: str = Field(default="application/octet-stream", pattern=r"^[\w.+-]+/[\w.+-]+$")
    length: int = Field(default=0, ge=0, description="Size in bytes (0: unknown).")
    local_file: str | None = Field(default=None, description="The content-relative file published at `url` "
                                   "(set by the content reader, never written in front matter).")

    _uri = field_validator("url")(lambda value: to_uri(value))


class Source(Model):
    """Where an item came from, credited in the outputs."""

    name: str
    url: str | None = Field(default=None, description="The source's home page.")
    feed_url: str | None = Field(default=None, description="The source's feed (RSS <source url>).")
    id: str | None = Field(default=None, description="The source feed's own id (Atom <source><id>).")


class Item(Model):
    id: str = Field(min_length=1)
    slug: str = Field(min_length=1)
    title: str = Field(min_length=1)
    link: str = Field(min_length=1)
    published: datetime
    updated: datetime | None = None
    author: str | None = None
    summary: str
    content_html: str
    tags: tuple[str, ...] = ()
    image: Image | None = None
    enclosure: Enclosure | None = None
    citation: str | None = None
    source: Source | None = None
    own_link: bool = Field(default=True, description="False when `link` is only the source's home page.")
    local: bool = Field(default=False, description="A story of the content folder: it gets a page of its own "
                                                   "(publish/stories.py); remote items link to their source.")

    @field_validator("published", "updated")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        """Aware, and whole seconds: every format then shows the same instant (RSS cannot carry fractions)."""
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a timezone")
        return value.replace(microsecond=0) if value is not None else None

    _link_uri = field_validator("link")(lambda value: to_uri(value))

    @property
    def full_html(self) -> str:
        """The body as readers get it: the content, then the citation when there is one."""
        if not self.citation:
            return self.content_html
        return f'{self.content_html}\n<p class="citation">{html.escape(self.citation, quote=False)}</p>'

    @property
    def last_modified(self) -> datetime:
        return self.updated or self.published

    @property
    def published_utc(self) -> datetime:
        return self.published.astimezone(timezone.utc)


def newest_first(items: list[Item]) -> list[Item]:
    """Order by publication date, newest first; the id breaks ties so the order is stable."""
    # In UTC: two datetimes sharing one tzinfo compare by wall clock, ignoring fold (DST's repeated hour).
    return sorted(items, key=lambda item: (item.published_utc, item.id), reverse=True)


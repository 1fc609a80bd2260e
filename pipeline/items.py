"""The one item model every source produces and every output consumes.

Feeds, JSON Feed and digest all read the same ``Item``, so ids, links, dates and
titles cannot disagree between formats.  Text is cleaned of characters XML 1.0
forbids as the item is made, so no output stage can crash on them.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone
from typing import Any

import nh3
from pydantic import BaseModel, ConfigDict, Field, field_validator
from urllib.parse import urljoin, urlsplit

# Characters not allowed in XML 1.0 documents (controls except tab, LF, CR; lone surrogates; U+FFFE/FFFF).
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

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


def strip_xml_illegal(text: str) -> str:
    return _XML_ILLEGAL.sub("", text)


def is_absolute_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def clean_html(html: str, base_url: str) -> str:
    """Sanitise untrusted or authored HTML and make every link and image URL absolute.

    Readers and RSS-to-email services ignore ``xml:base``, so relative URLs must go.
    One nh3 pass does both: the attribute filter resolves URLs and drops unsafe ones.
    """

    def resolve(tag: str, attribute: str, value: str) -> str | None:
        if attribute not in _URL_ATTRIBUTES and attribute != "cite":
            return value
        absolute = urljoin(base_url, value.strip())
        scheme = urlsplit(absolute).scheme
        if scheme not in _SAFE_SCHEMES or (scheme != "mailto" and not is_absolute_http(absolute)):
            return None
        return absolute

    return nh3.clean(
        strip_xml_illegal(html),
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes=_SAFE_SCHEMES,
        attribute_filter=resolve,
        link_rel="noopener noreferrer",
        strip_comments=True,
    ).strip()


def plain_text(html_or_text: str) -> str:
    """Titles and summaries are plain text: drop any markup, keep the words."""
    text = nh3.clean(strip_xml_illegal(html_or_text), tags=set(), strip_comments=True)
    # nh3 escapes what it keeps; titles are stored unescaped and escaped by each output.
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&#39;", "'")
    text = text.replace("&amp;", "&")
    return " ".join(text.split())


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _xml_safe(cls, value: Any) -> Any:
        if isinstance(value, str):
            return strip_xml_illegal(value)
        if isinstance(value, (list, tuple)):
            return [strip_xml_illegal(v) if isinstance(v, str) else v for v in value]
        return value


class Image(Model):
    url: str
    alt: str
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    type: str = "image/jpeg"
    length: int = Field(default=0, ge=0, description="Size in bytes, for the RSS enclosure.")


class Source(Model):
    """Where an item came from, credited in the outputs."""

    name: str
    url: str | None = None


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
    citation: str | None = None
    source: Source | None = None

    @field_validator("published", "updated")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a timezone")
        return value

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
    return sorted(items, key=lambda item: (item.published_utc, item.id), reverse=True)


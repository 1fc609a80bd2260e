"""What readers see: the site, the organisation and its footer, paths, feeds, the digest, topics."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urljoin

from pydantic import Field, field_validator, model_validator

from .base import (
    HEADER_UNSAFE,
    LANGUAGE_TAG,
    Strict,
    absolute_url,
    check_fields,
    header_url,
    iana_timezone,
    optional_absolute_url,
)

# A relative path that urljoin would only append to base_url (see Site.url).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_~%/-]*(?:\.[A-Za-z0-9_~%/-]+)*")


@lru_cache(maxsize=64)
def _plain_base(base_url: str) -> bool:
    """A base URL with no query, fragment, empty or dot segment: urljoin only appends a plain path to it."""
    rest = base_url.split("://", 1)[-1]
    return (base_url.endswith("/") and not any(c in base_url for c in "?#")
            and "//" not in rest and "/./" not in rest and "/../" not in rest)


class Logo(Strict):
    url: str
    """Absolute URL of the logo image (the RSS image, the Atom logo, the digest masthead)."""
    alt: str
    """The logo's alt text (shown, styled, when images are off)."""
    width: int = Field(gt=0)
    """The logo's width in pixels as shown in the digest; must match the file's proportions."""
    height: int = Field(gt=0)
    """The logo's height in pixels as shown in the digest; must match the file's proportions."""
    file: Path | None = Field(
        default=None,
        description="A local image file published as the logo: copied to the output folder at the URL's path "
                    "under site.base_url.",
    )

    _url = field_validator("url")(absolute_url)



class Site(Strict):
    title: str
    """The feeds' title and the digest's heading."""
    base_url: str = Field(description="Where the output folder is published; ends with /.")
    language: str = "en-us"
    """Language tag of the feeds, digest and pages, e.g. en-us (en_US is normalised)."""
    description: str
    """The feeds' subtitle (RSS description, Atom subtitle, JSON Feed description)."""
    logo: Logo | None = None
    """The wide logo: RSS image, Atom logo and digest masthead; null for none."""
    icon: str | None = None
    """Favicon URL: the Atom icon and the JSON Feed favicon."""
    feed_icon: str | None = Field(
        default=None,
        description="Square image (512x512 recommended) for the JSON Feed `icon`; the wide logo is not one.",
    )
    id_prefix: str | None = Field(
        default=None,
        description="Prefix of item ids made from slugs (default: base_url); set once and never change it.",
    )
    item_link: str | None = Field(
        default=None,
        description="Template of an item's permalink when its file gives no `link`, e.g. "
                    "https://example.org/news/{slug}; default: the story's own page, {base_url}stories/{slug}/.",
    )
    per_page: int = Field(default=20, gt=0, le=1000,
                          description="Stories per page of the story index (stories/) and of each tag page.")

    _base = field_validator("base_url")(absolute_url)
    _item_link = field_validator("item_link")(
        lambda value: None if value is None else check_fields(value, {"base_url", "slug"}))
    _feed_icon = field_validator("feed_icon")(lambda value: None if value is None else absolute_url(value))

    @field_validator("base_url")
    @classmethod
    def _ends_with_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @field_validator("language")
    @classmethod
    def _language_tag(cls, value: str) -> str:
        tag = value.replace("_", "-").lower()
        if not LANGUAGE_TAG.match(tag):
            raise ValueError("must be a language tag such as en-us")
        return tag

    @model_validator(mode="after")
    def _local_logo_under_base(self) -> Site:
        if self.logo is not None and self.logo.file is not None and not self.logo.url.startswith(self.base_url):
            raise ValueError("logo.url: must lie under site.base_url when logo.file is set (it is published there)")
        return self

    @property
    def item_id_prefix(self) -> str:
        return self.id_prefix if self.id_prefix is not None else self.base_url

    def url(self, path: str) -> str:
        # A plain relative path (no scheme, dot segment, query or leading slash) joins by concatenation:
        # base_url ends with "/", and urljoin costs 20 µs a call, 40,000 calls in a 10,000-story build.
        if _plain_base(self.base_url) and _PLAIN_PATH.fullmatch(path) and "/." not in path and "//" not in path:
            return self.base_url + path
        return urljoin(self.base_url, path)



class Social(Strict):
    facebook: str | None = None
    """Facebook page URL, linked with an icon in the digest footer."""
    x: str | None = None
    """X (formerly Twitter) profile URL, linked with an icon in the digest footer."""
    instagram: str | None = None
    """Instagram profile URL, linked with an icon in the digest footer."""
    youtube: str | None = None
    """YouTube channel URL, linked with an icon in the digest footer."""

    @field_validator("*")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return None if value is None else absolute_url(value)

    LABELS: ClassVar[dict[str, str]] = {"facebook": "Facebook", "x": "X (formerly Twitter)", "instagram": "Instagram",
                                        "youtube": "YouTube"}

    def links(self) -> list[tuple[str, str]]:
        return [(self.LABELS[name], url) for name, url in self if url]

    def icons(self) -> list[tuple[str, str, str]]:
        """(name, label, url) per network: the digest shows templates/icons/<name>.png, published as
        icons/<name>.png."""
        return [(name, self.LABELS[name], url) for name, url in self if url]



class AboutParagraph(Strict):
    """One paragraph the site and archive pages show under its own heading (e.g. "About the Society")."""

    heading: str = Field(description='The paragraph\'s heading, e.g. "About the Riverside Food Bank".')
    text: str = Field(description="The paragraph, plain text.")



# Keys of the first, US- and MS-specific organisation model, and what replaced each.
RETIRED_ORGANISATION_KEYS = {
    "ein": 'replaced by organisation.legal (free text, e.g. "EIN 13-5661935." or "Registered charity no. 1234567.")',
    "about_ms": "replaced by organisation.about (a list of {heading, text} paragraphs)",
    "about_society": "replaced by organisation.about (a list of {heading, text} paragraphs)",
}



class Organisation(Strict):
    """Who publishes: every field is shown where the docs say (digest footer, site and archive pages)."""

    name: str = Field(description="Full name, as the footer and the pages write it.")
    short_name: str | None = Field(default=None, description="Shorter name for the masthead and the intro line.")
    website: str = Field(description="The organisation's own website (absolute URL).")
    phone: str | None = Field(default=None, description="Phone number shown (and linked) in the footer.")
    postal_address: str | None = Field(
        default=None, description="The footer's postal address; required to send (CAN-SPAM): without it send "
                                  "and run refuse to send, even with --force."
    )
    founded: int | None = Field(default=None, ge=1000, le=2100,
                                description='Year founded; the footer says "founded in <year>".')
    mission: str | None = Field(default=None, description="One-line mission statement, shown in the footer.")
    copyright: str | None = Field(default=None, description='The (c) line, e.g. "© 2024 Riverside Food Bank."; '
                                                            "default: © and the name.")
    legal: str | None = Field(default=None, description="Legal line after the (c) line, free text: a charity or "
                                                        "company number, a tax id (EIN), ...")
    about: list[AboutParagraph] = Field(default_factory=list, description="Paragraphs about the organisation (and "
                                        "its cause) on the site and archive pages.")
    social: Social = Field(default=Social(), description="Links to the organisation's social media pages.")

    _website = field_validator("website")(absolute_url)

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, replacement in RETIRED_ORGANISATION_KEYS.items():
                if key in data:
                    raise ValueError(f"{key}: no longer a setting; {replacement}")
        return data

    @property
    def display_name(self) -> str:
        return self.short_name or self.name

    @property
    def copyright_line(self) -> str:
        """The (c) line with the legal line: "© 2024 Name, a nonprofit. EIN 13-5661935."."""
        parts = [(self.copyright or f"© {self.name}").strip(), (self.legal or "").strip()]
        return " ".join(part for part in parts if part)



class Paths(Strict):
    content: Path = Path("content")
    """Folder of the news items (content/*.md) and the images they name."""
    templates: Path = Path("templates")
    """Folder of the Jinja2 templates and stylesheets of the digest and pages."""
    output: Path = Path("public")
    """Folder the feeds, digest and pages are written to; publish it at site.base_url."""
    state: Path = Path(".state")
    """Folder of the state: SQLite database, caches, run lock, generated secret."""



class Topics(Strict):
    """Which tags get their own feeds (public/tags/<slug>/...)."""

    enabled: bool = True
    """Make per-tag feeds under tags/<slug>/ (false: none)."""
    allow: list[str] | None = Field(
        default=None, description="Only these tags get feeds (matched by slug); default: every tag with min_items.")
    min_items: int = Field(default=2, ge=1, description="A tag needs this many items for a feed of its own.")
    archive: bool = Field(default=True, description="With feeds.archive, a topic's older items stay reachable in "
                                                    "RFC 5005 archive documents of its own (false: the window only).")
    archive_text: Literal["summary", "full"] = Field(
        default="summary", description="What a topic's archive pages carry of each story: its summary and link "
                                       "(the full text is in the main archive and on its page), or its full text.")



class Feeds(Strict):
    limit: int = Field(default=20, gt=0, description="How many of the newest items the feeds carry.")
    author_email: str | None = Field(
        default=None, description="RSS <author> needs an address; without it, dc:creator carries the name."
    )
    topics: Topics = Topics()
    """Per-tag feeds: which tags get their own RSS, Atom and JSON Feed."""
    archive: bool = Field(default=True, description="Older items stay reachable in RFC 5005 archive documents.")
    ttl: int | None = Field(
        default=None, gt=0, description="Minutes readers may cache a feed; default: the shortest schedule interval.")
    websub_hub: str | None = Field(default=None, description="WebSub hub to advertise and ping after a feed changes.")
    websub_timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds per hub ping.")

    _hub = field_validator("websub_hub")(lambda value: None if value is None else absolute_url(value))



class DigestSettings(Strict):
    limit: int = Field(default=10, gt=0)
    """How many items one digest (one edition) shows at most."""
    subject: str = Field(
        default="{site_title}: {lead_title}",
        description="Subject template; fields: site_title, lead_title, date, count.",
    )
    preheader: str | None = None
    """Hidden inbox preview text (default: the lead item's summary)."""
    intro: str = Field(
        default="The latest news from the {organisation}.",
        description="Line under the masthead; fields: organisation, count.",
    )
    unsubscribe_url: str | None = Field(
        default=None,
        description="Public URL of the unsubscribe endpoint (pipeline.web); default <base_url>unsubscribe.",
    )
    preferences_url: str | None = Field(
        default=None, description="Where the footer's \"Manage preferences\" link goes instead of the web app's "
                                  "signed preferences page; set it only to use another preference centre.")
    timezone: str = Field(default="UTC", description="IANA timezone the edition date is shown in.")

    _preferences = field_validator("preferences_url")(optional_absolute_url)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return iana_timezone(value)

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if HEADER_UNSAFE.search(value):
            raise ValueError("must be a single line")
        return check_fields(value, {"site_title", "lead_title", "date", "count"})

    @field_validator("intro")
    @classmethod
    def _intro_fields(cls, value: str) -> str:
        return check_fields(value, {"organisation", "count"})

    @field_validator("unsubscribe_url")
    @classmethod
    def _unsubscribe_url(cls, value: str | None) -> str | None:
        return None if value is None else header_url(value)



class Topic(Strict):
    """A topic readers can choose: the items it covers are those with one of its tags."""

    description: str = ""
    """What the topic covers, shown beside its checkbox."""
    tags: list[str] = Field(min_length=1, description="Item tags this topic covers (matched by slug, as the tag "
                                                       "feeds are: case, accents and punctuation do not matter).")
    label: str | None = Field(default=None, description="How forms name it (default: the topic's name).")

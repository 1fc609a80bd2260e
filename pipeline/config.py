"""Typed configuration loaded from ``config.yaml``.

Everything the templates show about the organisation lives here, not in template
text, so another organisation can use the pipeline by editing one file.
Relative paths are resolved against the folder holding the config file.
"""

from __future__ import annotations

import hashlib
import re
from email.utils import formataddr, parseaddr
from pathlib import Path
from string import Formatter
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urljoin, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .branding import Branding
from .errors import ConfigError
from .yaml_keys import repeated_key

DEFAULT_CONFIG = "config.yaml"

_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")
_HEADER_UNSAFE = re.compile(r"[\r\n]")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _absolute_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be an absolute http(s) URL")
    return value


_URL_IN_HEADER_UNSAFE = re.compile(r"[\s<>,\"\\]")


def _header_url(value: str) -> str:
    """A URL that goes into a header (List-Unsubscribe): absolute, ASCII (an IDN host becomes its
    A-label, other characters are percent-encoded), and nothing that could end the URI or add another."""
    _absolute_url(value)
    if not value.isascii():
        import idna

        parts = urlsplit(value)
        try:
            host = idna.encode(parts.hostname or "", uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"host cannot be written in ASCII: {exc}") from None
        netloc = host + (f":{parts.port}" if parts.port else "")
        value = urlunsplit((parts.scheme, netloc, quote(parts.path, safe="/%"), quote(parts.query, safe="=&%"),
                            quote(parts.fragment, safe="%")))
    if _URL_IN_HEADER_UNSAFE.search(value):
        raise ValueError("must not contain spaces, line breaks, <, >, commas or quotes")
    return value


def _check_fields(template: str, allowed: set[str]) -> str:
    """A str.format template may only name the fields it will be given."""
    try:
        fields = [(field, spec, conversion) for _text, field, spec, conversion in Formatter().parse(template)
                  if field is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc}") from None
    for field, spec, conversion in fields:
        if spec or conversion or "." in field or "[" in field:
            raise ValueError(f"{{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}: "
                             "write plain fields such as {" + sorted(allowed)[0] + "}, without formats or attributes")
    names = {field for field, _spec, _conversion in fields}
    unknown = sorted(names - allowed)
    if "" in names:
        raise ValueError("use named fields, e.g. {site_title}")
    if unknown:
        raise ValueError(f"unknown field {{{unknown[0]}}}; use {', '.join('{' + n + '}' for n in sorted(allowed))}")
    return template


def _address_header(value: str) -> str:
    """"Name <address>" with a valid address; an internationalised domain becomes its A-label."""
    from .mail.addresses import AddressError, normalise_address

    name, address = parseaddr(value)
    if not address or address.count("@") != 1:
        raise ValueError("must contain an email address")
    try:
        ascii_form = normalise_address(address)
    except AddressError as exc:
        raise ValueError(str(exc)) from None
    if not ascii_form.isascii():
        raise ValueError(f"{address!r}: the part before @ must be ASCII in a sender or list address")
    local, domain = address.rsplit("@", 1)
    ascii_domain = ascii_form.rsplit("@", 1)[1]
    if domain == ascii_domain:
        return value  # as written
    rewritten = f"{local}@{ascii_domain}"  # the local part keeps its case
    return formataddr((name, rewritten)) if name else rewritten


def _optional_absolute_url(value: str | None) -> str | None:
    return None if value is None else _absolute_url(value)


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

    _url = field_validator("url")(_absolute_url)


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

    _base = field_validator("base_url")(_absolute_url)
    _item_link = field_validator("item_link")(
        lambda value: None if value is None else _check_fields(value, {"base_url", "slug"}))
    _feed_icon = field_validator("feed_icon")(lambda value: None if value is None else _absolute_url(value))

    @field_validator("base_url")
    @classmethod
    def _ends_with_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @field_validator("language")
    @classmethod
    def _language_tag(cls, value: str) -> str:
        tag = value.replace("_", "-").lower()
        if not _LANGUAGE.match(tag):
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
        return None if value is None else _absolute_url(value)

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
_RETIRED_ORGANISATION_KEYS = {
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

    _website = field_validator("website")(_absolute_url)

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, replacement in _RETIRED_ORGANISATION_KEYS.items():
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

    _hub = field_validator("websub_hub")(lambda value: None if value is None else _absolute_url(value))


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

    _preferences = field_validator("preferences_url")(_optional_absolute_url)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return _iana_timezone(value)

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if _HEADER_UNSAFE.search(value):
            raise ValueError("must be a single line")
        return _check_fields(value, {"site_title", "lead_title", "date", "count"})

    @field_validator("intro")
    @classmethod
    def _intro_fields(cls, value: str) -> str:
        return _check_fields(value, {"organisation", "count"})

    @field_validator("unsubscribe_url")
    @classmethod
    def _unsubscribe_url(cls, value: str | None) -> str | None:
        return None if value is None else _header_url(value)


class Smtp(Strict):
    host: str = "127.0.0.1"
    """The SMTP server (relay) to send through."""
    port: int = Field(default=587, gt=0, lt=65536)
    """Its port: 587 for STARTTLS, 465 for implicit TLS."""
    security: Literal["starttls", "tls", "none"] = "starttls"
    """starttls, tls (implicit, port 465) or none (loopback only)."""
    username: str | None = None
    """Login name; null: no authentication. The password comes from password_env."""
    password_env: str = Field(default="PIPELINE_SMTP_PASSWORD",
                              description="Name of the environment variable holding the password.")
    ca_file: Path | None = Field(default=None, description="Extra CA certificate(s) to trust (PEM).")
    timeout: float = Field(default=30.0, gt=0, description="Seconds for each network operation.")
    data_timeout: float = Field(default=600.0, gt=0, description="Seconds to wait for the server's reply after "
                                                                 "a message's body (RFC 5321 suggests 10 minutes).")
    concurrency: int = Field(default=2, ge=1, le=32, description="Parallel SMTP connections.")
    rate_limit: float = Field(default=0.0, ge=0, description="Messages per second across connections; 0: no limit.")
    max_attempts: int = Field(default=5, ge=1, le=20, description="No longer used: a temporary "
                              "refusal is never retried inside the sending loop; see retry_delay and retry_window.")
    retry_delay: float = Field(default=2.0, ge=0, description="Seconds from a temporary refusal (4xx, dropped "
                               "connection) to the message's next try; doubles per try, at most max_retry_delay.")
    max_retry_delay: float = Field(default=3600.0, gt=0, description="The longest wait between two tries of one "
                                   "message, in seconds.")
    retry_window: float = Field(default=600.0, ge=0, description="Seconds after a send starts during which it "
                                "keeps going for deferred messages that come due (greylisting); later ones wait "
                                "for the next run or the retry job. 0: never wait.")
    defer_delay: float = Field(default=300.0, ge=0, description="No longer used: every temporary refusal "
                               "follows the retry_delay schedule.")
    retry_for_hours: float = Field(default=72.0, gt=0, description="Give a message up as failed when it has been "
                                                                    "refused temporarily for this long.")


class Dkim(Strict):
    """DKIM signing of each message after personalisation (off unless configured; most relays sign)."""

    selector: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """DKIM selector: the key is published at <selector>._domainkey.<domain>."""
    domain: str = Field(pattern=r"^[A-Za-z0-9.-]+$")
    """The signing domain (d=), normally the From address's domain."""
    key_file: Path = Field(description="PEM private key (RSA) or base64 raw ed25519 key; never in config.yaml itself.")
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    """rsa-sha256, or ed25519-sha256 (publish an RSA key too if you use it)."""


class Delivery(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str = Field(alias="from", description='Sender, e.g. "Name <news@example.org>".')
    reply_to: str | None = None
    """Reply-To header: an address read by a person (default: none)."""
    list_id: str = Field(description='List-Id, e.g. "News <news.example.org>".')
    unsubscribe_mailto: str = Field(description="Address for mailto: unsubscribe requests (handled by the operator).")
    secret_env: str = Field(default="PIPELINE_SECRET",
                            description="Environment variable with the secret that signs unsubscribe tokens.")
    edition: Literal["new", "latest"] = Field(
        default="new", description="new: items not sent before; latest: the newest digest.limit items.")
    transport: Literal["file", "smtp"] = "file"
    """file: each message written as an .eml file in outbox; smtp: sent through delivery.smtp."""
    outbox: Path = Path("outbox")
    """Folder of the file transport: outbox/<edition>/<subscriber>.eml."""
    batch_size: int = Field(default=200, ge=1, le=10000)
    """Ledger rows a sender claims at a time."""
    lease_seconds: float = Field(default=60.0, gt=0, description="Where workers share a PostgreSQL database: a "
                                 "claimed message whose worker stopped renewing it for this long is sent by another.")
    smtp: Smtp = Smtp()
    """The SMTP relay, used when transport is smtp."""
    # Issue 14: headers mailbox providers read, and optional DKIM signing.
    feedback_id: str | None = Field(
        default=None, description="Sender id for Feedback-ID (Gmail Postmaster Tools); default the From domain.")
    list_help: str | None = Field(default=None, description="List-Help URL; default the site's home page.")
    dkim: Dkim | None = None
    """Sign each message with DKIM after personalising it (null: off; most relays sign)."""

    @field_validator("feedback_id", "list_help")
    @classmethod
    def _ascii_header(cls, value: str | None) -> str | None:
        if value is not None and (not value.isascii() or _HEADER_UNSAFE.search(value) or ":" in value
                                  and not value.startswith(("http://", "https://", "mailto:"))):
            raise ValueError("must be one line of ASCII (no ':' in a Feedback-ID sender id)")
        return value

    @field_validator("from_", "reply_to", "list_id", "unsubscribe_mailto")
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        if value is not None and _HEADER_UNSAFE.search(value):
            raise ValueError("must be a single line (no CR or LF)")
        return value

    @field_validator("from_", "reply_to")
    @classmethod
    def _valid_address(cls, value: str | None) -> str | None:
        return None if value is None else _address_header(value)

    @field_validator("unsubscribe_mailto")
    @classmethod
    def _bare_address(cls, value: str) -> str:
        address = _address_header(value)
        if "<" in address or " " in address:
            raise ValueError("must be a bare address, e.g. unsubscribe@example.org")
        return address

    @field_validator("list_id")
    @classmethod
    def _list_id(cls, value: str) -> str:
        match = re.search(r"<([^<>\s]+)>\s*$", value)
        if not match or not match.group(1).isascii() or "." not in match.group(1):
            raise ValueError('must end with the list\'s id in angle brackets, e.g. "News <news.example.org>"')
        return value

    @property
    def from_address(self) -> str:
        return parseaddr(self.from_)[1]

    @property
    def sending_domain(self) -> str:
        return self.from_address.rsplit("@", 1)[1].lower()


class RemoteSource(Strict):
    name: str = Field(default="", description="Short name, shown in logs and `pipeline sources`; keep it stable "
                                              "(default: made from the URL's host and path).")
    url: str
    """The feed's URL: RSS 0.9x/1.0/2.0, Atom 0.3/1.0 or JSON Feed 1.x."""
    tags: list[str] = Field(default_factory=list, description="Keep only items with one of these tags.")
    max_items: int = Field(default=20, ge=1, le=1000)
    """Keep only the newest this many items of this source."""
    author: str | None = Field(default=None, description="Author for items that name none.")
    credit: str | None = Field(default=None,
                               description="How the outputs credit the source (default: the feed's title).")

    _url = field_validator("url")(_absolute_url)

    @field_validator("name")
    @classmethod
    def _slug_name(cls, value: str) -> str:
        if value and not re.match(r"^[a-z0-9][a-z0-9_-]*$", value):
            raise ValueError("use lower-case letters, digits, - and _")
        return value

    @model_validator(mode="after")
    def _default_name(self) -> RemoteSource:
        if not self.name:
            parts = urlsplit(self.url)
            slug = re.sub(r"[^a-z0-9]+", "-", f"{parts.hostname or ''}{parts.path}".lower()).strip("-")
            if len(slug) > 60:  # cut, but keep names of similar long URLs apart
                digest = hashlib.sha1(self.url.encode("utf-8")).hexdigest()[:8]
                slug = f"{slug[:51].rstrip('-')}-{digest}"
            object.__setattr__(self, "name", slug or "source")
        return self


class Fetch(Strict):
    timeout: float = Field(default=15.0, gt=0, description="Seconds for the whole fetch of one source.")
    max_bytes: int = Field(default=5_000_000, gt=0, description="Largest (decompressed) feed accepted.")
    concurrency: int = Field(default=4, ge=1, le=32)
    """Sources fetched at once."""
    user_agent: str = "newsletter-pipeline/0.1 (+https://pypi.org/project/newsletter-pipeline/)"
    """User-Agent header sent with every fetch; name a contact URL."""


def _iana_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r} (use an IANA name such as America/New_York)") from None
    return value


class Job(Strict):
    cron: str = Field(description='Five-field crontab expression, e.g. "0 9 * * mon".')
    timezone: str = Field(default="UTC", description="IANA timezone the expression is read in.")
    action: Literal["run", "feeds", "send", "retry", "bounces"] = Field(
        default="run", description="run: feeds, digest and sending; feeds: feeds and digest only, no email; "
                                   "send: a new edition if there is one, then whatever is due; retry: only "
                                   "messages already queued and due (deferred ones, interrupted sends); "
                                   "bounces: read the bounce mailbox.")
    misfire_grace_time: int | None = Field(default=None, ge=1, description="Overrides schedule.misfire_grace_time.")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return _iana_timezone(value)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        """Checked on its own (the zone cannot make an expression valid), so the error names
        ``schedule.jobs.<name>.cron``."""
        try:
            CronTrigger.from_crontab(value, timezone=ZoneInfo("UTC"))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid crontab expression ({exc})") from None
        return value

    def trigger(self):
        try:
            return CronTrigger.from_crontab(self.cron, timezone=ZoneInfo(self.timezone))
        except ValueError as exc:
            raise ValueError(f"cron: {self.cron!r} is not a valid crontab expression ({exc})") from None


class Schedule(Strict):
    misfire_grace_time: int = Field(
        default=3600, ge=1, description="Seconds after a missed time within which one catch-up run still happens.")
    jobs: dict[str, Job] = Field(default_factory=dict)
    """Scheduled jobs by name, for `pipeline serve` and `pipeline run --job NAME`."""

    @field_validator("jobs")
    @classmethod
    def _job_names(cls, value: dict[str, Job]) -> dict[str, Job]:
        for name in value:
            if not re.match(r"^[a-z0-9][a-z0-9_-]*$", name):
                raise ValueError(f"job name {name!r}: use lower-case letters, digits, - and _")
        return value


# -- bounces, complaints and the suppression list -------------------------------------------------

class BouncePolicy(Strict):
    soft_limit: int = Field(default=3, ge=1, description="Soft bounces within soft_window_days that suppress.")
    soft_window_days: float = Field(default=30.0, gt=0)
    """Days in which soft_limit soft bounces suppress an address."""


class Mailbox(Strict):
    """The mailbox bounces, complaints and mailto unsubscribes are delivered to, read over IMAP or POP3."""

    protocol: Literal["imap", "pop3"] = "imap"
    """imap or pop3."""
    host: str
    """The mail server holding the bounce mailbox."""
    port: int | None = Field(default=None, gt=0, lt=65536, description="Default: 993/995 with tls, else 143/110.")
    security: Literal["tls", "starttls", "none"] = "tls"
    """tls (implicit), starttls or none (loopback only)."""
    username: str
    """Login name of the bounce mailbox."""
    password_env: str = "PIPELINE_BOUNCE_PASSWORD"
    """Name of the environment variable holding its password."""
    folder: str = "INBOX"
    """IMAP folder to read."""
    ca_file: Path | None = None
    """Extra CA certificate(s) to trust for the mail server (PEM)."""
    timeout: float = Field(default=30.0, gt=0)
    """Seconds for each network operation."""

    @property
    def effective_port(self) -> int:
        if self.port:
            return self.port
        if self.protocol == "imap":
            return 993 if self.security == "tls" else 143
        return 995 if self.security == "tls" else 110


class Receiver(Strict):
    host: str = "127.0.0.1"
    """Address `pipeline serve-bounces` listens on."""
    port: int = Field(default=2525, ge=0, lt=65536)
    """Port it listens on (forward port 25 of the bounce domain's MX here)."""
    max_size: int = Field(default=10_000_000, gt=0)
    """Largest message accepted, in bytes."""
    tls_cert: Path | None = Field(default=None, description="PEM certificate (chain) to offer STARTTLS with.")
    tls_key: Path | None = Field(default=None, description="Its private key (PEM).")

    @model_validator(mode="after")
    def _both_or_neither(self) -> Receiver:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self


class SesWebhook(Strict):
    enabled: bool = False
    """Answer Amazon SES notifications (via SNS) at /webhooks/ses."""
    cert_url_pattern: str = Field(
        default=r"^https://sns\.[a-z]{2}(-gov)?-[a-z]+-[0-9]+\.amazonaws\.com(\.cn)?/",
        description="SigningCertURL and SubscribeURL must match; they are fetched over verified HTTPS.")
    ca_file: Path | None = Field(default=None, description="CA bundle trusted for those fetches (default: system).")
    topic_arns: list[str] = Field(default_factory=list, description="The SNS topics your SES identities notify "
                                  "(arn:aws:sns:<region>:<account>:<topic>); required when enabled: only these "
                                  "are accepted and only their subscriptions confirmed.")

    @model_validator(mode="after")
    def _topics_required(self) -> SesWebhook:
        if self.enabled and not self.topic_arns:
            raise ValueError("topic_arns: required when the SES webhook is enabled: list the ARNs of the SNS "
                             "topics your SES identities notify; without them anyone's topic could post bounces")
        for arn in self.topic_arns:
            if not re.fullmatch(r"arn:aws(-cn|-us-gov)?:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]{1,256}", arn):
                raise ValueError(f"topic_arns: {arn!r} is not an SNS topic ARN "
                                 "(arn:aws:sns:<region>:<account>:<topic>)")
        return self


class PostmarkWebhook(Strict):
    username: str
    """HTTP Basic user name Postmark's webhook URL carries."""
    password_env: str = "PIPELINE_POSTMARK_WEBHOOK_PASSWORD"
    """Name of the environment variable holding the matching password."""


class SendgridWebhook(Strict):
    public_key_env: str = "PIPELINE_SENDGRID_WEBHOOK_KEY"
    """Name of the environment variable holding SendGrid's verification key (base64)."""


class MailgunWebhook(Strict):
    signing_key_env: str = "PIPELINE_MAILGUN_SIGNING_KEY"
    """Name of the environment variable holding Mailgun's webhook signing key."""


class Webhooks(Strict):
    ses: SesWebhook = SesWebhook()
    """Amazon SES bounce and complaint notifications through SNS (/webhooks/ses)."""
    postmark: PostmarkWebhook | None = None
    """Postmark's bounce and complaint webhooks (/webhooks/postmark); null: off (404)."""
    sendgrid: SendgridWebhook | None = None
    """SendGrid's signed Event Webhook (/webhooks/sendgrid); null: off (404)."""
    mailgun: MailgunWebhook | None = None
    """Mailgun's webhooks (/webhooks/mailgun); null: off (404)."""
    max_age: int = Field(default=600, gt=0, description="Seconds a signed webhook timestamp stays acceptable "
                                                         "(and how far in the future an event may be dated).")
    event_max_age_hours: float = Field(default=72, gt=0, description="An event the relay dates longer ago than "
                                                                     "this is not counted (relays retry for up to "
                                                                     "72 hours).")


class Bounces(Strict):
    domain: str | None = Field(
        default=None, description="VERP: envelope sender bounces+<token>@<domain>; null keeps the From address.")
    local_part: str = Field(default="bounces", pattern=r"^[a-z0-9][a-z0-9._-]*$")
    """The part of the VERP return path before the +."""
    trusted_authserv_ids: list[str] = Field(default_factory=list, description="Receiving mail servers (their "
                                            "authserv-id, the first word of the Authentication-Results headers "
                                            "they add) whose DMARC verdict is believed: a mail to the unsubscribe "
                                            "address without a token is honoured only on their dmarc=pass.")
    policy: BouncePolicy = BouncePolicy()
    """When bounces suppress an address."""
    mailbox: Mailbox | None = None
    """The bounce mailbox `pipeline bounces fetch` reads (null: none)."""
    receiver: Receiver = Receiver()
    """The SMTP receiver `pipeline serve-bounces` runs for the bounce domain."""
    webhooks: Webhooks = Webhooks()
    """Relay webhooks answered by the web app under /webhooks/."""

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$",
                                              value.lower()):
            raise ValueError("must be a domain name such as bounces.example.org")
        return value.lower() if value else value


class Logging(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Least severe log level written; -v and -vv override it."""
    format: Literal["text", "json"] = "text"
    """text, or json for one JSON object per line; --log-format overrides it."""
    file: Path | None = Field(default=None, description="Also write log lines to this file.")


class Topic(Strict):
    """A topic readers can choose: the items it covers are those with one of its tags."""

    description: str = ""
    """What the topic covers, shown beside its checkbox."""
    tags: list[str] = Field(min_length=1, description="Item tags this topic covers (matched by slug, as the tag "
                                                       "feeds are: case, accents and punctuation do not matter).")
    label: str | None = Field(default=None, description="How forms name it (default: the topic's name).")


class Signup(Strict):
    """Self-service signup with double opt-in, and what protects it from bots (docs/how-to/signup-on-your-site.md)."""

    web_url: str | None = Field(default=None, description="Public URL of the web app (default: the folder of "
                                                          "digest.unsubscribe_url, i.e. <base_url>).")
    consent_text: str = Field(default="Yes, email me {site_title}. I can unsubscribe at any time.",
                              description="The consent line shown by the form; recorded with every signup.")
    confirm_hours: float = Field(default=48.0, gt=0, description="How long a confirmation link works.")
    resend_minutes: float = Field(default=60.0, ge=0, description="The form mails one address at most "
                                                                  "this often (a confirmation, or the note that "
                                                                  "it already receives the list).")
    min_fill_seconds: float = Field(default=3.0, ge=0, description="Forms sent faster than this are refused.")
    max_form_age_hours: float = Field(default=24.0, gt=0, description="Signed form timestamps older than this "
                                                                      "are asked to submit again.")
    ip_limit: int = Field(default=10, ge=1, description="Signups accepted per client IP per hour.")
    address_limit: int = Field(default=3, ge=1, description="Signups accepted per address per hour.")
    confirmations_per_hour: int = Field(default=200, ge=1, description="Mails the form sends per hour, in "
                                                                       "all (the list-bombing brake); the rest are "
                                                                       "dropped.")
    blocked_domains: list[str] = Field(default_factory=list, description="Address domains refused (and "
                                                                         "their subdomains).")
    check_deliverability: bool = Field(default=True, description="Look the domain up in DNS before mailing; "
                                       "only a definite answer that it takes no mail (NXDOMAIN, null MX, no MX "
                                       "or A) refuses.")
    deliverability_timeout: float = Field(default=5.0, gt=0, description="Seconds for that DNS lookup.")
    client_ip_header: str | None = Field(default=None, description="Removed: list your proxies in "
                                                                   "web.trusted_proxies instead.")
    embed_origins: list[str] = Field(default_factory=list, description="Origins allowed to frame the form "
                                                                       "and post it (https://example.org).")
    welcome: bool = Field(default=False, description="Send a welcome message after confirmation.")
    preferences_days: int = Field(default=365, ge=1, description="How long a digest's preferences link works.")

    @field_validator("embed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(f"{origin!r}: an origin is scheme and host only, e.g. https://example.org")
        return [origin.lower() for origin in value]

    @field_validator("blocked_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [domain.strip().lower().lstrip("@") for domain in value if domain.strip()]

    @field_validator("client_ip_header")
    @classmethod
    def _removed_header(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError("removed: list the addresses of your reverse proxies in web.trusted_proxies; the "
                             "client address is then read from X-Forwarded-For or Forwarded")
        return None

    _consent_fields = field_validator("consent_text")(lambda value: _check_fields(value, {"site_title"}))


class Desk(Strict):
    """The editor's desk (docs/how-to/desk.md): a web desk for the comms team at /desk/ of ``serve-web``."""

    enabled: bool = Field(default=False, description="Serve the desk; off unless set, so nobody reaches it by chance.")
    host: str | None = Field(default=None, description="Serve the desk alone on this address (e.g. 127.0.0.1 or an "
                                                       "intranet address) with `pipeline desk serve`, and not under "
                                                       "/desk/ of `serve-web`; default: mounted in `serve-web`.")
    port: int = Field(default=8026, ge=0, lt=65536, description="Port of the desk served alone (0: any free port).")
    idle_minutes: float = Field(default=30.0, gt=0, description="A session unused this long is signed out.")
    absolute_hours: float = Field(default=12.0, gt=0, description="A session ends this long after sign-in, "
                                                                  "used or not.")
    account_attempts: int = Field(default=5, ge=1, description="Failed sign-ins of one account, within "
                                                               "lockout_minutes, that lock the account.")
    address_attempts: int = Field(default=20, ge=1, description="Failed sign-ins from one client address, within "
                                                                "lockout_minutes, that lock that address out.")
    lockout_minutes: float = Field(default=15.0, gt=0, description="The window failed sign-ins are counted in, and "
                                                                   "how long a lock-out lasts.")
    max_upload_bytes: int = Field(default=1_000_000, gt=0, le=1_048_576, description="Largest image or enclosure "
                                                                                     "upload (at most 1 MiB, the "
                                                                                     "web server's body limit).")


class Web(Strict):
    """The public web app's server and the proxies in front of it (docs/how-to/proxy-and-tls.md)."""

    connection_limit: int = Field(default=4000, ge=10, description="Open client connections the server holds "
                                                                   "at once (idle or slow ones included).")
    header_timeout: float = Field(default=10.0, gt=0, description="Seconds a client has to send a whole request "
                                                                  "(headers and body) once it starts, or after "
                                                                  "connecting; a slower one is dropped.")
    idle_timeout: int = Field(default=30, ge=1, description="Seconds a kept-alive connection may sit idle "
                                                            "between requests.")
    threads: int = Field(default=8, ge=1, description="Worker threads running the app.")
    trusted_proxies: list[str] = Field(default_factory=list, description="Addresses or networks (CIDR) of reverse "
                                                                         "proxies you run; only from them are "
                                                                         "X-Forwarded-For/-Proto/-Host and "
                                                                         "Forwarded believed.")
    proxy_headers: Literal["x-forwarded", "forwarded"] = Field(
        default="x-forwarded", description="Which headers your proxies set: x-forwarded (X-Forwarded-For/-Proto/"
                                           "-Host, what nginx and Caddy send) or forwarded (RFC 7239 Forwarded); "
                                           "the other kind is ignored, since a client could have written it.")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r}: not an address or network (e.g. 127.0.0.1 or 10.0.0.0/8)") from None
        return value


class Config(Strict):
    site: Site
    """The site: title, where it is published, language, logo."""
    organisation: Organisation
    """Who publishes: the facts the footer and the home page show."""
    paths: Paths = Paths()
    """Folders, relative to the config file."""
    feeds: Feeds = Feeds()
    """What the RSS, Atom and JSON feeds carry."""
    digest: DigestSettings = DigestSettings()
    """The email digest: size, subject, intro, links, date shown."""
    delivery: Delivery | None = None
    """Sending the digest: sender, headers, transport, ledger (null: nothing is sent)."""
    schedule: Schedule = Schedule()
    """Scheduled jobs for `pipeline serve`, cron and systemd timers."""
    sources: list[RemoteSource] = Field(default_factory=list)
    """Remote feeds merged with the local content."""
    fetch: Fetch = Fetch()
    """How the remote sources are fetched."""
    logging: Logging = Logging()
    """Log level, format and file."""
    signup: Signup = Signup()
    """The signup form, double opt-in and its bot protection."""
    topics: dict[str, Topic] = Field(default_factory=dict, description="Topics readers choose; name -> tags.")
    bounces: Bounces = Bounces()
    """Bounces, complaints and the suppression list: VERP, mailbox, receiver, webhooks."""
    desk: Desk = Desk()
    """The editor's desk at /desk/ of the web app (docs/how-to/desk.md)."""
    web: Web = Web()
    """The public web app's server: connection limits, deadlines, trusted proxies."""
    branding: Branding = Branding()
    """Colours and fonts of the digest and the pages (docs/how-to/make-it-yours.md)."""

    # Set by load_config, not by the file.
    root: Path = Path(".")
    """Set when loading: the folder holding the config file (not a setting)."""
    source_file: Path = Path(DEFAULT_CONFIG)
    """Set when loading: the config file's path (not a setting)."""

    def path(self, which: Literal["content", "templates", "output", "state"]) -> Path:
        path = self.root / getattr(self.paths, which)
        if which == "output" and path.name not in ("", ".", ".."):  # a link to its live version: named, not followed
            return path.parent.resolve() / path.name
        return path.resolve()

    @model_validator(mode="after")
    def _unique_source_names(self) -> Config:
        names = [source.name for source in self.sources]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"sources: duplicate name {duplicates[0]!r}")
        return self

    @field_validator("topics")
    @classmethod
    def _topic_names(cls, value: dict[str, Topic]) -> dict[str, Topic]:
        for name in value:
            if not re.match(r"^[a-z0-9][a-z0-9_-]*$", name):
                raise ValueError(f"topic name {name!r}: use lower-case letters, digits, - and _")
        return value

    def resolve(self, path: Path) -> Path:
        return (self.root / path).resolve()

    def require_delivery(self) -> Delivery:
        if self.delivery is None:
            raise ConfigError(f"{self.source_file}: delivery: field required to send email")
        return self.delivery


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "missing":
        message = "field required"
    elif kind == "extra_forbidden":
        message = "unknown field"
    else:
        message = error["msg"]
        message = message.removeprefix("Value error, ")
        message = message[0].lower() + message[1:] if message else message
    return f"{where}: {message}" if where else message


def load_config(path: str | Path = DEFAULT_CONFIG) -> Config:
    """Read and validate the config; any problem raises ConfigError naming file and key."""
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such file (use --config PATH)") from None
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{shown}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    repeated = repeated_key(node)
    if repeated:
        raise ConfigError(f"{shown}:{repeated[1] + 1}: {repeated[0]}: given twice; keep one (the last would win "
                          "silently)")
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}: must be a mapping of settings")
    for reserved in ("root", "source_file"):
        if reserved in data:
            raise ConfigError(f"{shown}: {reserved}: unknown field")
    organisation = data.get("organisation")
    retired = [key for key in _RETIRED_ORGANISATION_KEYS if isinstance(organisation, dict) and key in organisation]
    if retired:
        raise ConfigError(f"{shown}: organisation.{retired[0]}: no longer a setting; "
                          f"{_RETIRED_ORGANISATION_KEYS[retired[0]]}")
    try:
        return Config(**data, root=path.resolve().parent, source_file=path)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"{shown}: {problems}") from None

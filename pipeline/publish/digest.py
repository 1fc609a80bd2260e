"""The email digest: HTML and plain text rendered from the items and the organisation config.

Rendering and CSS inlining happen once per digest.  The unsubscribe link is left as
a placeholder that delivery fills per recipient with a cheap string replacement.

Imports inside functions: premailer, the image checks and the story renderer load only when a
digest is rendered, never on an unchanged run.
"""

from __future__ import annotations

import logging
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from html import escape
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import jinja2

from ..branding import Branding
from ..config import Config
from ..items import Item, newest_first
from ..text import shorten_words, squash_spaces
from ..urls import unsubscribe_base, web_url

HTML_TEMPLATE = "digest.html"
TEXT_TEMPLATE = "digest.txt"
HTML_FILE = "digest.html"
ARCHIVE_FOLDER = "archive"
TEXT_FILE = "digest.txt"

# Survives HTML escaping and CSS inlining unchanged; replaced per recipient.
UNSUBSCRIBE_PLACEHOLDER = "__UNSUBSCRIBE_URL__"
PREFERENCES_PLACEHOLDER = "__PREFERENCES_URL__"  # the signed "Manage preferences" link, also per recipient

GMAIL_CLIP_BYTES = 102 * 1024
STYLE_BLOCK_LIMIT = 16 * 1024

ICON_SIZE = 24  # footer social icons, shown at 24 px from 48 px files

# The column is 600 px with 24 px padding; an image never gets a width attribute wider than its cell.
IMAGE_CELL_WIDTH = 552
CONTENTS_FROM = 4  # editions with more items than 3 open with an "In this issue" list
# The email carries a citation whole (the MESEMS one, twenty authors, is 690 characters); only one longer
# than this, such as a consortium paper's hundreds of authors, is shortened at an author boundary
# ("et al."), linking to the whole one on the edition's web copy; the title and journal are kept.
CITATION_CHARS = 1500
# Invisible characters after the preheader, so clients do not pull body text into the inbox preview.
PREHEADER_PADDING = "\u200c\u00a0" * 50
# What the web copies leave out: a "view in browser" link on a page already in the browser.
_VIEW_IN_BROWSER_HTML = re.compile(r"<!--view-in-browser-->.*?<!--/view-in-browser-->", re.DOTALL)
_VIEW_IN_BROWSER_TEXT = re.compile(r"^View this email in your browser:\n\S+\n\n", re.MULTILINE)


@dataclass(frozen=True)
class Digest:
    subject: str
    html: str
    text: str
    items: tuple[Item, ...]
    edition_date: datetime

    def with_unsubscribe(self, url: str) -> tuple[str, str]:
        """HTML and text with the unsubscribe placeholder filled in."""
        return self.html.replace(UNSUBSCRIBE_PLACEHOLDER, url), self.text.replace(UNSUBSCRIBE_PLACEHOLDER, url)

    def with_links(self, unsubscribe: str, preferences: str) -> tuple[str, str]:
        html, text = self.with_unsubscribe(unsubscribe)
        return html.replace(PREFERENCES_PLACEHOLDER, preferences), text.replace(PREFERENCES_PLACEHOLDER, preferences)


@dataclass(frozen=True)
class PlannedDigest:
    """The digest the site shows, before it is rendered: what it is made from, so that a run whose
    live version holds the copy those make is spared the render (premailer: a third of a second)."""

    items: tuple[Item, ...]
    edition_id: str | None
    edition_date: datetime | None  # None: the newest item's date (a digest that is no edition)
    render: Callable[[], Digest] = field(repr=False, compare=False)


def longdate(moment: datetime) -> str:
    return f"{moment:%B} {moment.day}, {moment.year}"


def wrap(text: str, width: int = 72) -> str:
    """Wrap plain text for the text part; never split words or hyphenated names."""
    return "\n".join(textwrap.wrap(squash_spaces(text), width, break_long_words=False, break_on_hyphens=False))


def hostname(url: str) -> str:
    return urlsplit(url).hostname or url


# The packaged templates; a project's own templates folder (paths.templates) overrides any of them by name.
PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def template_file(config: Config, name: str) -> Path:
    """The file a template name means for this project: its own, else the packaged default."""
    own = config.path("templates") / name
    return own if own.is_file() else PACKAGE_TEMPLATES / name


def environment_for(config: Config) -> jinja2.Environment:
    """The templates of this project (its own folder first, then the package's), with its branding."""
    return template_environment(config.path("templates"), config.branding)


class ProjectTemplates(jinja2.BaseLoader):
    """A project's own template of a name, else the packaged one (as Hugo looks up layouts). A loaded template
    is stale once its override appears or goes away, so a long-lived preview sees a new override at once."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.own = jinja2.FileSystemLoader(str(folder))
        self.package = jinja2.FileSystemLoader(str(PACKAGE_TEMPLATES))

    def get_source(self, environment: jinja2.Environment, template: str):
        path = self.folder / template
        overridden = path.is_file()
        source, filename, uptodate = (self.own if overridden else self.package).get_source(environment, template)

        def fresh() -> bool:
            return path.is_file() == overridden and (uptodate is None or bool(uptodate()))

        return source, filename, fresh


@lru_cache(maxsize=8)
def template_environment(folder: Path, branding: Branding | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=ProjectTemplates(folder),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "xml"), default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["longdate"] = longdate
    env.filters["hostname"] = hostname
    env.filters["wrap"] = wrap
    env.globals["brand"] = branding or Branding()
    return env


def _no_css_validation() -> None:
    """premailer has cssutils validate the style attributes it reads and merges, whatever its
    ``disable_validation`` says (``csstext_to_pairs(validate=True)``, ``cssutils.parseStyle`` with the
    parser's default).  Validation only logs (silenced here anyway) and never changes the output: the
    same bytes either way (tests/test_digest.py).  The profile regexes it compiles on first use were
    half of the first render in a process, a second of CPU on a loaded machine: a `pipeline send`'s
    largest fixed cost after imports.  premailer is this process's only user of cssutils."""
    import inspect

    from cssutils.parse import CSSParser
    from premailer import merge_style

    pairs = inspect.unwrap(merge_style.csstext_to_pairs)  # under premailer's cache
    if getattr(pairs, "__defaults__", None) == (True,):
        pairs.__defaults__ = (False,)
    defaults = CSSParser.__init__.__defaults__
    if defaults and defaults[-1] is True:  # (log, loglevel, raiseExceptions, fetcher, parseComments, validate)
        CSSParser.__init__.__defaults__ = (*defaults[:-1], False)


def inline_css(html: str) -> str:
    """Inline the stylesheet into style attributes, keeping the <style> block for media queries."""
    # Imported here: premailer brings cssutils and requests (a tenth of a second), which a run that
    # finds nothing changed, and every command that renders no digest, never needs.
    from premailer import Premailer

    _no_css_validation()
    inlined = Premailer(
        html,
        strip_important=False,
        allow_network=False,
        keep_style_tags=True,
        remove_classes=False,
        disable_validation=True,
        # Keep the width/height attributes the template wrote; CSS "auto" is not a valid attribute value.
        disable_basic_attributes=["width", "height"],
        cssutils_logging_level=logging.CRITICAL,
    ).transform(pretty_print=False)
    if not inlined.lstrip().lower().startswith("<!doctype"):
        inlined = "<!DOCTYPE html>\n" + inlined
    return inlined if inlined.endswith("\n") else inlined + "\n"


def subject_for(items: list[Item], config: Config, date: datetime | None = None) -> str:
    """The subject line; ``{date}`` is the edition's date (else the lead item's), as the header shows it."""
    lead = items[0] if items else None
    when = date or (lead.published if lead else None)
    subject = config.digest.subject.format(
        site_title=config.site.title,
        lead_title=lead.title if lead else "",
        date=longdate(when) if when else "",
        count=len(items),
    )
    return squash_spaces(subject)  # never a CR/LF in a header built from content; no-break spaces stay


def archive_url(config: Config, edition_id: str) -> str:
    return config.site.url(f"{ARCHIVE_FOLDER}/{edition_id}.html")


@dataclass(frozen=True)
class ImageBox:
    """The width and height attributes of an image: its cell's width at most, in the file's proportions."""

    width: int
    height: int | None


def image_box(url: str, width: int | None, height: int | None, config: Config,
              cell: int = IMAGE_CELL_WIDTH, items: tuple[Item, ...] = ()) -> ImageBox:
    """Declared sizes first, else the local file's real size; Outlook and images-off clients need both numbers."""
    if not (width and height):
        from .images import locate, real_size

        local = locate(url, config, items)
        size = real_size(local.source) if local is not None and local.source is not None else None
        if size is not None:
            width, height = size
    if not width:
        return ImageBox(cell, None)
    shown = min(width, cell)
    return ImageBox(shown, round(shown * height / width) if height else None)


@dataclass(frozen=True)
class Entry:
    """One item as the digest shows it."""

    item: Item
    byline: str | None      # the author, only when not the organisation itself
    image: ImageBox | None
    citation: str | None    # collapsed to one line; shortened at an author boundary when long
    citation_shortened: bool = False  # the whole citation is on the web copy, at #citation-<slug>


def byline(item: Item, config: Config) -> str | None:
    org = config.organisation
    own = {name.casefold() for name in (org.name, org.short_name, org.display_name) if name}
    return item.author if item.author and item.author.casefold() not in own else None


def short_citation(citation: str | None, limit: int = CITATION_CHARS) -> str | None:
    """A citation on one line; past ``limit``, the authors after the first few give way to "et al."
    (``"Title," by A, B et al. Journal (2021; 20: 917–29).``); the title, the journal and every word
    kept are whole.  A citation without a "by" list of authors is cut at a word."""
    if not citation:
        return None
    text = " ".join(citation.split())
    if len(text) <= limit:
        return text
    head, by, rest = text.partition(" by ")
    if by:
        group = rest.find(", on behalf of ")
        if group >= 0:
            authors_text, after = rest[:group], rest[group:]
            journal = after.split(". ", 1)[1] if ". " in after else ""
        else:  # the authors end at the last sentence break before the journal (which has the year)
            breaks = [m for m in re.finditer(r"\.\s+(?=[^.]*\d)", rest)]
            authors_text, journal = (rest[:breaks[-1].start()], rest[breaks[-1].end():]) if breaks else (rest, "")
        authors = [name.strip() for name in re.split(r",\s+|\s+and\s+", authors_text) if name.strip()]
        for count in range(len(authors) - 1, 0, -1):
            short = f"{head} by {', '.join(authors[:count])} et al." + (f" {journal}" if journal else "")
            if len(short) <= limit:
                return short
    return shorten_words(text, limit)


def citation_anchor(item: Item) -> str:
    return f"citation-{item.slug}"


def entry_for(item: Item, config: Config) -> Entry:
    image = item.image
    box = image_box(image.url, image.width, image.height, config, items=(item,)) if image is not None else None
    short = short_citation(item.citation)
    return Entry(item, byline(item, config), box, short,
                 short is not None and short != " ".join((item.citation or "").split()))


@dataclass(frozen=True)
class SocialIcon:
    label: str
    url: str   # the network's page
    src: str   # the published icon


def social_icons(config: Config) -> list[SocialIcon]:
    from .images import social_icon_url

    return [SocialIcon(label, url, social_icon_url(name, config))
            for name, label, url in config.organisation.social.icons()]


def edition_day(moment: datetime, config: Config) -> datetime:
    """A moment as the readers' calendar shows it: in digest.timezone."""
    return moment.astimezone(ZoneInfo(config.digest.timezone))


def render_digest(items: list[Item], config: Config, edition_id: str | None = None, *,
                  edition_date: datetime | None = None) -> Digest:
    """Render the digest for these items, newest first; callers personalise the result.

    The "view in browser" link points at the edition's archive page, or at the
    latest digest for a preview that is not an edition yet.  A run renders each
    digest once and keeps it (see ``app.RunContext``); nothing is cached here, so a
    template edit shows up in the next render.  ``edition_date`` is when the edition
    was created; the header and the text part show it in digest.timezone (a preview
    that is no edition yet shows the newest item's date).
    """
    chosen = newest_first(items)
    if not chosen:
        raise ValueError("a digest needs at least one item")
    env = environment_for(config)
    org = config.organisation
    date = edition_day(edition_date or chosen[0].published, config)
    subject = subject_for(chosen, config, date)
    logo = config.site.logo
    context = {
        "site": config.site,
        "organisation": org,
        "items": chosen,
        "entries": [entry_for(item, config) for item in chosen],
        "contents": len(chosen) >= CONTENTS_FROM,
        "subject": subject,
        "edition_date": date,
        "preheader": config.digest.preheader or chosen[0].summary,
        "preheader_padding": PREHEADER_PADDING,
        "intro": config.digest.intro.format(organisation=org.display_name, count=len(chosen)),
        "view_url": archive_url(config, edition_id) if edition_id else config.site.url(HTML_FILE),
        "archive_index_url": config.site.url(f"{ARCHIVE_FOLDER}/"),
        # The signed per-subscriber preferences page (filled in per recipient), unless another is configured.
        "preferences_url": config.digest.preferences_url or PREFERENCES_PLACEHOLDER,
        "unsubscribe_url": UNSUBSCRIBE_PLACEHOLDER,
        "logo_box": image_box(logo.url, logo.width, logo.height, config, cell=600 - 48) if logo else None,
        "social_icons": social_icons(config),
        "icon_size": ICON_SIZE,
    }
    html = inline_css(env.get_template(HTML_TEMPLATE).render(context))
    text = env.get_template(TEXT_TEMPLATE).render(context)
    return Digest(subject=subject, html=html, text=text, items=tuple(chosen), edition_date=date)


def public_copy(digest: Digest, config: Config) -> tuple[bytes, bytes]:
    """The web copy of a digest: no personal token, the unsubscribe and preferences links point at the
    generic pages, and no "view in browser" link (it is the browser copy)."""
    html, text = digest.with_links(unsubscribe_base(config),
                                   web_url(config) + "preferences")
    html = _whole_citations(_VIEW_IN_BROWSER_HTML.sub("", html), digest.items)
    text = _VIEW_IN_BROWSER_TEXT.sub("", text)
    return html.encode("utf-8"), text.encode("utf-8")


_CITATION_PARAGRAPH = re.compile(r'(<p\b[^>]*\bid="citation-([a-z0-9-]+)"[^>]*>).*?</p>', re.DOTALL)


def _whole_citations(html: str, items: tuple[Item, ...]) -> str:
    """The web copy (archive page, web digest) carries each citation whole where the email shortened it."""
    by_slug = {item.slug: item for item in items if item.citation}

    def whole(match: re.Match) -> str:
        item = by_slug.get(match.group(2))
        if item is None or item.citation is None:
            return match.group(0)
        return f"{match.group(1)}{escape(' '.join(item.citation.split()), quote=False)}</p>"

    return _CITATION_PARAGRAPH.sub(whole, html)

"""The email digest: HTML and plain text rendered from the items and the organisation config.

Rendering and CSS inlining happen once per digest.  The unsubscribe link is left as
a placeholder that delivery fills per recipient with a cheap string replacement.
"""

from __future__ import annotations

import logging
import textwrap
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
from premailer import Premailer

from ..config import Config
from ..items import Item, newest_first
from ..text import squash_spaces

HTML_TEMPLATE = "digest.html"
TEXT_TEMPLATE = "digest.txt"
HTML_FILE = "digest.html"
ARCHIVE_FOLDER = "archive"
TEXT_FILE = "digest.txt"

# Survives HTML escaping and CSS inlining unchanged; replaced per recipient.
UNSUBSCRIBE_PLACEHOLDER = "__UNSUBSCRIBE_URL__"

GMAIL_CLIP_BYTES = 102 * 1024
STYLE_BLOCK_LIMIT = 16 * 1024


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


def longdate(moment: datetime) -> str:
    return f"{moment:%B} {moment.day}, {moment.year}"


def wrap(text: str, width: int = 72) -> str:
    """Wrap plain text for the text part; never split words or hyphenated names."""
    return "\n".join(textwrap.wrap(squash_spaces(text), width, break_long_words=False, break_on_hyphens=False))


def hostname(url: str) -> str:
    return urlsplit(url).hostname or url


@lru_cache(maxsize=8)
def template_environment(folder: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "xml"), default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["longdate"] = longdate
    env.filters["hostname"] = hostname
    env.filters["wrap"] = wrap
    return env


def inline_css(html: str) -> str:
    """Inline the stylesheet into style attributes, keeping the <style> block for media queries."""
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


def subject_for(items: list[Item], config: Config) -> str:
    lead = items[0] if items else None
    subject = config.digest.subject.format(
        site_title=config.site.title,
        lead_title=lead.title if lead else "",
        date=longdate(lead.published) if lead else "",
        count=len(items),
    )
    return squash_spaces(subject)  # never a CR/LF in a header built from content; no-break spaces stay


def archive_url(config: Config, edition_id: str) -> str:
    return config.site.url(f"{ARCHIVE_FOLDER}/{edition_id}.html")


def render_digest(items: list[Item], config: Config, edition_id: str | None = None) -> Digest:
    """Render the digest for these items, newest first; callers personalise the result.

    The "view in browser" link points at the edition's archive page, or at the
    latest digest for a preview that is not an edition yet.  A run renders each
    digest once and keeps it (see ``app.RunContext``); nothing is cached here, so a
    template edit shows up in the next render.
    """
    chosen = newest_first(items)
    if not chosen:
        raise ValueError("a digest needs at least one item")
    env = template_environment(config.path("templates"))
    subject = subject_for(chosen, config)
    org = config.organisation
    context = {
        "site": config.site,
        "organisation": org,
        "items": chosen,
        "subject": subject,
        "edition_date": chosen[0].published,
        "preheader": config.digest.preheader or chosen[0].summary,
        "intro": config.digest.intro.format(organisation=org.display_name, count=len(chosen)),
        "view_url": archive_url(config, edition_id) if edition_id else config.site.url(HTML_FILE),
        "unsubscribe_url": UNSUBSCRIBE_PLACEHOLDER,
    }
    html = inline_css(env.get_template(HTML_TEMPLATE).render(context))
    text = env.get_template(TEXT_TEMPLATE).render(context)
    return Digest(subject=subject, html=html, text=text, items=tuple(chosen), edition_date=chosen[0].published)


def public_copy(digest: Digest, config: Config) -> tuple[bytes, bytes]:
    """The web copy of a digest: no personal token, the unsubscribe link points at the generic page."""
    html, text = digest.with_unsubscribe(config.digest.unsubscribe_url or config.site.url("unsubscribe"))
    return html.encode("utf-8"), text.encode("utf-8")

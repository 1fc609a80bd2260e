"""Pre-send checks: what breaks email in real clients, caught before anything goes out.

Each finding names its rule and where it is, so the fix is obvious.  `pipeline lint`
runs them on demand; sending runs them first and stops unless forced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes
from email import policy as email_policy
from urllib.parse import urlsplit

from lxml import etree
from lxml import html as lxml_html

from ..colour import contrast, parse_colour
from ..config import Config
from ..errors import PipelineError
from ..items import Item
from ..publish.digest import GMAIL_CLIP_BYTES, STYLE_BLOCK_LIMIT
from ..publish.images import locate, real_size, relative_to_site
from ..sources.local import field_line

# The pipeline's limit for a Subject: desktop inboxes cut longer ones (mobile ones after about 40 characters).
SUBJECT_CHARS = 120
SUBJECT_LINE_LIMIT = 998  # RFC 5322 2.1.1: lines MUST be at most 998 characters
ALLOWED_SCHEMES = {"http", "https", "mailto", "tel"}
FORBIDDEN_ELEMENTS = {"script", "form", "iframe"}
RULES = {
    "html-size": f"HTML over {GMAIL_CLIP_BYTES // 1024} KB is clipped by Gmail",
    "unsubscribe-clipped": "the unsubscribe link lies beyond Gmail's clipping point",
    "missing-unsubscribe": "no unsubscribe link in the HTML",
    "style-size": f"a <style> block over {STYLE_BLOCK_LIMIT // 1024} KB is dropped by Gmail",
    "forbidden-element": "<script>, <form> and <iframe> are stripped or flagged by mail clients",
    "external-stylesheet": "external stylesheets are not loaded by mail clients",
    "img-alt": "an image without alt text",
    "img-width": "an image without a width attribute (Outlook shows it at full size)",
    "img-height": "an image without a height attribute (with images off it collapses to one line)",
    "img-insecure": "an image over plain http (blocked or warned about by mail clients)",
    "img-missing": "an image URL under site.base_url with no file to publish there",
    "img-dimensions": "the width/height given for an image do not match the file's real size",
    "link-scheme": "a relative or non-http(s) link",
    "missing-lang": "no lang attribute on <html>",
    "missing-title": "no <title>",
    "missing-preheader": "no preheader text",
    "preheader-padding": "no whitespace after the preheader: clients pull body text into the preview line",
    "hidden-low-contrast": "hidden or near-invisible text (a spam signal, e.g. SpamAssassin HTML_FONT_LOW_CONTRAST)",
    "brand-contrast": "a branding colour pair below WCAG AA contrast (4.5:1): hard to read, and a spam signal",
    "postal-address-missing": "no organisation.postal_address: CAN-SPAM requires a postal address in every message",
    "text-missing-item": "the text part lacks an item's title or link",
    "list-unsubscribe-ascii": "List-Unsubscribe is not plain ASCII on the wire",
    "list-unsubscribe-missing": "no List-Unsubscribe / List-Unsubscribe-Post header",
    "feed-relative-url": "a feed item with a relative URL",
    "media-missing": "an image or enclosure a content file names, with no file in the content folder",
    "subject-length": f"a Subject over {SUBJECT_CHARS} characters is cut by inboxes; over {SUBJECT_LINE_LIMIT} "
                      "(RFC 5322's line limit) it is refused even with --force",
    "feed-url-iri": "a feed URL with spaces or non-ASCII characters (an IRI where a URL is expected)",
}


PREHEADER_PADDING = 40  # invisible characters after the preheader text
_PADDING_CHARS = "\u200c\u00a0\u034f\u2007\u00ad \u200b"
_HIDING = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden|opacity\s*:\s*0(?![.\d]*[1-9])"
                     r"|font-size\s*:\s*[01](?:px)?\s*(?:;|$)|max-height\s*:\s*0(?:px)?\s*(?:;|$)")


@dataclass(frozen=True)
class Finding:
    rule: str
    where: str
    detail: str
    blocking: bool = False  # a legal requirement: --force does not override it

    def __str__(self) -> str:
        note = " (--force does not override this)" if self.blocking else ""
        return f"{self.where}: {self.rule}: {self.detail}{note}"


class LintFailed(PipelineError):
    def __init__(self, findings: list[Finding]):
        self.findings = findings
        listing = "\n".join(f"  {finding}" for finding in findings)
        blocking = sorted({finding.rule for finding in findings if finding.blocking})
        advice = (f"fix them; --force does not override {', '.join(blocking)}" if blocking
                  else "fix them or use --force")
        super().__init__(f"the digest fails {len(findings)} pre-send check(s); {advice}:\n{listing}")


def _where(name: str, element) -> str:
    line = getattr(element, "sourceline", None)
    return f"{name}:{line}" if line else name


def _scheme_ok(url: str) -> bool:
    parts = urlsplit(url.strip())
    if parts.scheme in ("http", "https"):
        return bool(parts.netloc)
    return parts.scheme in ALLOWED_SCHEMES


def lint_html(markup: str, name: str = "digest.html") -> list[Finding]:
    findings: list[Finding] = []
    size = len(markup.encode("utf-8"))
    if size > GMAIL_CLIP_BYTES:
        findings.append(Finding("html-size", name, f"{size:,} bytes (limit {GMAIL_CLIP_BYTES:,})"))
    doc = lxml_html.document_fromstring(markup)
    if not doc.get("lang"):
        findings.append(Finding("missing-lang", _where(name, doc), RULES["missing-lang"]))
    title = doc.find(".//title")
    if title is None or not (title.text or "").strip():
        findings.append(Finding("missing-title", name, RULES["missing-title"]))
    preheader = doc.xpath('//*[contains(concat(" ", normalize-space(@class), " "), " preheader ")]')
    if not preheader or not preheader[0].text_content().strip(_PADDING_CHARS + "\t\n\r"):
        findings.append(Finding("missing-preheader", name, RULES["missing-preheader"]))
    elif _trailing_padding(preheader[0].text_content()) < PREHEADER_PADDING:
        findings.append(Finding("preheader-padding", _where(name, preheader[0]),
                                f"fewer than {PREHEADER_PADDING} invisible characters after the preheader text"))
    findings += _hidden_low_contrast(doc, name)
    for style in doc.iter("style"):
        style_size = len((style.text or "").encode("utf-8"))
        if style_size > STYLE_BLOCK_LIMIT:
            findings.append(Finding("style-size", _where(name, style),
                                    f"{style_size:,} bytes (limit {STYLE_BLOCK_LIMIT:,})"))
    for element in doc.iter(*FORBIDDEN_ELEMENTS):
        findings.append(Finding("forbidden-element", _where(name, element), f"<{element.tag}>"))
    for link in doc.iter("link"):
        if "stylesheet" in (link.get("rel") or "").lower():
            findings.append(Finding("external-stylesheet", _where(name, link), link.get("href") or "<link>"))
    for image in doc.iter("img"):
        src = image.get("src") or "?"
        if not (image.get("alt") or "").strip():
            findings.append(Finding("img-alt", _where(name, image), f"<img src={src!r}> has no alt text"))
        if not image.get("width"):
            findings.append(Finding("img-width", _where(name, image), f"<img src={src!r}> has no width"))
        if not image.get("height"):
            findings.append(Finding("img-height", _where(name, image), f"<img src={src!r}> has no height"))
        if not _scheme_ok(src):
            findings.append(Finding("link-scheme", _where(name, image), f"image source {src!r}"))
        elif urlsplit(src.strip()).scheme == "http":
            findings.append(Finding("img-insecure", _where(name, image), f"image source {src!r} is not https"))
    unsubscribe = None
    for anchor in doc.iter("a"):
        href = anchor.get("href")
        if href is None:
            continue
        if not _scheme_ok(href):
            findings.append(Finding("link-scheme", _where(name, anchor), f"link {href!r}"))
        if unsubscribe is None and "unsubscribe" in (anchor.text_content() + " " + href).lower():
            unsubscribe = href
    if unsubscribe is None:
        findings.append(Finding("missing-unsubscribe", name, RULES["missing-unsubscribe"]))
    else:
        position = markup.encode("utf-8").find(unsubscribe.replace("&", "&amp;").encode("utf-8"))
        if position < 0:
            position = markup.encode("utf-8").find(unsubscribe.encode("utf-8"))
        if position > GMAIL_CLIP_BYTES:
            findings.append(Finding("unsubscribe-clipped", name, f"at byte {position:,} of {size:,}"))
    return findings


def _trailing_padding(text: str) -> int:
    stripped = text.rstrip(_PADDING_CHARS + "\t\n\r")
    return sum(1 for char in text[len(stripped):] if char in _PADDING_CHARS)


def _inline(element, prop: str) -> str | None:
    for declaration in (element.get("style") or "").split(";"):
        key, _, value = declaration.partition(":")
        if key.strip().lower() == prop:
            return value.strip()
    return None


def _background(element):
    """The nearest background colour given inline (style or bgcolor) on the element or an ancestor; white else."""
    for node in [element, *element.iterancestors()]:
        for value in (_inline(node, "background-color"), _inline(node, "background"), node.get("bgcolor")):
            colour = parse_colour(value.split()[0]) if value else None
            if colour is not None:
                return colour
    return (255, 255, 255)


def _hidden_low_contrast(doc, name: str) -> list[Finding]:
    """Text coloured like its background, or hidden and given a colour: what spam filters score as hidden text."""
    findings = []
    for element in doc.iter():
        if not isinstance(element.tag, str) or not (element.text or "").strip():
            continue
        value = _inline(element, "color")
        colour = parse_colour(value) if value else None
        if colour is None:
            continue
        ratio = contrast(colour, _background(element))
        hidden = bool(_HIDING.search(element.get("style") or ""))
        if ratio < 1.5 or (hidden and ratio < 4.5):
            findings.append(Finding("hidden-low-contrast", _where(name, element),
                                    f"<{element.tag}> text in {value} at contrast {ratio:.2f}"
                                    + (" (hidden)" if hidden else "")))
    return findings


def lint_images(markup: str, config: Config, name: str = "digest.html",
                items: list[Item] | None = None) -> list[Finding]:
    """Images that point into the site must have a file to publish, shown at the file's own proportions."""
    findings = []
    for image in lxml_html.document_fromstring(markup).iter("img"):
        src = (image.get("src") or "").strip()
        local = locate(src, config, items or ())
        if local is None:
            continue
        if local.source is None:
            rel = relative_to_site(src, config)
            logo = ", site.logo.file" if config.site.logo and config.site.logo.url == src else ""
            findings.append(Finding("img-missing", _where(name, image),
                                    f"{src} has no file: looked for {rel} in the content, templates and output "
                                    f"folders{logo}"))
            continue
        size = real_size(local.source)
        if size is None:
            findings.append(Finding("img-dimensions", _where(name, image), f"{local.source} is not a readable image"))
            continue
        try:
            width, height = int(image.get("width") or 0), int(image.get("height") or 0)
        except ValueError:
            width = height = 0
        if width and height and (width > size[0] or abs(height - width * size[1] / size[0]) > 1):
            findings.append(Finding("img-dimensions", _where(name, image),
                                    f"{src} is shown at {width}x{height} but the file is {size[0]}x{size[1]}"))
    return findings


def _content_where(item: Item, config: Config, field: str, sub: str) -> str:
    """``content/<slug>.md:<line>: <field>.<sub>`` for a field of a local item's front matter."""

    path = config.path("content") / f"{item.slug}.md"
    try:
        line = field_line(path.read_bytes(), field, sub)
    except OSError:
        line = None
    shown = path.relative_to(config.root) if path.is_relative_to(config.root) else path
    return f"{shown}:{line}: {field}.{sub}" if line else f"{shown}: {field}.{sub}"


def lint_media(items: list[Item], config: Config) -> list[Finding]:
    """Every image and enclosure a content file names must be a file in the content folder."""
    findings = []
    for item in items:
        for field in ("image", "enclosure"):
            media = getattr(item, field)
            if media is None or media.local_file is None:
                continue
            if not (config.path("content") / media.local_file).is_file():
                findings.append(Finding("media-missing", _content_where(item, config, field, "url"),
                                        f"no file {media.local_file!r} in {config.path('content').name}/ "
                                        f"(it would be published at {media.url})"))
    return findings


def lint_subject(subject: str, name: str = "Subject") -> list[Finding]:
    """A Subject longer than inboxes show is cut; past RFC 5322's line limit the message is malformed."""
    length = len(subject)
    if length > SUBJECT_LINE_LIMIT:
        return [Finding("subject-length", name, f"{length:,} characters: over the {SUBJECT_LINE_LIMIT}-character "
                        "line limit of RFC 5322; shorten the lead item's title or digest.subject", blocking=True)]
    if length > SUBJECT_CHARS:
        return [Finding("subject-length", name, f"{length} characters (inboxes show about {SUBJECT_CHARS}); "
                        "shorten the lead item's title or digest.subject")]
    return []


def lint_sizes(items: list[Item], config: Config) -> list[Finding]:
    """The sizes declared in content front matter and in site.logo must be the files' real sizes."""
    declared = [(_content_where(item, config, "image", "width") if item.image.local_file else f"{item.slug}: image",
                 item.image.url, item.image.width, item.image.height)
                for item in items if item.image is not None]
    if config.site.logo is not None:
        logo = config.site.logo
        declared.append(("config: site.logo", logo.url, logo.width, logo.height))
    findings = []
    for where, url, width, height in declared:
        local = locate(url, config, items)
        source = local.source if local is not None else None
        size = real_size(source) if source is not None else None
        if source is not None and size is not None and (width, height) != size and (width or height):
            findings.append(Finding("img-dimensions", where,
                                    f"width/height say {width}x{height}, {source.name} is {size[0]}x{size[1]}"))
    return findings


def lint_config(config: Config) -> list[Finding]:
    """What the law asks of every message, whatever the markup: a postal address (CAN-SPAM); and
    branding colours that readers can read (WCAG AA), in light and dark mode."""
    findings = [Finding("brand-contrast", f"{config.source_file.name}: branding.{fore}",
                        f"{fore} on {back} has contrast {ratio:.2f}:1, below AA 4.5:1")
                for fore, back, ratio in config.branding.low_contrast()]
    if not (config.organisation.postal_address or "").strip():
        findings.append(Finding("postal-address-missing", f"{config.source_file.name}: organisation.postal_address",
                                RULES["postal-address-missing"] + "; fill it in before sending", blocking=True))
    return findings


def lint_text(text: str, items: list[Item], name: str = "digest.txt") -> list[Finding]:
    flat = " ".join(text.split())
    findings = []
    if not re.search(r"unsubscribe[^\n]*\s(https://\S+|__UNSUBSCRIBE_URL__)", text, re.IGNORECASE):
        findings.append(Finding("missing-unsubscribe", name, "no unsubscribe link in the text part"))
    for item in items:
        if " ".join(item.title.split()) not in flat:
            findings.append(Finding("text-missing-item", name, f"title {item.title!r} not in the text part"))
        if item.link not in text:
            findings.append(Finding("text-missing-item", name, f"link {item.link} not in the text part"))
    return findings


def _raw_header(raw: bytes, name: str) -> bytes | None:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    match = re.search(rb"(?im)^" + re.escape(name.encode()) + rb":[ \t]*([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)", head)
    return match.group(1) if match else None


def lint_message(raw: bytes, name: str = "message") -> list[Finding]:
    findings = []
    value = _raw_header(raw, "List-Unsubscribe")
    post = _raw_header(raw, "List-Unsubscribe-Post")
    if value is None or post is None:
        findings.append(Finding("list-unsubscribe-missing", name, RULES["list-unsubscribe-missing"]))
    elif b"=?" in value or any(byte > 127 for byte in value) or not re.search(rb"<https://[^>\s]+>", value):
        findings.append(Finding("list-unsubscribe-ascii", name,
                                f"List-Unsubscribe: {value[:120].decode('ascii', 'replace')}"))
    subject = message_from_bytes(raw, policy=email_policy.default).get("Subject")
    findings += lint_subject(str(subject or ""), f"{name}: Subject")
    message = message_from_bytes(raw)
    if message.get_content_type() != "multipart/alternative":
        findings.append(Finding("text-missing-item", name, "the message has no text/plain alternative"))
    return findings


_FEED_URL_XPATHS = [
    "//channel/link", "//item/link", "//*[local-name()='link']/@href", "//enclosure/@url",
    "//*[local-name()='content' and namespace-uri()='http://search.yahoo.com/mrss/']/@url",
]


def lint_feed(data: bytes, name: str) -> list[Finding]:
    findings = []
    root = etree.fromstring(data)
    for xpath in _FEED_URL_XPATHS:
        for found in root.xpath(xpath):
            url = str(found.text if hasattr(found, "text") else found).strip()
            element = found if hasattr(found, "sourceline") else found.getparent()
            if url and not _scheme_ok(url):
                findings.append(Finding("feed-relative-url", _where(name, element), url))
            elif " " in url or not url.isascii():
                findings.append(Finding("feed-url-iri", _where(name, element), url))
    html_nodes = root.xpath("//*[local-name()='encoded' or (local-name()='content' and namespace-uri()='http://www.w3.org/2005/Atom')]")
    for node in html_nodes:
        if not (node.text or "").strip():
            continue
        fragment = lxml_html.fragment_fromstring(node.text, create_parent="div")
        for element in fragment.iter():
            for attribute in ("href", "src"):
                link: str | None = element.get(attribute) if isinstance(element.tag, str) else None
                if link is not None and not _scheme_ok(link):
                    findings.append(Finding("feed-relative-url", _where(name, node), f"{attribute}={link!r}"))
    return findings


def lint_edition(html: str, text: str, items: list[Item], message: bytes | None = None,
                 feeds: dict[str, bytes] | None = None, config: Config | None = None) -> list[Finding]:
    """Every check; with the config also the legal ones and the local image files."""
    findings = (lint_config(config) if config is not None else []) + lint_html(html) + lint_text(text, items)
    if config is not None:
        findings += lint_images(html, config, items=items) + lint_sizes(items, config) + lint_media(items, config)
    if message is not None:
        findings += lint_message(message)
    for name, data in (feeds or {}).items():
        findings += lint_feed(data, name)
    return findings


def lint_outgoing(sample: Sample, items: list[Item], feeds: dict[str, bytes] | None = None,
                  config: Config | None = None) -> list[Finding]:
    return lint_edition(sample.html, sample.text, items, sample.message, feeds, config)


def blocks_sending(findings: list[Finding], force: bool) -> bool:
    """Findings stop a send unless forced; a blocking (legal) finding stops it even then."""
    return bool(findings) and (not force or any(finding.blocking for finding in findings))


@dataclass(frozen=True)
class Sample:
    """One recipient's message of an edition, as it would go out."""

    html: str
    text: str
    message: bytes

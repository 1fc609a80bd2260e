"""Pre-send checks: what breaks email in real clients, caught before anything goes out.

Each finding names its rule and where it is, so the fix is obvious.  `pipeline lint`
runs them on demand; sending runs them first and stops unless forced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes
from urllib.parse import urlsplit

from lxml import etree
from lxml import html as lxml_html

from ..errors import PipelineError
from ..items import Item
from ..publish.digest import GMAIL_CLIP_BYTES, STYLE_BLOCK_LIMIT

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
    "link-scheme": "a relative or non-http(s) link",
    "missing-lang": "no lang attribute on <html>",
    "missing-title": "no <title>",
    "missing-preheader": "no preheader text",
    "text-missing-item": "the text part lacks an item's title or link",
    "list-unsubscribe-ascii": "List-Unsubscribe is not plain ASCII on the wire",
    "list-unsubscribe-missing": "no List-Unsubscribe / List-Unsubscribe-Post header",
    "feed-relative-url": "a feed item with a relative URL",
    "feed-url-iri": "a feed URL with spaces or non-ASCII characters (an IRI where a URL is expected)",
}


@dataclass(frozen=True)
class Finding:
    rule: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.rule}: {self.detail}"


class LintFailed(PipelineError):
    def __init__(self, findings: list[Finding]):
        self.findings = findings
        listing = "\n".join(f"  {finding}" for finding in findings)
        super().__init__(f"the digest fails {len(findings)} pre-send check(s); fix them or use --force:\n{listing}")


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
    if not preheader or not preheader[0].text_content().strip():
        findings.append(Finding("missing-preheader", name, RULES["missing-preheader"]))
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
        if not _scheme_ok(src):
            findings.append(Finding("link-scheme", _where(name, image), f"image source {src!r}"))
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


def lint_text(text: str, items: list[Item], name: str = "digest.txt") -> list[Finding]:
    flat = " ".join(text.split())
    findings = []
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
                 feeds: dict[str, bytes] | None = None) -> list[Finding]:
    findings = lint_html(html) + lint_text(text, items)
    if message is not None:
        findings += lint_message(message)
    for name, data in (feeds or {}).items():
        findings += lint_feed(data, name)
    return findings


def lint_outgoing(sample: Sample, items: list[Item], feeds: dict[str, bytes] | None = None) -> list[Finding]:
    return lint_edition(sample.html, sample.text, items, sample.message, feeds)


@dataclass(frozen=True)
class Sample:
    """One recipient's message of an edition, as it would go out."""

    html: str
    text: str
    message: bytes

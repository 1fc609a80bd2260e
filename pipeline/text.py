"""Plain text from HTML and from fields that already are plain text.

The rule across every output: titles and summaries are plain text, content is
sanitised HTML.  Which function applies depends on what the *source* field is:
HTML is parsed (entities decoded once, block elements become breaks, markup
dropped); plain text is kept as written, so ``Using the <video> element`` and
``Q&A <MS>`` stay whole.  Non-breaking spaces survive as U+00A0 in both.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Characters not allowed in XML 1.0 documents (controls except tab, LF, CR; lone surrogates; U+FFFE/FFFF).
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Every whitespace character except the no-break spaces, which are kept on purpose (French "Bonjour !").
_SPACES = re.compile(r"[^\S\u00a0\u202f]+")
# Markup that some readers would run if they took a plain-text title as HTML: dropped with its content.
_ACTIVE = re.compile(r"<(script|style|iframe|object|embed|noscript|template)\b[^>]*>.*?(?:</\1\s*>|$)"
                     r"|<(?:script|style|iframe|object|embed|noscript|template)\b[^>]*/?>",
                     re.IGNORECASE | re.DOTALL)

BLOCK_ELEMENTS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure", "footer",
    "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table",
    "td", "th", "tr", "ul",
})
_SKIPPED = frozenset({"script", "style", "template", "noscript", "iframe", "object", "head", "title"})


def strip_xml_illegal(text: str) -> str:
    return _XML_ILLEGAL.sub("", text)


def squash_spaces(text: str) -> str:
    """One line: runs of whitespace become one space, no-break spaces are kept."""
    return _SPACES.sub(" ", text).strip()


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _SKIPPED:
            self.skipping.append(tag)
        elif tag in BLOCK_ELEMENTS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs) -> None:
        if tag in BLOCK_ELEMENTS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self.skipping and tag == self.skipping[-1]:
            self.skipping.pop()
        elif tag in BLOCK_ELEMENTS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_to_text(markup: str, *, one_line: bool = True) -> str:
    """The words of an HTML fragment, as a reader would see them.

    Entities are decoded exactly once; block elements separate words instead of
    gluing them (``<p>one</p><p>two</p>`` gives ``one two``).  With
    ``one_line=False`` blocks become separate lines.
    """
    collector = _TextCollector()
    collector.feed(strip_xml_illegal(markup))
    collector.close()
    text = strip_xml_illegal("".join(collector.parts))
    if one_line:
        return squash_spaces(text)
    lines = (squash_spaces(line) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def plain_text(text: str) -> str:
    """A field that is plain text at its source: kept as written, on one line.

    Text that merely looks like a tag stays; only markup a careless reader would
    execute (``<script>…</script>`` and the like) is dropped.
    """
    return squash_spaces(_ACTIVE.sub("", strip_xml_illegal(text)))


def exact_text(text: str) -> str:
    """A field a format declares to be plain text (Atom ``type="text"``, JSON Feed): every character kept,
    ``<script>`` included (it is text; each output escapes it), on one line."""
    return squash_spaces(strip_xml_illegal(text))


def shorten_words(text: str, limit: int, ellipsis: str = "…") -> str:
    """At most ``limit`` characters (the ellipsis included), cut at a space, never inside a word; a text
    whose first word is longer than that is cut after it, whole."""
    if len(text) <= limit:
        return text
    head = text[: max(1, limit - len(ellipsis)) + 1]  # one more: a space there ends the last whole word
    cut = head.rsplit(" ", 1)[0] if " " in head else text.split(" ", 1)[0]
    cut = cut.rstrip(" ,;:")
    return text if cut == text else cut + ellipsis

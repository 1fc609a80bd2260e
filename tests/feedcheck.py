"""Schema-level checks of RSS 2.0, Atom 1.0 and JSON Feed, after the rules the W3C Feed Validation Service applies.

The W3C validator is a web service; these checks encode the rules it reports as errors
or warnings at its default level (required elements, date formats, link and id rules,
Media RSS groups, URL vs IRI, source elements, duplicate updated values) so the tests
can run offline.  ``aa_problems`` adds the warnings it reports at level AA (errors and
warnings; level A is errors only), read from its public source (w3c/feedvalidator,
src/feedvalidator/): "Invalid HTML" (escaped HTML that an HTML5 parser in strict mode
refuses) and unsafe elements in RSS descriptions and Atom html text; HTML in plain-text
elements (RSS titles, categories, sources; Atom type="text"); "&" and "<" in RSS plain text
not written as hexadecimal character references (the RSS Profile's CharacterData rule);
implausible dates (before 1990); self links not typed as a feed; an RSS image whose link or
title differs from its channel's; an item without a guid.
"""

from __future__ import annotations

import email.utils
import json
import re
from datetime import datetime
from urllib.parse import urlsplit

from lxml import etree

ATOM = "http://www.w3.org/2005/Atom"
CONTENT = "http://purl.org/rss/1.0/modules/content/"
MEDIA = "http://search.yahoo.com/mrss/"
HISTORY = "http://purl.org/syndication/history/1.0"
SY = "http://purl.org/rss/1.0/modules/syndication/"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
WHOLE_SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$")
# Link relations the validator knows (IANA registry, incl. RFC 5005 and WebSub); others are warned about.
KNOWN_RELS = {"alternate", "self", "enclosure", "related", "via", "hub", "current", "prev-archive", "next-archive",
              "first", "last", "previous", "next", "license", "replies", "edit"}
SY_PERIODS = {"hourly", "daily", "weekly", "monthly", "yearly"}
LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")


def _absolute(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def url_problem(url: str) -> str | None:
    """What the validator says about a value where a URL is expected, or None."""
    if not _absolute(url):
        return "url must be a full URL"
    if " " in url or not url.isascii():
        return "IRI found where URL expected (spaces and non-ASCII must be percent-encoded)"
    return None


def _media_problems(parent, where: str) -> list[str]:
    problems = []
    for group in parent.findall(f"{{{MEDIA}}}group"):
        if len(group.findall(f"{{{MEDIA}}}content")) < 2:
            problems.append(f"{where}: media:group must have multiple media:content children")
    for content in parent.iter(f"{{{MEDIA}}}content"):
        problem = url_problem(content.get("url", ""))
        if problem:
            problems.append(f"{where}/media:content: {problem}")
    return problems


def _link_rel_problems(parent, link_tag: str, where: str) -> list[str]:
    problems = []
    for link in parent.findall(link_tag):
        rel = link.get("rel", "alternate")
        if rel not in KNOWN_RELS and not rel.startswith(("http://", "https://")):
            problems.append(f"{where}: unregistered link relationship {rel!r}")
        problem = url_problem(link.get("href", ""))
        if problem:
            problems.append(f"{where}: link href: {problem}")
    return problems


def _rfc822(text: str) -> bool:
    try:
        return email.utils.parsedate_to_datetime(text).tzinfo is not None
    except (TypeError, ValueError):
        return False


def rss_problems(data: bytes) -> list[str]:
    root = etree.fromstring(data)
    problems = []
    if root.tag != "rss" or root.get("version") != "2.0":
        return ["root element must be <rss version=\"2.0\">"]
    channels = root.findall("channel")
    if len(channels) != 1:
        return ["exactly one <channel> required"]
    channel = channels[0]
    for name in ("title", "link", "description"):
        if len(channel.findall(name)) != 1 or not (channel.findtext(name) or "").strip():
            problems.append(f"channel: exactly one non-empty <{name}> required")
    if not _absolute(channel.findtext("link") or ""):
        problems.append("channel/link must be an absolute URL")
    selfs = [link for link in channel.findall(f"{{{ATOM}}}link") if link.get("rel") == "self"]
    if len(selfs) != 1 or not _absolute(selfs[0].get("href", "")):
        problems.append("channel: one atom:link rel=self with an absolute href recommended")
    if not LANGUAGE.match(channel.findtext("language") or ""):
        problems.append("channel/language must be a language tag such as en-us")
    for name in ("lastBuildDate", "pubDate"):
        value = channel.findtext(name)
        if value is not None and not _rfc822(value):
            problems.append(f"channel/{name} must be an RFC 822 date")
    image = channel.find("image")
    if image is not None:
        for name in ("url", "title", "link"):
            if not image.findtext(name):
                problems.append(f"channel/image: <{name}> required")
        if int(image.findtext("width") or 88) > 144 or int(image.findtext("height") or 31) > 400:
            problems.append("channel/image: width <= 144 and height <= 400")
    problems += _link_rel_problems(channel, f"{{{ATOM}}}link", "channel")
    ttl = channel.findtext("ttl")
    if ttl is not None and not ttl.strip().isdigit():
        problems.append("channel/ttl must be a whole number of minutes")
    period = channel.findtext(f"{{{SY}}}updatePeriod")
    if period is not None and period not in SY_PERIODS:
        problems.append(f"channel/sy:updatePeriod {period!r} is not one of {sorted(SY_PERIODS)}")
    frequency = channel.findtext(f"{{{SY}}}updateFrequency")
    if frequency is not None and not (frequency.isdigit() and int(frequency) > 0):
        problems.append("channel/sy:updateFrequency must be a positive integer")
    guids = set()
    for index, item in enumerate(channel.findall("item")):
        where = f"item[{index}]"
        if not (item.findtext("title") or item.findtext("description")):
            problems.append(f"{where}: title or description required")
        for name in ("title", "link", "description", "pubDate", "guid"):
            if len(item.findall(name)) > 1:
                problems.append(f"{where}: at most one <{name}>")
        link = item.findtext("link")
        if link is not None and not _absolute(link):
            problems.append(f"{where}/link must be absolute")
        guid = item.find("guid")
        if guid is not None:
            if guid.get("isPermaLink", "true") == "true" and not _absolute(guid.text or ""):
                problems.append(f"{where}/guid: a permalink guid must be an absolute URL")
            if guid.text in guids:
                problems.append(f"{where}/guid: duplicate")
            guids.add(guid.text)
        if item.findtext("pubDate") is not None and not _rfc822(item.findtext("pubDate")):
            problems.append(f"{where}/pubDate must be an RFC 822 date")
        author = item.findtext("author")
        if author is not None and "@" not in author:
            problems.append(f"{where}/author must be an email address")
        enclosures = item.findall("enclosure")
        if len(enclosures) > 1:
            problems.append(f"{where}: item contains more than one enclosure")
        for enclosure in enclosures:
            if not (_absolute(enclosure.get("url", "")) and (enclosure.get("length") or "").isdigit() and enclosure.get("type")):
                problems.append(f"{where}/enclosure needs absolute url, numeric length and type")
            elif url_problem(enclosure.get("url", "")):
                problems.append(f"{where}/enclosure: {url_problem(enclosure.get('url', ''))}")
        if link is not None and _absolute(link) and url_problem(link):
            problems.append(f"{where}/link: {url_problem(link)}")
        problems += _media_problems(item, where)
        for source in item.findall("source"):
            if url_problem(source.get("url", "")):
                problems.append(f"{where}/source: url attribute: {url_problem(source.get('url', ''))}")
            if not (source.text or "").strip():
                problems.append(f"{where}/source: needs the source's title as text")
    return problems


def atom_problems(data: bytes) -> list[str]:
    root = etree.fromstring(data)
    problems = []
    if root.tag != f"{{{ATOM}}}feed":
        return ["root element must be atom:feed"]

    def one(parent, name, where):
        found = parent.findall(f"{{{ATOM}}}{name}")
        if len(found) != 1 or not (found[0].text or "").strip():
            problems.append(f"{where}: exactly one non-empty atom:{name} required")
        return found[0] if found else None

    def check_date(element, where):
        if element is not None and not RFC3339.match(element.text or ""):
            problems.append(f"{where}: date must be RFC 3339")
        elif element is not None and not WHOLE_SECONDS.match(element.text or ""):
            problems.append(f"{where}: dates are whole seconds in every format")

    def check_links(parent, where):
        alternates = set()
        for link in parent.findall(f"{{{ATOM}}}link"):
            if not _absolute(link.get("href", "")):
                problems.append(f"{where}: link href must be absolute")
            if link.get("rel", "alternate") == "alternate":
                key = (link.get("type"), link.get("hreflang"))
                if key in alternates:
                    problems.append(f"{where}: two alternate links with the same type and hreflang")
                alternates.add(key)

    one(root, "id", "feed")
    one(root, "title", "feed")
    check_date(one(root, "updated", "feed"), "feed/updated")
    check_links(root, "feed")
    if not [link for link in root.findall(f"{{{ATOM}}}link") if link.get("rel") == "self"]:
        problems.append("feed: a rel=self link is recommended")
    problems += _link_rel_problems(root, f"{{{ATOM}}}link", "feed")
    feed_author = root.find(f"{{{ATOM}}}author") is not None
    ids = set()
    updated_seen: dict[str, int] = {}
    for index, entry in enumerate(root.findall(f"{{{ATOM}}}entry")):
        where = f"entry[{index}]"
        entry_id = one(entry, "id", where)
        if entry_id is not None:
            if entry_id.text in ids:
                problems.append(f"{where}: duplicate id")
            ids.add(entry_id.text)
        one(entry, "title", where)
        updated = one(entry, "updated", where)
        check_date(updated, f"{where}/updated")
        if updated is not None and updated.text in updated_seen:
            problems.append(f"{where}: two entries with the same value for atom:updated ({updated.text})")
        if updated is not None:
            updated_seen[updated.text] = index
        problems += _link_rel_problems(entry, f"{{{ATOM}}}link", where)
        problems += _media_problems(entry, where)
        for source in entry.findall(f"{{{ATOM}}}source"):
            for name in ("id", "title", "updated"):
                if not (source.findtext(f"{{{ATOM}}}{name}") or "").strip():
                    problems.append(f"{where}/source: missing atom:{name}")
            check_date(source.find(f"{{{ATOM}}}updated"), f"{where}/source/updated")
        check_date(entry.find(f"{{{ATOM}}}published"), f"{where}/published")
        check_links(entry, where)
        author = entry.find(f"{{{ATOM}}}author")
        if author is None and not feed_author:
            problems.append(f"{where}: atom:author required (in the entry or the feed)")
        if author is not None and not author.findtext(f"{{{ATOM}}}name"):
            problems.append(f"{where}: author needs a name")
        content = entry.find(f"{{{ATOM}}}content")
        if content is not None:
            kind = content.get("type", "text")
            if kind not in ("text", "html", "xhtml") and "/" not in kind:
                problems.append(f"{where}: content type {kind!r} is not text, html, xhtml or a MIME type")
        if content is None and not [link for link in entry.findall(f"{{{ATOM}}}link") if link.get("rel", "alternate") == "alternate"]:
            problems.append(f"{where}: an entry without content needs an alternate link")
    return problems


def json_feed_problems(data: bytes) -> list[str]:
    """JSON Feed 1.1: required fields, absolute ASCII URLs, unique ids, RFC 3339 whole-second dates."""
    feed = json.loads(data)
    problems = []
    if feed.get("version") != "https://jsonfeed.org/version/1.1":
        problems.append("version must be https://jsonfeed.org/version/1.1")
    if not feed.get("title"):
        problems.append("title required")
    for key in ("home_page_url", "feed_url", "icon", "favicon"):
        if key in feed and url_problem(feed[key]):
            problems.append(f"{key}: {url_problem(feed[key])}")
    for hub in feed.get("hubs", []):
        if not hub.get("type") or url_problem(hub.get("url", "")):
            problems.append("hubs: each needs a type and a full URL")
    ids = set()
    for index, item in enumerate(feed.get("items", [])):
        where = f"items[{index}]"
        if not item.get("id") or item["id"] in ids:
            problems.append(f"{where}: a unique id is required")
        ids.add(item.get("id"))
        if not (item.get("content_html") or item.get("content_text")):
            problems.append(f"{where}: content_html or content_text required")
        for key in ("url", "external_url", "image"):
            if key in item and url_problem(item[key]):
                problems.append(f"{where}/{key}: {url_problem(item[key])}")
        for attachment in item.get("attachments", []):
            if url_problem(attachment.get("url", "")) or not attachment.get("mime_type"):
                problems.append(f"{where}/attachments: a full URL and a mime_type are required")
        for key in ("date_published", "date_modified"):
            if key in item and not WHOLE_SECONDS.match(item[key]):
                problems.append(f"{where}/{key}: RFC 3339 in whole seconds")
        for key, value in item.items():
            if key.startswith("_") and not (isinstance(value, dict) and value.get("about")):
                problems.append(f"{where}/{key}: an extension object needs an 'about' string")
    return problems


# HTML element names the validator knows, and those it accepts as safe (a subset of its lists).
HTML_TAGS = {
    "a", "abbr", "acronym", "address", "applet", "area", "article", "aside", "audio", "b", "base", "basefont",
    "bdi", "bdo", "big", "blockquote", "body", "br", "button", "canvas", "caption", "center", "cite", "code",
    "col", "colgroup", "dd", "del", "details", "dfn", "dialog", "dir", "div", "dl", "dt", "em", "embed",
    "fieldset", "figcaption", "figure", "font", "footer", "form", "frame", "frameset", "h1", "h2", "h3", "h4",
    "h5", "h6", "head", "header", "hr", "html", "i", "iframe", "img", "input", "ins", "kbd", "label", "legend",
    "li", "link", "main", "map", "mark", "menu", "meta", "nav", "noscript", "object", "ol", "optgroup", "option",
    "p", "param", "picture", "pre", "q", "s", "samp", "script", "section", "select", "small", "source", "span",
    "strike", "strong", "style", "sub", "summary", "sup", "table", "tbody", "td", "template", "textarea",
    "tfoot", "th", "thead", "time", "title", "tr", "track", "tt", "u", "ul", "var", "video", "wbr",
}
UNSAFE_TAGS = {"applet", "base", "basefont", "body", "embed", "frame", "frameset", "head", "html", "iframe",
               "link", "meta", "object", "param", "script", "style", "title"}
_END_TAG = re.compile(r"</(\w+)>")
_CHARACTER_DATA = re.compile(r"&#[x0-9]|<[/a-zA-Z]")
RSS_TEXT_ELEMENTS = ("title", "category", "source")


def html_problems(markup: str, where: str) -> list[str]:
    """What the validator says about escaped HTML: a strict HTML5 parse error is "Invalid HTML"."""
    import html5lib
    from html5lib.html5parser import ParseError

    try:
        fragment = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parseFragment(markup)
    except ParseError as exc:
        return [f"{where}: Invalid HTML ({exc})"]
    problems = []
    for element in fragment.iter():
        tag = element.tag if isinstance(element.tag, str) else ""
        if tag and tag not in ("DOCUMENT_FRAGMENT",):
            if tag.lower() not in HTML_TAGS:
                problems.append(f"{where}: Non-html tag <{tag}>")
            elif tag.lower() in UNSAFE_TAGS:
                problems.append(f"{where}: may contain a security risk (<{tag}>)")
    return problems


def text_html_problems(text: str, where: str) -> list[str]:
    """HTML where plain text is expected: an end tag of a known HTML element."""
    tags = [tag for tag in _END_TAG.findall(text) if tag.lower() in HTML_TAGS]
    return [f"{where}: plain text should not contain HTML (</{tags[0]}>)"] if tags else []


def _raw_lines(data: bytes, element) -> list[str]:
    lines = data.decode("utf-8", "replace").split("\n")
    first = (element.sourceline or 1) - 1
    return lines[first:first + (element.text or "").count("\n") + 1]


def _implausible(moment: datetime | None, where: str) -> list[str]:
    if moment is not None and moment.year < 1990:
        return [f"{where}: Implausible date {moment.isoformat()}"]
    return []


def aa_problems(data: bytes) -> list[str]:
    """The validator's warnings at level AA for an RSS 2.0 or Atom document (see the module doc)."""
    root = etree.fromstring(data)
    problems: list[str] = []
    if root.tag == "rss":
        channel = root.find("channel")
        for element in root.iter(*RSS_TEXT_ELEMENTS):
            where = f"{element.getparent().tag}/{element.tag}"
            text = element.text or ""
            problems += text_html_problems(text, where)
            if _CHARACTER_DATA.search(text) and not any("&#x" in line for line in _raw_lines(data, element)):
                problems.append(f"{where}: Encode \"&\" and \"<\" in plain text using hexadecimal character "
                                "references")
        for element in root.iter("description", f"{{{CONTENT}}}encoded"):
            if element.getparent().tag == "item":
                problems += html_problems(element.text or "", f"item/{etree.QName(element).localname}")
        for element in root.iter("pubDate", "lastBuildDate"):
            if element.text and _rfc822(element.text):
                problems += _implausible(email.utils.parsedate_to_datetime(element.text), element.tag)
        for item in channel.findall("item") if channel is not None else []:
            if item.find("guid") is None:
                problems.append("item: Missing item element: guid")
        image = channel.find("image") if channel is not None else None
        if image is not None:
            if image.findtext("link") != channel.findtext("link"):
                problems.append("channel/image: Image link doesn't match channel link")
            if image.findtext("title") != channel.findtext("title"):
                problems.append("channel/image: Image title doesn't match channel title")
        links = root.iter(f"{{{ATOM}}}link")
    else:
        for element in root.iter(f"{{{ATOM}}}title", f"{{{ATOM}}}summary", f"{{{ATOM}}}content",
                                 f"{{{ATOM}}}subtitle", f"{{{ATOM}}}rights"):
            where = f"{etree.QName(element.getparent()).localname}/{etree.QName(element).localname}"
            kind = element.get("type", "text")
            if kind == "html":
                problems += html_problems(element.text or "", where)
            elif kind == "text":
                problems += text_html_problems(element.text or "", where)
        for element in root.iter(f"{{{ATOM}}}updated", f"{{{ATOM}}}published"):
            if element.text and RFC3339.match(element.text):
                problems += _implausible(parse_rfc3339(element.text), etree.QName(element).localname)
        links = root.iter(f"{{{ATOM}}}link")
    feed_type = "application/rss+xml" if root.tag == "rss" else "application/atom+xml"
    for link in links:
        if link.get("rel") == "self" and etree.QName(link.getparent()).localname in ("channel", "feed"):
            kind = (link.get("type") or "").split(";")[0]
            if kind and kind not in ("application/atom+xml", "application/rss+xml", "application/rdf+xml"):
                problems.append(f"self link: type {kind!r} is not a feed type")
            elif kind and kind != feed_type:
                problems.append(f"self link: typed {kind} in a document that is {feed_type}")
    return problems


def parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))

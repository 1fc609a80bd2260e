"""News items written as files: ``content/<slug>.md`` with YAML front matter and a Markdown body.

Errors name the file, the line and the field (``content/foo.md:3: date: ...``),
because the person fixing them is an editor with a text editor, not a programmer.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from markdown_it import MarkdownIt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import Config
from ..errors import ContentError
from ..items import Enclosure, Image, Item, Source, clean_html, html_to_text, plain_text

log = logging.getLogger(__name__)

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_FENCE = "---"


class _FrontMatterLoader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as text, so a date without a timezone can be refused."""


_FrontMatterLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _parse_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date) or isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        raise ValueError("needs a time and a timezone, e.g. 2021-11-04T09:00:00-04:00")
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError("not a valid date (use ISO 8601, e.g. 2021-11-04T09:00:00-04:00)") from None
    else:
        raise ValueError("not a valid date")
    if parsed.tzinfo is None:
        raise ValueError("needs a timezone, e.g. 2021-11-04T09:00:00-04:00")
    return parsed


class FrontMatter(BaseModel):
    """The fields an editor may write; anything else is a typo and is refused."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1)
    date: datetime
    updated: datetime | None = None
    id: str | None = None
    link: str | None = None
    author: str | None = None
    summary: str | None = None
    tags: list[str] = []
    image: Image | None = None
    enclosure: Enclosure | None = None
    citation: str | None = None
    source: Source | None = None

    _dates = field_validator("date", "updated", mode="before")(
        lambda value: None if value is None else _parse_datetime(value)
    )

    @field_validator("title", "summary", "author", "citation")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value


@dataclass(frozen=True)
class _Document:
    data: dict[str, Any]
    key_lines: dict[str, int]
    body: str
    body_line: int


def _split(text: str, shown: str) -> _Document:
    lines = text.splitlines()
    if not lines or lines[0].strip() != _FENCE:
        raise ContentError(shown, 1, None, "must start with a '---' line opening the YAML front matter")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == _FENCE)
    except StopIteration:
        raise ContentError(shown, 1, None, "front matter is not closed by a '---' line") from None
    header = "\n".join(lines[1:end])
    loader = _FrontMatterLoader(header)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark else 1
        problem = getattr(exc, "problem", exc)
        raise ContentError(shown, line, None, f"front matter is not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ContentError(shown, 2, None, "front matter must be a mapping of fields")
    key_lines = {}
    if isinstance(node, yaml.MappingNode):
        key_lines = {str(key.value): key.start_mark.line + 2 for key, _ in node.value}
    return _Document(data, key_lines, "\n".join(lines[end + 1 :]), end + 2)


_markdown = MarkdownIt("commonmark", {"html": True, "typographer": False}).enable("table")


def _summary_from(html: str, limit: int = 280) -> str:
    text = html_to_text(html)
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"


def read_item(path: Path, config: Config, shown: str | None = None) -> Item:
    """Parse one content file into an Item, or raise ContentError naming file, line and field."""
    shown = shown or str(path)
    slug = path.stem
    if not _SLUG.match(slug):
        raise ContentError(shown, None, "slug", "file name must be lower-case letters, digits and hyphens")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ContentError(shown, None, None, f"not UTF-8 text ({exc.reason})") from None
    doc = _split(text, shown)
    try:
        meta = FrontMatter(**doc.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        top = str(first["loc"][0]) if first["loc"] else ""
        line = doc.key_lines.get(top, 1)
        if first["type"] == "missing":
            problem = "field required"
        elif first["type"] == "extra_forbidden":
            problem = "unknown field"
        else:
            problem = first["msg"].removeprefix("Value error, ")
        raise ContentError(shown, line, field, problem) from None
    if not doc.body.strip():
        raise ContentError(shown, doc.body_line, "body", "empty: write the story below the front matter")

    site = config.site
    link = meta.link or site.item_link.format(base_url=site.base_url, slug=slug)
    link = site.url(link)
    content_html = clean_html(_markdown.render(doc.body), base_url=link)
    image = meta.image
    if image is not None:
        image = Image(**{**image.model_dump(), "url": site.url(image.url)})
    enclosure = meta.enclosure
    if enclosure is not None:
        enclosure = Enclosure(**{**enclosure.model_dump(), "url": site.url(enclosure.url)})
    return Item(
        id=meta.id or f"{site.item_id_prefix}{slug}",
        slug=slug,
        title=plain_text(meta.title),
        link=link,
        published=meta.date,
        updated=meta.updated,
        author=meta.author,
        summary=plain_text(meta.summary) if meta.summary else _summary_from(content_html),
        content_html=content_html,
        tags=tuple(meta.tags),
        image=image,
        enclosure=enclosure,
        citation=meta.citation.strip() if meta.citation else None,
        source=meta.source,
    )


def read_content(config: Config) -> list[Item]:
    """Read every ``*.md`` file of the content folder; the first broken file stops the read."""
    folder = config.path("content")
    if not folder.is_dir():
        raise ContentError(str(folder), None, None, "content folder does not exist")
    items: list[Item] = []
    seen: dict[str, str] = {}
    for path in sorted(folder.glob("*.md")):
        shown = _display(path, config.root)
        item = read_item(path, config, shown)
        if item.id in seen:
            raise ContentError(shown, None, "id", f"duplicate id {item.id!r}, also used by {seen[item.id]}")
        seen[item.id] = shown
        items.append(item)
    log.debug("read %d items from %s", len(items), folder)
    return items


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)

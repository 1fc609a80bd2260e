"""Stories as the desk sees them: the same ``content/*.md`` files the pipeline reads, listed, loaded into a form
and written back.  A draft lives in ``content/drafts/`` (which no run reads, so it reaches no feed or digest);
publishing moves it into ``content/``.  Every save is checked by the same parser as ``pipeline validate``, so the
desk shows the same messages, next to the field they name."""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from PIL import Image, UnidentifiedImageError

from ..config import Config
from ..errors import ContentError, PipelineError
from ..items import Item, clean_html
from ..sources.local import _SLUG, _split, read_item, render_markdown

log = logging.getLogger(__name__)

DRAFTS = "drafts"
IMAGES = "images"
FILES = "files"
IMAGE_FORMATS = {"JPEG": ("image/jpeg", ".jpg"), "PNG": ("image/png", ".png"), "GIF": ("image/gif", ".gif"),
                 "WEBP": ("image/webp", ".webp")}
# Front-matter fields the desk's form edits; others written by hand (id, link, updated) are kept as they are.
FORM_KEYS = ("title", "date", "author", "summary", "tags", "image", "enclosure", "citation", "source")


@dataclass
class StoryRow:
    slug: str
    status: str  # draft | scheduled | published | broken
    title: str
    date: datetime | None
    tags: tuple[str, ...] = ()
    image: str | None = None
    error: str | None = None


@dataclass
class Story:
    """One story as the form shows it; the front matter fields flattened."""

    slug: str = ""
    draft: bool = True
    title: str = ""
    date: str = ""
    author: str = ""
    summary: str = ""
    tags: str = ""
    image: dict[str, Any] | None = None
    enclosure: dict[str, Any] | None = None
    citation: str = ""
    source_name: str = ""
    source_url: str = ""
    body: str = ""
    kept: dict[str, Any] = field(default_factory=dict)  # fields the form does not edit


def _folder(config: Config, draft: bool) -> Path:
    content = config.path("content")
    return content / DRAFTS if draft else content


def story_path(config: Config, slug: str) -> tuple[Path, bool] | None:
    """The file of a story and whether it is a draft, or None."""
    if not _SLUG.match(slug):
        return None
    for draft in (False, True):
        path = _folder(config, draft) / f"{slug}.md"
        if path.is_file():
            return path, draft
    return None


def shown_path(config: Config, path: Path) -> str:
    try:
        return str(path.relative_to(config.root))
    except ValueError:
        return str(path)


def list_stories(config: Config, now: datetime | None = None) -> list[StoryRow]:
    """Every story, drafts too, newest first; a file that does not parse is listed with its error."""
    now = now or datetime.now(timezone.utc)
    rows: list[StoryRow] = []
    for draft in (False, True):
        folder = _folder(config, draft)
        for path in sorted(folder.glob("*.md")) if folder.is_dir() else []:
            try:
                item = read_item(path, config, shown_path(config, path))
            except ContentError as exc:
                rows.append(StoryRow(path.stem, "broken", path.stem, None, error=str(exc)))
                continue
            status = "draft" if draft else ("scheduled" if item.published > now else "published")
            rows.append(StoryRow(item.slug, status, item.title, item.published, item.tags,
                                 item.image.url if item.image else None))
    rows.sort(key=lambda row: (row.date or datetime.min.replace(tzinfo=timezone.utc)), reverse=True)
    return rows


def load_story(config: Config, slug: str) -> Story:
    found = story_path(config, slug)
    if found is None:
        raise PipelineError(f"no story {slug!r}")
    path, draft = found
    text = path.read_text(encoding="utf-8")
    doc = _split(text.replace("\r\n", "\n"), shown_path(config, path))
    data = dict(doc.data)
    source = data.get("source") or {}
    tags = data.get("tags") or []
    story = Story(slug=slug, draft=draft, title=str(data.get("title") or ""), date=str(data.get("date") or ""),
                  author=str(data.get("author") or ""), summary=str(data.get("summary") or ""),
                  tags=", ".join(str(tag) for tag in tags) if isinstance(tags, list) else str(tags),
                  image=data.get("image") if isinstance(data.get("image"), dict) else None,
                  enclosure=data.get("enclosure") if isinstance(data.get("enclosure"), dict) else None,
                  citation=str(data.get("citation") or ""),
                  source_name=str(source.get("name") or "") if isinstance(source, dict) else "",
                  source_url=str(source.get("url") or "") if isinstance(source, dict) else "",
                  body=doc.body.lstrip("\n"),
                  kept={key: value for key, value in data.items() if key not in FORM_KEYS})
    return story


def front_matter(story: Story) -> dict[str, Any]:
    data: dict[str, Any] = {"title": story.title.strip(), "date": story.date.strip()}
    if story.author.strip():
        data["author"] = story.author.strip()
    if story.summary.strip():
        data["summary"] = " ".join(story.summary.split())
    tags = [tag.strip() for tag in story.tags.split(",") if tag.strip()]
    if tags:
        data["tags"] = tags
    if story.image:
        data["image"] = story.image
    if story.enclosure:
        data["enclosure"] = story.enclosure
    if story.citation.strip():
        data["citation"] = " ".join(story.citation.split())
    if story.source_name.strip():
        data["source"] = {"name": story.source_name.strip(), **({"url": story.source_url.strip()}
                                                               if story.source_url.strip() else {})}
    data.update(story.kept)
    return data


def render_file(story: Story) -> str:
    header = yaml.safe_dump(front_matter(story), allow_unicode=True, sort_keys=False, width=100)
    body = story.body.replace("\r\n", "\n").strip("\n")
    return f"---\n{header}---\n{body}\n"


class StoryInvalid(PipelineError):
    """What ``pipeline validate`` would say, and the form field it belongs next to."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _form_field(content_field: str | None) -> str:
    if not content_field:
        return "body"
    parts = content_field.split(".")
    if parts[0] == "source":
        return "source_name" if parts[-1] != "url" else "source_url"
    if parts[0] in ("image", "enclosure"):
        return "image_alt" if parts[0] == "image" and parts[-1] == "alt" else parts[0]
    return parts[0]


def check_story(config: Config, story: Story) -> Item:
    """Parse the file the story would be, as ``pipeline validate`` would; StoryInvalid names the field."""
    if not _SLUG.match(story.slug):
        raise StoryInvalid("slug", f"content/{story.slug}.md: slug: file name must be lower-case letters, "
                                   "digits and hyphens")
    shown = shown_path(config, _folder(config, story.draft) / f"{story.slug}.md")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{story.slug}.md"
        path.write_text(render_file(story), encoding="utf-8")
        try:
            return read_item(path, config, shown)
        except ContentError as exc:
            raise StoryInvalid(_form_field(exc.field), str(exc)) from None


@dataclass(frozen=True)
class Upload:
    """An uploaded file, checked and named but not yet written: the story's save writes it, so a story that
    is refused leaves no file behind."""

    path: Path
    data: bytes
    front: dict[str, Any]  # the story's image or enclosure mapping, naming it


def save_story(config: Config, story: Story, *, new: bool, uploads: tuple[Upload, ...] = ()) -> Path:
    """Write the story (checked first) and its uploaded files, atomically; moving it between drafts and
    content.  Nothing is written unless the story passes; an upload new here is removed if the story fails
    to be written after all."""
    found = story_path(config, story.slug)
    if new and found is not None:
        raise StoryInvalid("slug", f"{shown_path(config, found[0])}: slug: a story with this name exists")
    check_story(config, story)
    target = _folder(config, story.draft) / f"{story.slug}.md"
    created = []
    try:
        for upload in uploads:
            if not upload.path.exists():
                created.append(upload.path)
            upload.path.parent.mkdir(parents=True, exist_ok=True)
            upload.path.write_bytes(upload.data)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.tmp")
        temp.write_text(render_file(story), encoding="utf-8")
        os.replace(temp, target)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    if found is not None and found[0] != target:
        found[0].unlink()
    log.info("story %s saved (%s)", story.slug, "draft" if story.draft else "published")
    return target


class UploadRefused(PipelineError):
    """An uploaded file the desk does not keep, and the form field it came from."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", Path(name).stem.lower()).strip("-")
    return stem[:60] or "file"


def _within_limit(config: Config, field: str, filename: str, data: bytes, advice: str) -> None:
    """Each file is held to ``desk.max_upload_bytes`` (the request limit alone lets a file through that is
    just over it, the form's other fields being small)."""
    limit = config.desk.max_upload_bytes
    if len(data) > limit:
        raise UploadRefused(field, f"{filename}: {len(data):,} bytes is over the limit of {limit:,} bytes per "
                                   f"file; {advice}")


def image_upload(config: Config, slug: str, filename: str, data: bytes, alt: str) -> Upload:
    """An uploaded image for ``content/images/`` (published with the site) if Pillow reads it as JPEG, PNG,
    GIF or WebP; its front matter mapping has its real size and type."""

    _within_limit(config, "image", filename, data, "make the image smaller (a width of 1200 pixels is plenty)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            kind, (width, height) = image.format, image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UploadRefused("image", f"{filename}: not an image (upload a JPEG, PNG, GIF or WebP file)") from None
    if kind not in IMAGE_FORMATS:
        raise UploadRefused("image", f"{filename}: {kind} images are not shown by mail programs; use JPEG, PNG, "
                                     "GIF or WebP")
    mime, suffix = IMAGE_FORMATS[kind]
    name = f"{slug}-{_safe_stem(filename)}{suffix}"
    return Upload(config.path("content") / IMAGES / name, data,
                  {"url": f"{IMAGES}/{name}", "alt": alt.strip(), "width": width, "height": height, "type": mime,
                   "length": len(data)})


def enclosure_upload(config: Config, slug: str, filename: str, data: bytes, mime: str) -> Upload:
    """An uploaded file (audio, a PDF) for ``content/files/``: the RSS enclosure."""
    _within_limit(config, "enclosure", filename, data, "link to a larger file from the story's text instead")
    if not re.fullmatch(r"[\w.+-]+/[\w.+-]+", mime or ""):
        mime = "application/octet-stream"
    suffix = re.sub(r"[^a-z0-9.]", "", Path(filename).suffix.lower())[:10]
    name = f"{slug}-{_safe_stem(filename)}{suffix}"
    return Upload(config.path("content") / FILES / name, data,
                  {"url": f"{FILES}/{name}", "type": mime, "length": len(data)})


def preview_html(config: Config, body: str, slug: str = "preview") -> str:
    """The story's body as the feeds and the digest carry it (Markdown, cleaned)."""

    # Relative URLs resolve as the published story's do: against site.base_url unless item_link points elsewhere.
    given = config.site.item_link
    link = config.site.url(given.format(base_url=config.site.base_url, slug=slug or "preview")) if given else None
    return clean_html(render_markdown(body or ""), base_url=link or config.site.base_url)

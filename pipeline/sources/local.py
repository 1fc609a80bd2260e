"""News items written as files: ``content/<slug>.md`` with YAML front matter and a Markdown body.

Errors name the file, the line and the field (``content/foo.md:3: date: ...``),
because the person fixing them is an editor with a text editor, not a programmer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from markdown_it import MarkdownIt

try:
    from markdown_it_pyrs import MarkdownIt as _Compiled
except ImportError:  # no wheel for this Python or platform: markdown-it-py renders every story
    _Compiled = None  # type: ignore[assignment, misc]
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import Config
from ..errors import ContentError
from ..items import Enclosure, Image, Item, Source, clean_html, exact_text, html_to_text
from ..media import content_path, file_facts, published_name
from ..program import program_fingerprint
from ..state.parse_cache import ParsedFileCache
from ..urls import story_url
from ..yaml_keys import repeated_key

log = logging.getLogger(__name__)

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_FENCE = "---"


class _FrontMatterLoader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as text, so a date without a timezone can be refused."""


_FrontMatterLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

# libyaml's parser when PyYAML was built with it (about 8x faster than the pure-Python one), with the
# same constructor and resolver.  Its error marks can differ, so a file it refuses is parsed again by
# the pure-Python loader, whose error (and line) is the one reported.
_FastLoader: Any = _FrontMatterLoader
if hasattr(yaml, "CSafeLoader"):
    class _CFrontMatterLoader(yaml.CSafeLoader):
        yaml_implicit_resolvers = _FrontMatterLoader.yaml_implicit_resolvers

    _FastLoader = _CFrontMatterLoader


def _load_yaml(header: str, loader_class: Any) -> tuple[Any, Any]:
    loader = loader_class(header)
    try:
        node = loader.get_single_node()
        return node, loader.construct_document(node) if node is not None else {}
    finally:
        loader.dispose()


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

    @field_validator("image", "enclosure")
    @classmethod
    def _no_local_file(cls, value: Image | Enclosure | None) -> Image | Enclosure | None:
        if value is not None and value.local_file is not None:
            raise ValueError("local_file: unknown field (the file is the one `url` names)")
        return value

    @field_validator("title", "summary", "author", "citation")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value


M = TypeVar("M", Image, Enclosure)


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
    try:
        try:
            node, data = _load_yaml(header, _FastLoader)
        except yaml.YAMLError:
            if _FastLoader is _FrontMatterLoader:
                raise
            node, data = _load_yaml(header, _FrontMatterLoader)  # raises the reference error
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark else 1
        problem = getattr(exc, "problem", exc)
        raise ContentError(shown, line, None, f"front matter is not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ContentError(shown, 2, None, "front matter must be a mapping of fields")
    repeated = repeated_key(node)
    if repeated:
        raise ContentError(shown, repeated[1] + 2, repeated[0], "given twice; keep one (the last would win silently)")
    key_lines = {}
    if isinstance(node, yaml.MappingNode):
        key_lines = {str(key.value): key.start_mark.line + 2 for key, _ in node.value}
    return _Document(data, key_lines, "\n".join(lines[end + 1 :]), end + 2)


# CommonMark with raw HTML (nh3 cleans it after) and GFM tables; no typographer, so quotes stay as written.
_reference_markdown = MarkdownIt("commonmark", {"html": True, "typographer": False}).enable("table")
# markdown-it's rules compiled (markdown-it-pyrs, 14x faster; installed where it has wheels). Its 0.4 release
# panics on an unmatched backtick after an unclosed "[" (upstream markdown-it-rust issue 40), so a body
# with a backtick is always rendered by markdown-it-py, and any other panic falls back to it too.
_compiled_markdown = _Compiled("commonmark").enable("table") if _Compiled is not None else None


def render_markdown(body: str) -> str:
    """A story's Markdown as HTML (not yet cleaned): the compiled renderer where it is safe, else markdown-it-py."""
    if _compiled_markdown is not None and "`" not in body:
        try:
            return _compiled_markdown.render(body)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # noqa: BLE001 - pyo3's PanicException derives from BaseException only
            log.warning("the compiled Markdown renderer failed on a story; rendering it with markdown-it-py")
    return _reference_markdown.render(body)


def _summary_from(html: str, limit: int = 280) -> str:
    text = html_to_text(html)
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"


def read_item(path: Path, config: Config, shown: str | None = None) -> Item:
    """Parse one content file into an Item, or raise ContentError naming file, line and field."""
    return _parse_item(path, path.read_bytes(), config, shown or str(path))


def _parse_item(path: Path, raw: bytes, config: Config, shown: str) -> Item:
    slug = path.stem
    if not _SLUG.match(slug):
        raise ContentError(shown, None, "slug", "file name must be lower-case letters, digits and hyphens")
    try:
        # As read_text: universal newlines, so line numbers count the same for CRLF files.
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
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
    given = meta.link or (site.item_link.format(base_url=site.base_url, slug=slug) if site.item_link else None)
    link = site.url(given) if given else story_url(config, slug)
    # Relative URLs in the body are relative to a link given by hand; by default to the content
    # folder as published (site.base_url), where `images/x.jpg` of the front matter is too.
    content_html = clean_html(render_markdown(doc.body), base_url=link if given else site.base_url)
    image = _published_media(meta.image, config) if meta.image is not None else None
    enclosure = _published_media(meta.enclosure, config) if meta.enclosure is not None else None
    return Item(
        id=meta.id or f"{site.item_id_prefix}{slug}",
        slug=slug,
        title=exact_text(meta.title),
        link=link,
        published=meta.date,
        updated=meta.updated,
        author=meta.author,
        summary=exact_text(meta.summary) if meta.summary else _summary_from(content_html),
        content_html=content_html,
        tags=tuple(meta.tags),
        image=image,
        enclosure=enclosure,
        citation=meta.citation.strip() if meta.citation else None,
        source=meta.source,
        local=True,
    )


def _published_media(media: M, config: Config) -> M:
    """A medium as the outputs give it: a file of the content folder at its published (URL-safe) name,
    typed from its name unless the content says otherwise; media elsewhere keep their URL."""
    site = config.site
    fields = media.model_dump(exclude={"type"} if "type" not in media.model_fields_set else set())
    rel = content_path(media.url, site.base_url)
    if rel is None:
        return type(media)(**{**fields, "url": site.url(media.url)})
    fields.update(url=site.url(published_name(rel)), local_file=rel)
    if isinstance(media, Enclosure) and "type" not in media.model_fields_set:
        facts = file_facts(config.path("content") / rel)
        guessed = facts[1] if facts else None
        fields["type"] = guessed or "application/octet-stream"
    return type(media)(**fields)


def with_file_facts(item: Item, folder: Path) -> Item:
    """The item with the byte length of its local media files as they are now (a parsed item may come
    from the parse cache, made when the file had another size); a missing file keeps what was declared."""
    update: dict[str, Any] = {}
    for name in ("image", "enclosure"):
        media = getattr(item, name)
        if media is None or media.local_file is None:
            continue
        facts = file_facts(folder / media.local_file)
        if facts is not None and facts[0] != media.length:
            update[name] = media.model_copy(update={"length": facts[0]})
    return item.model_copy(update=update) if update else item


def field_line(raw: bytes, name: str, sub: str | None = None) -> int | None:
    """The line of a front-matter field (``image``) or of a key inside it (``image``, ``url``)."""
    line = _field_line(raw, name)
    if line is None or sub is None:
        return line
    lines = raw.decode("utf-8", "replace").splitlines()
    for number in range(line + 1, len(lines) + 1):
        text = lines[number - 1]
        if text.strip() == _FENCE or (text[:1].strip() and not text.startswith("#")):
            break
        if re.match(rf"\s+{re.escape(sub)}\s*:", text):
            return number
    return line


@dataclass(frozen=True)
class SourceFile:
    """One input file as a run saw it: read once, hashed once, then used for the fingerprint of the
    run's inputs and, for stories, for parsing, so both see the same bytes (an edit made mid-run
    shows next run).  Other files (images, audio) are hashed as a stream and not kept."""

    name: str  # relative to its folder, with "/" between parts
    digest: str  # sha256, hex
    raw: bytes | None = field(default=None, repr=False)  # kept for stories (``keep``) only


def scan_folder(folder: Path, *, recursive: bool = True, keep: str = ".md", others: bool = True) -> list[SourceFile]:
    """Every file under ``folder`` (or only its own files), by name as strings; a missing folder is
    empty.  Files directly in the folder whose names end with ``keep`` keep their bytes; without
    ``others``, only those are read.

    os.scandir rather than Path.glob: at 10,000 files glob's Path objects cost more than the reads.
    Symlinked folders are not entered (as glob did; a link to a parent would loop), and a link to a
    file outside ``folder`` is refused: a link to ``/etc/passwd`` named ``story.md`` must not publish it."""
    found: list[SourceFile] = []
    root = os.path.realpath(folder)

    def walk(directory: str, prefix: str) -> None:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.is_symlink() and not entry.is_dir():
                target = os.path.realpath(entry.path)
                if not target.startswith(root + os.sep):
                    raise ContentError(f"{folder.name}/{prefix}{entry.name}", None, None,
                                       f"a symbolic link to {target}, outside {folder.name}/; refused (copy the "
                                       f"file into {folder.name}/ instead)")
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    walk(entry.path, f"{prefix}{entry.name}/")
            elif entry.is_file() and (others or (not prefix and entry.name.endswith(keep))):
                with open(entry.path, "rb") as f:
                    if not prefix and entry.name.endswith(keep):
                        raw = f.read()
                        found.append(SourceFile(entry.name, hashlib.sha256(raw).hexdigest(), raw))
                    elif others:
                        found.append(SourceFile(prefix + entry.name, hashlib.file_digest(f, "sha256").hexdigest()))

    walk(str(folder), "")
    found.sort(key=lambda file: file.name)
    return found


def scan_content(config: Config) -> list[SourceFile]:
    """Every file of the content folder: the stories with their bytes, the rest (images) hashed."""
    return scan_folder(config.path("content"))


def read_content(config: Config, *, remember: bool = False, files: list[SourceFile] | None = None,
                 origins: dict[str, str] | None = None) -> list[Item]:
    """Read every ``*.md`` file of the content folder; the first broken file stops the read.

    ``files`` is the folder as ``scan_content`` read it earlier in the run (each story's bytes are
    let go of, in the list, as it is read); without it the stories are read now.  A file whose
    bytes were parsed before (same name, same content hash, same config and program) is taken
    from the parse cache in the state folder instead of being parsed again; with ``remember``
    the cache then holds exactly the files read now.

    ``origins`` is filled with what each item (by id) was made from: its file's name and content
    hash and the parse cache's key (config, program).  The same origin always gives the same item,
    so a cache of things built from items can use it instead of serialising each item again."""
    folder = config.path("content")
    if not folder.is_dir():
        raise ContentError(str(folder), None, None, "content folder does not exist")
    if files is None:
        files = scan_folder(folder, recursive=False, others=False)
    cache = ParseCache.load(config, writable=remember)
    items: list[Item] = []
    seen: dict[str, str] = {}  # item id -> file name
    parsed = 0

    def shown(name: str) -> str:  # made only when needed: 10,000 Path objects cost a tenth of a rebuild's read
        return _display(folder / name, config.root)

    try:
        for index, file in enumerate(files):
            if file.raw is None or not file.name.endswith(".md"):
                continue
            item = cache.get(file.name, file.digest)
            if item is None:
                item = _parse_item(folder / file.name, file.raw, config, shown(file.name))
                cache.put(file.name, file.digest, item)
                parsed += 1
            item = with_file_facts(item, folder)
            if item.id in seen:
                raise ContentError(shown(file.name), _field_line(file.raw, "id"), "id",
                                   f"duplicate id {item.id!r}, also used by {shown(seen[item.id])}")
            seen[item.id] = file.name
            items.append(item)
            if origins is not None:
                sizes = ",".join(str(media.length) for media in (item.image, item.enclosure) if media is not None)
                origins[item.id] = f"{cache.key}:{file.name}:{file.digest}:{sizes}"
            # The story is read: its bytes go now, not when the run is done with the list (the bytes of
            # every story, then every item, held at once were a third of a cold build's peak memory).
            files[index] = replace(file, raw=None)
        if remember:
            cache.save()
    finally:
        cache.close()
    log.debug("read %d items from %s (%d parsed, the rest from the cache)", len(items), folder, parsed)
    return items


class ParseCache:
    """Parsed content files by file name and content hash (``state.parse_cache``: one SQLite row per file,
    so a run never holds the whole cache), each item pickled on its own.

    Everything is keyed, so nothing stale can come back: an edited file has a new hash, a
    renamed one a new name, a deleted one is dropped when the cache is saved, and a change of
    the config or the program (``program_fingerprint``: its code and libraries) discards the whole cache."""

    FILE = "content-cache.sqlite"
    OLD_FILE = "content-cache.pickle"  # what versions before 2026-12 kept: removed when the new one is saved
    FORMAT = 3

    def __init__(self, rows: ParsedFileCache):
        self.rows = rows
        self.key = rows.key

    @classmethod
    def load(cls, config: Config, *, writable: bool = False) -> ParseCache:
        path = config.path("state") / cls.FILE
        key = hashlib.sha256(f"{cls.FORMAT}\0{program_fingerprint()}\0{config.model_dump_json()}".encode()).hexdigest()
        return cls(ParsedFileCache(path, key, writable=writable))

    def get(self, name: str, digest: str) -> Item | None:
        """The item parsed from file ``name`` when its content had this sha256, if cached."""
        data = self.rows.get(name, digest)
        if data is None:
            return None
        try:
            item = pickle.loads(data)
        except Exception:  # noqa: BLE001 - a damaged row is parsed again
            return None
        return item if isinstance(item, Item) else None

    def put(self, name: str, digest: str, item: Item) -> None:
        self.rows.put(name, digest, pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))

    def save(self) -> None:
        """Keep the files read this time (and only those), in one transaction; unchanged, nothing is written."""
        self.rows.save()
        try:
            (self.rows.path.parent / self.OLD_FILE).unlink(missing_ok=True)
        except OSError as exc:  # only disk space lost, never the run
            log.warning("could not remove the old content cache %s (%s)", self.OLD_FILE, exc)

    def close(self) -> None:
        self.rows.close()


def _field_line(raw: bytes, name: str) -> int | None:
    """The line of a top-level front-matter field, for errors found after parsing (None when the
    field is not written, e.g. an id made from the file name)."""
    lines = raw.decode("utf-8", "replace").splitlines()
    if not lines or lines[0].strip() != _FENCE:
        return None
    for number, line in enumerate(lines[1:], start=2):
        if line.strip() == _FENCE:
            return None
        if re.match(rf"{re.escape(name)}\s*:", line):
            return number
    return None


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)

"""Local images: the files behind image URLs that point into the published site.

An image URL under ``site.base_url`` is a promise that the file is published
there.  Item images are looked up in the content folder at the same relative
path (``images/x.jpg`` → ``content/images/x.jpg``), the logo at ``site.logo.file``,
the footer's social icons in the templates folder (``templates/icons/``, else the package's);
the build copies them into the output folder, and lint checks they exist and
that the sizes written in the markup are their real ones.
"""

from __future__ import annotations

import logging
import os
import posixpath
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from ..config import Config
from ..items import Item
from .digest import PACKAGE_TEMPLATES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalImage:
    url: str
    source: Path | None  # the file to publish; None when no file was found
    target: Path         # where it goes in the output folder


def relative_to_site(url: str, config: Config) -> str | None:
    """The path of a URL inside the published site, or None when it points elsewhere."""
    base = config.site.base_url
    if not url.startswith(base):
        return None
    rel = url[len(base):].split("?", 1)[0].split("#", 1)[0]
    return rel or None


_resolved = threading.local()  # .roots: folder -> its real path, .folders: config.path's, during one site_images call


def _inside(folder: Path, rel: str) -> Path | None:
    """``folder / rel`` when ``rel`` stays inside ``folder`` as written (no ``..`` out of it, not absolute);
    whether a file found there really is inside (no link out) is ``_real_file``'s check."""
    norm = posixpath.normpath(rel)
    if norm.startswith(("/", "../")) or norm == ".." or norm == ".":
        return None
    return folder / norm


def _folder(config: Config, which: Literal["content", "templates", "output"]) -> Path:
    """``config.path(which)``, found once per ``site_images`` call (each call resolves: 60 µs, three per image)."""
    return getattr(_resolved, "folders", {}).get(which) or config.path(which)


def _real_file(folder: Path, path: Path) -> bool:
    """``path`` is a file whose real path is inside ``folder``'s: a link out of the folder is not followed.
    Checked for the one file found, not for every candidate (resolving each was most of an unchanged build)."""
    if not path.is_file():
        return False
    roots = getattr(_resolved, "roots", {})
    root = roots.get(folder)
    if root is None:
        root = os.path.realpath(folder)
    return os.path.realpath(path).startswith(root + os.sep)


def _media_files(items: Iterable[Item]) -> dict[str, list[str]]:
    """The content files the items name, by media URL, in the items' order."""
    files: dict[str, list[str]] = {}
    for item in items:
        for media in (item.image, item.enclosure):
            if media is not None and media.local_file is not None:
                files.setdefault(media.url, []).append(media.local_file)
    return files


def locate(url: str, config: Config, items: Iterable[Item] = (),
           media_files: dict[str, list[str]] | None = None) -> LocalImage | None:
    """Where a site image or medium comes from: the content file an item names for it (published
    under its URL-safe name, ``pipeline.media``), the logo file, the content or templates folder at
    the URL's path, or (put there by hand) the output."""
    rel = relative_to_site(url, config)
    if rel is None:
        return None
    rel = unquote(rel)
    output = _folder(config, "output")
    target = _inside(output, rel)
    if target is None:
        return LocalImage(url, None, output / "invalid")
    logo = config.site.logo
    named = (media_files if media_files is not None else _media_files(items)).get(url, [])

    content, templates = _folder(config, "content"), _folder(config, "templates")

    # (folder, file) in order, each looked at only if those before are missing
    def candidates() -> Iterator[tuple[Path | None, Path | None]]:
        for local_file in named:
            yield content, _inside(content, local_file)
        if logo is not None and logo.file is not None and logo.url == url:
            yield None, config.resolve(logo.file)  # the operator's own file, wherever config.yaml says
        yield content, _inside(content, rel)
        yield templates, _inside(templates, rel)
        yield PACKAGE_TEMPLATES, _inside(PACKAGE_TEMPLATES, rel)
        yield output, target

    source = next((path for folder, path in candidates() if path is not None
                   and (path.is_file() if folder is None else _real_file(folder, path))), None)
    return LocalImage(url, source, target)


ICON_FOLDER = "icons"


def social_icon_url(name: str, config: Config) -> str:
    """Where a social network's footer icon is published (from templates/icons/<name>.png)."""
    return config.site.url(f"{ICON_FOLDER}/{name}.png")


def site_images(items: list[Item], config: Config) -> list[LocalImage]:
    """Every image and medium of the outputs that must be published with the site: item images and
    enclosures, the logo and the footer icons."""
    urls = [media.url for item in items for media in (item.image, item.enclosure) if media is not None]
    if config.site.logo is not None:
        urls.append(config.site.logo.url)
    urls += [social_icon_url(name, config) for name, _label, _url in config.organisation.social.icons()]
    media_files = _media_files(items)  # once: looked up per URL, it made publishing quadratic in the stories
    # The source folders resolved once, not per image (the output folder is a link a run switches: always read).
    _resolved.folders = {which: config.path(which) for which in ("content", "templates", "output")}
    sources = (_resolved.folders["content"], _resolved.folders["templates"], PACKAGE_TEMPLATES)
    _resolved.roots = {folder: os.path.realpath(folder) for folder in sources}
    try:
        found = [locate(url, config, items, media_files) for url in dict.fromkeys(urls)]
    finally:
        _resolved.roots, _resolved.folders = {}, {}
    return [image for image in found if image is not None]


def image_files(items: list[Item], config: Config) -> dict[Path, bytes]:
    """The bytes of each local image to write into the output folder; missing files are logged (lint stops sends)."""
    files: dict[Path, bytes] = {}
    for image in site_images(items, config):
        if image.source is None:
            log.warning("media %s: no file for it in %s; it will not be published", image.url, config.path("content"))
        elif image.source != image.target:
            files[image.target] = image.source.read_bytes()
    for item in items:  # an enclosure kept in the content folder (the desk's uploads) is published the same way
        found = locate(item.enclosure.url, config) if item.enclosure is not None else None
        if found is not None and found.source is not None and found.source != found.target:
            files[found.target] = found.source.read_bytes()
    return files


def real_size(path: Path) -> tuple[int, int] | None:
    """An image file's pixel size (Pillow), or None when it is not an image Pillow reads."""
    from PIL import Image, UnidentifiedImageError  # here: only the checks that measure an image need Pillow

    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError):
        return None

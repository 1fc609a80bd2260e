"""Media that content names (item images, enclosures: audio, video, PDF): one naming rule, facts from the file.

A content file names its media by path in the content folder (``images/MS walk é.jpg``).  Each file
is published in the output folder under a URL-safe name made by ``published_name``, the one rule used
everywhere (the item's URL, the copy in ``public/``, lint):

- a path whose every part is already URL-safe (ASCII letters, digits, ``.``, ``_``, ``-``, ``~``) is
  published as it is: ``images/mesems-trial-design.png``;
- any other part is spelled in ASCII (accents dropped, every run of other characters one ``-``) and
  gets the first 8 hex digits of the SHA-1 of its original spelling, so two names never collide:
  ``images/MS walk é.jpg`` → ``images/MS-walk-e-<8 hex>.jpg``.

The item then says where its file came from (``local_file``), and its length (bytes) and, when the
content gave none, its type come from the file itself.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

_SAFE_PART = re.compile(r"^[A-Za-z0-9._~-]+$")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._~-]+")


def published_part(part: str) -> str:
    """One path segment as it is published."""
    if _SAFE_PART.match(part) and part not in (".", ".."):
        return part
    stem, dot, extension = part.rpartition(".")
    if not stem:
        stem, dot, extension = part, "", ""
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    ascii_stem = _UNSAFE_RUN.sub("-", ascii_stem).strip("-.") or "file"
    ascii_extension = _UNSAFE_RUN.sub("", extension)
    digest = hashlib.sha1(part.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{ascii_stem}-{digest}{dot if ascii_extension else ''}{ascii_extension}"


def published_name(path: str) -> str:
    """The URL-safe path under which a content-relative media path is published (see the module doc)."""
    return "/".join(published_part(part) for part in path.split("/") if part)


def content_path(url: str, base_url: str) -> str | None:
    """The content-relative path a media URL names: a relative URL (``images/x.jpg``) or one under
    ``site.base_url``, percent-decoded; None for media elsewhere (another host) or a path that climbs out."""
    if url.startswith(base_url):
        url = url[len(base_url):]
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return None
    rel = unquote(parts.path).lstrip("/")
    if not rel or any(part == ".." for part in rel.split("/")):
        return None
    return rel


def guess_type(path: str) -> str | None:
    return mimetypes.guess_type(path)[0]


def file_facts(file: Path) -> tuple[int, str | None] | None:
    """Size in bytes and media type (from the name) of a file, or None when it is not there."""
    try:
        size = file.stat().st_size if file.is_file() else None
    except OSError:
        size = None
    if size is None:
        return None
    return size, guess_type(file.name)

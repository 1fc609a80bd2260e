"""A newsroom-shaped corpus (issue 26): stories with 3-5 tags out of ~50 and a JPEG every 4th story,
written both as our content folder and as the same stories for Hugo, the peer the build is timed against.

    python -m bench.corpus FOLDER 10000      # FOLDER/ours (a pipeline project) and FOLDER/hugo (a Hugo site)
"""

from __future__ import annotations

import io
import random
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from . import data

TAGS = [f"{a} {b}" for a in ("research", "clinical", "advocacy", "living", "care", "policy", "science", "family",
                             "diet", "exercise")
        for b in ("news", "trials", "stories", "updates", "guides")]  # 50 tags
START = datetime(2021, 11, 4, 9, tzinfo=timezone.utc)
IMAGE_EVERY = 4
LIMIT = 50  # feeds.limit of the generated project: the main and topic feeds' window


def jpeg() -> bytes:
    """One small real JPEG (Pillow), the same bytes for every illustrated story."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (120, 63), (40, 90, 160)).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def story(rng: random.Random, n: int) -> tuple[dict, str]:
    """The front matter and Markdown body of story ``n`` (newest is 0)."""
    front: dict = {
        "title": f"{data.sentence(rng, 8)[:-1]} ({n})",
        "date": (START - timedelta(hours=n * 3)).isoformat(),
        "author": "National MS Society",
        "summary": data.sentence(rng, 30),
        "tags": rng.sample(TAGS, rng.randint(3, 5)),
    }
    if n % IMAGE_EVERY == 0:
        front["image"] = {"url": f"images/story-{n:05d}.jpg", "alt": "Illustration", "width": 120, "height": 63}
    return front, data.body_markdown(rng)


def write_corpus(root: Path, count: int, *, seed: int = 7) -> tuple[Path, Path]:
    """``root/ours/config.yaml`` (a pipeline project) and ``root/hugo`` (a Hugo site) with the same stories."""
    config = data.make_project(root / "ours", limit=LIMIT)
    content = config.path("content")
    images = content / "images"
    images.mkdir(parents=True, exist_ok=True)
    hugo = root / "hugo"
    _hugo_site(hugo)
    picture = jpeg()
    rng = random.Random(seed)
    for n in range(count):
        front, body = story(rng, n)
        name = f"story-{n:05d}"
        (content / f"{name}.md").write_text("---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n" + body)
        if "image" in front:
            (images / f"{name}.jpg").write_bytes(picture)
            (hugo / "static" / "images" / f"{name}.jpg").write_bytes(picture)
            front = {**front, "image": f"/images/{name}.jpg"}
        (hugo / "content" / "stories" / f"{name}.md").write_text(
            "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n" + body)
    return config.source_file, hugo


def _hugo_site(root: Path) -> None:
    """A minimal Hugo site: a page per story, the story list and a page per tag, RSS for each (Hugo's own)."""
    for folder in ("content/stories", "static/images", "layouts/_default"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "hugo.toml").write_text(
        'baseURL = "https://news.example.org/"\ntitle = "Benchmark"\nlanguageCode = "en-us"\n'
        "paginate = 20\ndisableKinds = ['sitemap', 'robotsTXT', '404']\n"
        f"[services.rss]\nlimit = {LIMIT}\n")
    layouts = root / "layouts" / "_default"
    (layouts / "baseof.html").write_text(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{{ .Title }}</title>'
        '<link rel="alternate" type="application/rss+xml" href="{{ "index.xml" | absURL }}"></head>'
        "<body>{{ block \"main\" . }}{{ end }}</body></html>\n")
    (layouts / "single.html").write_text(
        '{{ define "main" }}<article><h1>{{ .Title }}</h1><time>{{ .Date.Format "January 2, 2006" }}</time>'
        "{{ with .Params.image }}<img src=\"{{ . }}\" alt=\"\">{{ end }}{{ .Content }}"
        '<ul>{{ range .Params.tags }}<li><a href="{{ "tags/" | absURL }}{{ . | urlize }}/">{{ . }}</a></li>{{ end }}'
        "</ul></article>{{ end }}\n")
    (layouts / "list.html").write_text(
        '{{ define "main" }}<h1>{{ .Title }}</h1><ul>{{ range .Paginator.Pages }}<li><a href="{{ .Permalink }}">'
        "{{ .Title }}</a> {{ .Summary }}</li>{{ end }}</ul>{{ end }}\n")


def edit(config_file: Path, n: int, flip: int) -> None:
    """Change one story's body (its listings' fields stay), as an editor fixing a sentence does."""
    path = config_file.parent / "content" / f"story-{n:05d}.md"
    text = path.read_text()
    marker = "\nEdited:"
    text = text.split(marker)[0].rstrip("\n") + f"\n{marker} correction {flip}.\n"
    path.write_text(text)


if __name__ == "__main__":
    where, size = Path(sys.argv[1]), int(sys.argv[2])
    print(*write_corpus(where, size))

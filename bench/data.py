"""Synthetic but realistic data: news items with ~2 KB HTML bodies, tags and images; subscribers."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from pipeline.config import Config, load_config
from pipeline.items import Image, Item

REPO = Path(__file__).resolve().parents[1]
# The config the benchmarks start from: the tests' frozen copy of the shipped one, never the working
# tree's config.yaml (a project made one's own must not change the numbers, or where the bench sends).
FIXTURE_CONFIG = REPO / "tests" / "fixtures" / "project" / "config.yaml"
WORDS = ["multiple", "sclerosis", "research", "trial", "participants", "myelin", "repair", "inflammation", "lesions", "treatment", "symptoms", "fatigue", "mobility", "advocacy", "program", "services", "neurologist", "MRI", "results", "safety", "phase", "study", "funding", "community", "volunteers", "support", "wellness", "progress", "cure", "relapsing", "progressive"]
TAGS = ["research", "clinical trials", "advocacy", "living with ms", "programs and services", "stem cells"]


def sentence(rng: random.Random, n: int = 14) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def body_markdown(rng: random.Random) -> str:
    paragraphs = [" ".join(sentence(rng) for _ in range(4)) for _ in range(4)]
    bullets = "\n".join(f"- **Point {i}:** {sentence(rng)} [More](/research/{i})" for i in range(1, 4))
    return "\n\n".join(paragraphs[:2] + [bullets] + paragraphs[2:]) + "\n"


def make_project(root: Path, *, limit: int, subscribers_db: bool = False, **delivery) -> Config:
    """A throw-away project folder with the shipped templates and the tests' config, tuned for the benchmark."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "content").mkdir(exist_ok=True)
    data = yaml.safe_load(FIXTURE_CONFIG.read_text())
    data["feeds"]["limit"] = limit
    # Sending needs a postal address (CAN-SPAM; lint refuses without one) and images whose files exist:
    # the synthetic items and the logo point at an image host outside the site instead.
    data["organisation"]["postal_address"] = "Benchmark address, 1 Example Street, Example City"
    data["site"]["logo"]["url"] = "https://images.example.org/logo.png"
    data["site"]["logo"].pop("file", None)  # published from the image host, not from a file of the project
    data["digest"]["limit"] = limit
    for key, value in delivery.items():
        node = data["delivery"]
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    (root / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(root / "config.yaml")


def smtp_project(root: Path, port: int, *, items: int = 10, **smtp: object) -> Config:
    """A project that sends to an SMTP sink on loopback, with ``items`` synthetic stories and quiet logs
    (the benchmarks that run the real command line read its output only when it fails)."""
    settings = {"host": "127.0.0.1", "port": port, "security": "none", "concurrency": 2, **smtp}
    config = make_project(root, limit=items, transport="smtp", **{f"smtp.{k}": v for k, v in settings.items()})
    data = yaml.safe_load(config.source_file.read_text())
    data["logging"]["level"] = "WARNING"
    config.source_file.write_text(yaml.safe_dump(data, sort_keys=False))
    write_content(config, items)
    return load_config(config.source_file)


def write_content(config: Config, count: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    start = datetime(2021, 11, 4, 9, tzinfo=timezone.utc)
    folder = config.path("content")
    for n in range(count):
        date = (start - timedelta(hours=n * 7)).isoformat()
        tags = rng.sample(TAGS, 2)
        front = {
            "title": f"{sentence(rng, 8)[:-1]} ({n})",
            "date": date,
            "author": "National MS Society",
            "tags": tags,
            "image": {"url": f"https://images.example.org/item-{n}.jpg", "alt": "Illustration", "width": 1200, "height": 630,
                      "type": "image/jpeg", "length": 150000 + n},
        }
        text = "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n" + body_markdown(rng)
        (folder / f"item-{n:05d}.md").write_text(text, encoding="utf-8")


def make_items(config: Config, count: int, seed: int = 1) -> list[Item]:
    """Items built directly (no files), for the feed and digest cases."""
    from markdown_it import MarkdownIt

    from pipeline.items import clean_html

    rng = random.Random(seed)
    md = MarkdownIt("commonmark")
    start = datetime(2021, 11, 4, 9, tzinfo=timezone.utc)
    items = []
    for n in range(count):
        link = f"https://www.nationalmssociety.org/news/item-{n}"
        html = clean_html(md.render(body_markdown(rng)), link)
        items.append(Item(
            id=f"tag:nationalmssociety.org,2021:news/item-{n}", slug=f"item-{n}", title=f"{sentence(rng, 8)[:-1]} ({n})",
            link=link, published=start - timedelta(hours=n * 7), author="National MS Society",
            summary=sentence(rng, 30), content_html=html, tags=tuple(rng.sample(TAGS, 2)),
            image=Image(url=f"https://www.nationalmssociety.org/images/item-{n}.jpg", alt="Illustration",
                        width=1200, height=630, length=150000 + n),
        ))
    return items


def subscriber_rows(count: int) -> list[tuple[str, str | None, dict]]:
    return [(f"reader{n:07d}@example.org", f"Reader {n}", {}) for n in range(count)]

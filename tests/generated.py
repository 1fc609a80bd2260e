"""Generated items for feed tests at scale: distinct hourly dates, tags, and images whose names need encoding."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pipeline.items import Image, Item

START = datetime(2021, 11, 4, 9, tzinfo=timezone.utc)
TAGS = ("research", "Stem Cells", "advocacy", "living with ms", "Café science")


def make_items(count: int, start: datetime = START) -> list[Item]:
    """``count`` items, item 0 the newest, each an hour older than the one before."""
    return [make_item(n, start - timedelta(hours=n)) for n in range(count)]


def make_item(n: int, published: datetime) -> Item:
    return Item(
        id=f"tag:example.org,2021:generated/{n}", slug=f"generated-{n}", title=f"Generated story {n}",
        link=f"https://www.example.org/news/generated-{n}", published=published,
        summary=f"Summary of story {n}.", content_html=f"<p>Body of story {n}.</p>",
        tags=(TAGS[n % len(TAGS)], TAGS[(n + 2) % len(TAGS)]),
        image=Image(url=f"https://www.example.org/images/photo {n} é.jpg", alt="Illustration", width=1200,
                    height=630, length=150_000 + n),
    )

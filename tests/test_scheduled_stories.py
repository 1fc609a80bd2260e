"""A story dated in the future is scheduled: no feed, page or digest shows it before its date, and the
first run from then on publishes it, though no file changed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import feedparser
import pytest

from pipeline import usecases
from pipeline.config import load_config

from .conftest import write_item

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)
WALK = 'title: "Walk MS returns to the waterfront"\ndate: 2026-12-10T09:00:00-05:00\nsummary: "Sign up for May."'


class Clock:
    """The run's "now", moved by the test (never slept on)."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock(NOW)
    for module in ("pipeline.usecases.common", "pipeline.usecases.runs", "pipeline.publish.outputs"):  # one clock
        monkeypatch.setattr(f"{module}.utcnow", clock)
    return clock


def titles(project, name: str = "rss.xml") -> list[str]:
    return [entry.title for entry in feedparser.parse((project / "public" / name).read_bytes()).entries]


def test_a_story_dated_later_is_in_no_feed_page_or_digest_before_its_date(project, clock):
    write_item(project, "walk-ms", WALK)
    usecases.run(load_config(project / "config.yaml"), action="feeds", progress=False)
    for name in ("rss.xml", "atom.xml"):
        assert "Walk MS returns to the waterfront" not in titles(project, name)
    assert "Walk MS" not in (project / "public" / "feed.json").read_text()
    assert not (project / "public" / "stories" / "walk-ms").exists()
    assert "Walk MS" not in (project / "public" / "digest.html").read_text()


def test_the_first_run_after_its_date_publishes_it_though_no_file_changed(project, clock):
    write_item(project, "walk-ms", WALK)
    config = load_config(project / "config.yaml")
    usecases.run(config, action="feeds", progress=False)
    assert usecases.run(config, action="feeds", progress=False).unchanged  # still before its date
    clock.now = datetime(2026, 12, 10, 14, 0, 1, tzinfo=timezone.utc)  # 09:00 in New York, and a second
    outcome = usecases.run(config, action="feeds", progress=False)
    assert not outcome.unchanged
    assert titles(project)[0] == "Walk MS returns to the waterfront"
    assert (project / "public" / "stories" / "walk-ms" / "index.html").is_file()


def test_the_next_digest_does_not_lead_with_a_scheduled_story(project, clock, secret):
    write_item(project, "walk-ms", WALK)
    items, _findings = usecases.lint(load_config(project / "config.yaml"))
    assert "walk-ms" not in {item.slug for item in items}
    clock.now += timedelta(days=4)
    items, _findings = usecases.lint(load_config(project / "config.yaml"))
    assert "walk-ms" in {item.slug for item in items}


def test_a_send_after_a_story_came_out_publishes_its_page_before_mailing_it(project, clock, secret):
    """A send-only job (`pipeline send`) would otherwise mail a link to a page the next feeds run makes."""
    write_item(project, "walk-ms", WALK)
    config = load_config(project / "config.yaml")
    usecases.run(config, action="feeds", progress=False)
    clock.now += timedelta(days=4)
    usecases.run(config, action="send", progress=False)
    assert (project / "public" / "stories" / "walk-ms" / "index.html").is_file()
    assert titles(project)[0] == "Walk MS returns to the waterfront"

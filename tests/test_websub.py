"""WebSub: feeds advertise the hub, a run pings it once per changed feed, and a dead hub harms nothing."""

from __future__ import annotations

import json
import logging
import socket

import feedparser
import pytest

from pipeline import usecases
from pipeline.config import load_config

from .conftest import set_config, write_item
from .hub_server import HubServer

FEEDS = ["atom.xml", "feed.json", "rss.xml"]
TOPICS = ["clinical-trials", "living-with-ms", "research"]


@pytest.fixture
def hub():
    with HubServer() as server:
        yield server


def _with_hub(project, url: str):
    return load_config(set_config(project, **{"feeds.websub_hub": url, "feeds.websub_timeout": 5}))


def _all_feed_urls(config) -> list[str]:
    folders = ["", *(f"tags/{slug}/" for slug in TOPICS)]
    return sorted(config.site.url(folder + name) for folder in folders for name in FEEDS)


def test_every_feed_advertises_the_hub(project, hub):
    config = _with_hub(project, hub.url)
    usecases.run(config, progress=False)
    public = project / "public"
    for name in ("rss.xml", "atom.xml", "tags/research/rss.xml"):
        links = feedparser.parse((public / name).read_bytes()).feed.links
        assert [link.href for link in links if link.rel == "hub"] == [hub.url], name
    assert json.loads((public / "feed.json").read_text())["hubs"] == [{"type": "WebSub", "url": hub.url}]


def test_a_first_run_pings_once_for_each_new_feed(project, hub):
    config = _with_hub(project, hub.url)
    usecases.run(config, progress=False)
    assert hub.published_urls() == _all_feed_urls(config)
    assert all(ping["hub.mode"] == ["publish"] for ping in hub.pings)
    assert all(ping["content-type"] == ["application/x-www-form-urlencoded"] for ping in hub.pings)


def test_a_changed_feed_is_pinged_exactly_once_and_unchanged_feeds_not_at_all(project, hub):
    config = _with_hub(project, hub.url)
    usecases.run(config, progress=False)
    hub.pings.clear()
    write_item(project, "remyelination", 'title: "Remyelination news"\ndate: 2021-11-20T09:00:00-05:00\n'
               "tags: [research]")
    usecases.run(config, progress=False)
    changed = ["", "tags/research/"]
    assert hub.published_urls() == sorted(config.site.url(f + name) for f in changed for name in FEEDS)


def test_an_unchanged_run_pings_nothing(project, hub):
    config = _with_hub(project, hub.url)
    usecases.run(config, progress=False)
    hub.pings.clear()
    assert usecases.run(config, progress=False).unchanged
    assert hub.pings == []


def test_a_dead_hub_costs_one_log_line_and_never_the_run(project, caplog):
    with socket.socket() as probe:  # a port nobody listens on any more
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/hub"
    config = _with_hub(project, dead)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        result = usecases.run(config, progress=False)
    assert (project / "public" / "rss.xml").exists() and result.written
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.publish.websub"]
    assert len(lines) == 1 and dead in lines[0] and "12 of 12 pings failed" in lines[0]


def test_a_hub_that_refuses_costs_one_log_line(project, caplog):
    with HubServer(status=500) as refusing, caplog.at_level(logging.WARNING, logger="pipeline"):
        usecases.run(_with_hub(project, refusing.url), progress=False)
        assert len(refusing.pings) == 12
    (line,) = [r.getMessage() for r in caplog.records if r.name == "pipeline.publish.websub"]
    assert "HTTP 500" in line


def test_a_hub_that_never_answers_is_given_up_after_the_timeout(project, caplog):
    with HubServer(hang=True) as silent, caplog.at_level(logging.WARNING, logger="pipeline"):
        config = load_config(set_config(project, **{"feeds.websub_hub": silent.url, "feeds.websub_timeout": 0.3}))
        usecases.run(config, progress=False)
        assert len(silent.pings) == 1  # a hub that timed out once is not asked eleven more times
    (line,) = [r.getMessage() for r in caplog.records if r.name == "pipeline.publish.websub"]
    assert "12 of 12 pings failed" in line and "Timeout" in line


def test_without_a_hub_the_feeds_name_none(project):
    usecases.run(load_config(project / "config.yaml"), progress=False)
    assert b'rel="hub"' not in (project / "public" / "rss.xml").read_bytes()
    assert "hubs" not in json.loads((project / "public" / "feed.json").read_text())

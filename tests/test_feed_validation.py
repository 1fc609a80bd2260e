"""Every feed the pipeline writes passes the W3C validator's rules (as tests/feedcheck.py encodes them)
and parses cleanly in feedparser: main, per-topic and archive feeds, at scale and with remote items."""

from __future__ import annotations

import feedparser
import pytest
from lxml import etree

from pipeline import usecases
from pipeline.config import load_config
from pipeline.publish.feed_files import feed_files
from pipeline.sources import read_content

from .conftest import set_config
from .feed_server import FeedServer, Response
from .feedcheck import aa_problems, atom_problems, json_feed_problems, rss_problems
from .generated import make_items
from .test_sources import ATOM, JSON_FEED, RSS


def problems(files: dict[str, bytes]) -> dict[str, list[str]]:
    """Findings per feed document; HTML pages are skipped."""
    found = {}
    for name, data in files.items():
        if name.endswith(".json"):
            found[name] = json_feed_problems(data)
        elif name.endswith(".xml"):
            parsed = feedparser.parse(data)
            bozo = [f"feedparser: {parsed.get('bozo_exception')}"] if parsed.bozo else []
            is_atom = etree.fromstring(data).tag == "{http://www.w3.org/2005/Atom}feed"
            found[name] = bozo + (atom_problems(data) if is_atom else rss_problems(data)) + aa_problems(data)
    return {name: found_problems for name, found_problems in found.items() if found_problems}


def test_the_default_feeds_are_valid(config):
    files = feed_files(read_content(config), config)
    assert [name for name in files if name.startswith("tags/") and name.endswith(".xml")]
    assert problems(files) == {}


def test_a_thousand_items_with_images_in_main_topic_and_archive_feeds_are_valid(config):
    files = feed_files(make_items(1000), config)
    archives = [name for name in files if name.startswith("feed-archive/")]
    assert len(archives) == 2 * 50  # 980 older items in pages of 20, and the empty page still to fill
    topic_archives = [name for name in files if name.startswith("tags/") and "/feed-archive/" in name]
    assert len([name for name in files if name.startswith("tags/")]) == 5 * 4 + len(topic_archives)
    assert len(topic_archives) == 5 * 2 * 20  # 5 topics of 400 items: 380 older, 19 full pages and an empty one
    assert problems(files) == {}


def test_remote_items_merged_in_keep_every_feed_valid(project):
    with FeedServer() as server:
        server.routes.update({"/blog": Response(body=RSS),
                              "/partner": Response(body=ATOM, headers={"Content-Type": "application/atom+xml"}),
                              "/chapter": Response(body=JSON_FEED, headers={"Content-Type": "application/feed+json"})})
        sources = [{"name": name, "url": server.url(f"/{name}")} for name in ("blog", "partner", "chapter")]
        config = load_config(set_config(project, sources=sources, **{"feeds.topics": {"min_items": 1}}))
        usecases.run(config, progress=False)
    public = project / "public"
    files = {p.relative_to(public).as_posix(): p.read_bytes() for p in public.rglob("*") if p.is_file()}
    assert "tags/community/rss.xml" in files  # a remote-only topic
    assert problems(files) == {}


@pytest.mark.parametrize("rule", ["media:group must have multiple", "IRI found where URL expected"])
def test_the_checks_catch_what_the_validator_reported(rule):
    item = ('<item><title>t</title><guid isPermaLink="false">x</guid><media:group>'
            '<media:content url="https://example.org/a é.jpg" medium="image"/></media:group></item>')
    feed = ('<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/" xmlns:atom="http://www.w3.org/2005/Atom">'
            '<channel><title>t</title><link>https://example.org/</link><description>d</description>'
            '<language>en</language><atom:link rel="self" href="https://example.org/rss.xml"/>'
            f"{item}</channel></rss>").encode()
    assert any(rule in problem for problem in rss_problems(feed))

"""The nine text and data defects of issue 11, each reproduced as a reader or the W3C validator met it."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import feedparser
import pytest
from lxml import etree

from pipeline import usecases
from pipeline.config import RemoteSource, load_config
from pipeline.errors import ContentError
from pipeline.mail.lint import lint_feed
from pipeline.media import published_name
from pipeline.publish.digest import render_digest
from pipeline.publish.feeds import build_feeds
from pipeline.sources import read_content
from pipeline.text import html_to_text, plain_text

from .conftest import set_config, write_item
from .feed_server import FeedServer, Response
from .feedcheck import atom_problems, json_feed_problems, parse_rfc3339, rss_problems

ATOM_NS = "{http://www.w3.org/2005/Atom}"
MEDIA_NS = "{http://search.yahoo.com/mrss/}"


@pytest.fixture
def server():
    with FeedServer() as srv:
        yield srv


def _remote(project, server, body: bytes, **headers: str):
    """One remote source serving ``body``; returns the config that reads it."""
    server.routes["/feed"] = Response(body=body, headers=headers)
    return load_config(set_config(project, sources=[{"name": "remote", "url": server.url("/feed")}]))


def _published(project) -> dict[str, dict]:
    return {item["title"]: item for item in json.loads((project / "public" / "feed.json").read_text())["items"]}


def _rss(items: str, channel_link: str = "https://news.example.org/") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Newsletter</title>'
            f'<link>{channel_link}</link><description>d</description>{items}</channel></rss>').encode()


# 1. a non-breaking space ------------------------------------------------------------------------

def test_a_no_break_space_stays_a_character_in_feeds_digest_text_and_subject(project, config):
    write_item(project, "walk", 'title: "Bonjour\u00a0! MS Walk\u00a02021"\ndate: 2021-11-20T09:00:00-05:00\n'
               'summary: "Rendez-vous\u00a0: samedi"')
    items = read_content(config)
    feeds = build_feeds(items, config)
    digest = render_digest(items, config)
    for name, text in (("rss", feeds.rss.decode()), ("atom", feeds.atom.decode()), ("json", feeds.json.decode()),
                       ("html", digest.html), ("text", digest.text), ("subject", digest.subject)):
        assert "&nbsp;" not in text and "&amp;nbsp;" not in text, name
    assert feedparser.parse(feeds.rss).entries[0].title == "Bonjour\u00a0! MS Walk\u00a02021"
    assert digest.subject.endswith("Bonjour\u00a0! MS Walk\u00a02021")
    assert "Rendez-vous\u00a0: samedi" in digest.text


# 2. HTML to text ---------------------------------------------------------------------------------

def test_block_elements_separate_words_instead_of_gluing_them():
    assert html_to_text("<p>one</p><p>two</p><ul><li>three</li><li>four</li></ul>five<br>six") == \
        "one two three four five six"


def test_entities_are_decoded_exactly_once():
    assert html_to_text("Walk &amp;amp; Roll &nbsp;&copy;") == "Walk &amp; Roll \u00a0©"


def test_plain_text_that_looks_like_a_tag_is_kept():
    assert plain_text("Using the <video> element in HTML5") == "Using the <video> element in HTML5"
    assert plain_text("Q&A & <MS> research") == "Q&A & <MS> research"


def test_a_local_title_with_a_tag_like_word_reaches_the_feeds_whole(project, config):
    write_item(project, "video", 'title: "Using the <video> element in HTML5 & <MS> sites"\n'
               "date: 2021-11-20T09:00:00-05:00")
    feeds = build_feeds(read_content(config), config)
    for data in (feeds.rss, feeds.atom):
        assert feedparser.parse(data).entries[0].title == "Using the <video> element in HTML5 & <MS> sites"
    assert json.loads(feeds.json)["items"][0]["title"] == "Using the <video> element in HTML5 & <MS> sites"


def test_a_remote_html_description_becomes_a_summary_with_every_word(project, server):
    config = _remote(project, server, _rss(
        "<item><title>Two paragraphs</title><link>https://news.example.org/2</link>"
        "<description>&lt;p&gt;one&lt;/p&gt;&lt;p&gt;two&lt;/p&gt;</description></item>"))
    usecases.run(config, progress=False)
    assert _published(project)["Two paragraphs"]["summary"] == "one two"


# 3. remote items without a link ------------------------------------------------------------------

def test_remote_items_without_links_stay_distinct(project, server):
    items = "".join(f'<item><title>Issue {n}</title><guid isPermaLink="false">nl-{n}</guid>'
                    f"<description>Number {n}</description></item>" for n in (1, 2, 3))
    usecases.run(_remote(project, server, _rss(items)), progress=False)
    published = _published(project)
    assert {"Issue 1", "Issue 2", "Issue 3"} <= set(published)
    assert "url" not in published["Issue 1"]  # no permalink is invented for it
    assert published["Issue 1"]["external_url"] == "https://news.example.org/"


# 4. the source elements --------------------------------------------------------------------------

def test_rss_source_names_the_source_feed_and_atom_source_has_id_and_updated(project, server):
    config = _remote(project, server, _rss(
        "<item><title>From afar</title><link>https://news.example.org/far</link>"
        "<pubDate>Wed, 10 Nov 2021 12:00:00 GMT</pubDate><description>d</description></item>"))
    usecases.run(config, progress=False)
    rss = etree.parse(str(project / "public" / "rss.xml"))
    source = rss.find("channel/item/source")
    assert source.get("url") == server.url("/feed") and source.text == "Newsletter"
    atom = etree.parse(str(project / "public" / "atom.xml"))
    atom_source = atom.find(f"{ATOM_NS}entry/{ATOM_NS}source")
    assert atom_source.findtext(f"{ATOM_NS}id") == server.url("/feed")
    assert atom_source.findtext(f"{ATOM_NS}updated") == "2021-11-10T12:00:00+00:00"


# 5. authorship -----------------------------------------------------------------------------------

def test_a_remote_item_without_an_author_is_credited_to_its_source_not_to_us(project, server, config):
    usecases.run(_remote(project, server, _rss(
        "<item><title>Anonymous</title><link>https://news.example.org/a</link><description>d</description></item>")),
        progress=False)
    entry = next(e for e in feedparser.parse((project / "public" / "rss.xml").read_bytes()).entries
                 if e.title == "Anonymous")
    assert entry.author == "Newsletter" != config.organisation.name
    assert _published(project)["Anonymous"]["authors"] == [{"name": "Newsletter"}]


# 6. enclosures and types -------------------------------------------------------------------------

def test_a_remote_audio_enclosure_is_kept(project, server):
    usecases.run(_remote(project, server, _rss(
        "<item><title>Podcast 12</title><link>https://news.example.org/p12</link><description>d</description>"
        '<enclosure url="https://news.example.org/p12.mp3" type="audio/mpeg" length="123456"/></item>')),
        progress=False)
    item = etree.parse(str(project / "public" / "rss.xml")).find("channel/item")
    assert item.find("enclosure").attrib == {"url": "https://news.example.org/p12.mp3", "length": "123456",
                                             "type": "audio/mpeg"}
    assert _published(project)["Podcast 12"]["attachments"] == [
        {"url": "https://news.example.org/p12.mp3", "mime_type": "audio/mpeg", "size_in_bytes": 123456}]


def test_a_local_image_that_is_not_an_image_type_is_refused(project, config):
    write_item(project, "sound", 'title: "Sound"\ndate: 2021-11-20T09:00:00-05:00\n'
               'image: {url: "talk.mp3", alt: "a talk", type: "audio/mpeg"}')
    with pytest.raises(ContentError, match=r"image\.type: 'audio/mpeg' is not an image type"):
        read_content(config)


def test_a_remote_png_without_a_declared_type_is_typed_from_its_name(project, server):
    usecases.run(_remote(project, server, _rss(
        "<item><title>Chart</title><link>https://news.example.org/c</link><description>d</description>"
        '<enclosure url="https://news.example.org/chart.png" length="2048"/></item>')), progress=False)
    enclosure = etree.parse(str(project / "public" / "rss.xml")).find("channel/item/enclosure")
    assert enclosure.get("type") == "image/png" and enclosure.get("length") == "2048"


# 7. URLs, not IRIs -------------------------------------------------------------------------------

def test_image_names_with_spaces_and_accents_are_published_under_url_safe_names(project, config):
    write_item(project, "photo", 'title: "Photo"\ndate: 2021-11-20T09:00:00-05:00\n'
               'image: {url: "images/MS walk é.jpg", alt: "walkers"}')
    feeds = build_feeds(read_content(config), config)
    safe = published_name("images/MS walk é.jpg")
    assert re.fullmatch(r"images/MS-walk-e-[0-9a-f]{8}\.jpg", safe)
    expected = "https://www.nationalmssociety.org/news-feed/" + safe
    item = etree.fromstring(feeds.rss).find("channel/item")
    assert item.find("enclosure").get("url") == expected == item.find(f"{MEDIA_NS}content").get("url")
    assert json.loads(feeds.json)["items"][0]["image"] == expected
    assert rss_problems(feeds.rss) == [] and atom_problems(feeds.atom) == []


def test_lint_catches_an_iri_in_a_feed():
    feed = ('<rss version="2.0"><channel><title>t</title><link>https://example.org/</link><description>d</description>'
            '<item><title>i</title><enclosure url="https://example.org/a b é.jpg" length="1" type="image/jpeg"/>'
            "</item></channel></rss>").encode()
    assert [f.rule for f in lint_feed(feed, "rss.xml")] == ["feed-url-iri"]


# 8. default source names -------------------------------------------------------------------------

def test_long_similar_source_urls_get_distinct_default_names(project):
    base = "https://feeds.example.org/" + "category/research/" * 4
    config = load_config(set_config(project, sources=[{"url": base + "one.xml"}, {"url": base + "two.xml"}]))
    first, second = (source.name for source in config.sources)
    assert first != second and len(first) <= 60 and first.startswith("feeds-example-org-category")


def test_a_short_default_source_name_is_unchanged():
    assert RemoteSource(url="https://research.example.org/feed.xml").name == "research-example-org-feed-xml"


# 9. whole seconds --------------------------------------------------------------------------------

def test_an_undated_remote_item_has_the_same_whole_second_date_in_every_format(project, server, monkeypatch):
    first_seen = datetime(2021, 11, 12, 8, 30, 15, 987654, tzinfo=timezone.utc)
    monkeypatch.setattr("pipeline.sources.remote.utcnow", lambda: first_seen)
    usecases.run(_remote(project, server, _rss(
        "<item><title>Undated</title><link>https://news.example.org/u</link><description>d</description></item>")),
        progress=False)
    public = project / "public"
    rss = next(e for e in feedparser.parse((public / "rss.xml").read_bytes()).entries if e.title == "Undated")
    atom = next(e for e in feedparser.parse((public / "atom.xml").read_bytes()).entries if e.title == "Undated")
    json_date = _published(project)["Undated"]["date_published"]
    assert json_date == atom.published == "2021-11-12T08:30:15+00:00"
    assert parse_rfc3339(json_date) == datetime(*rss.published_parsed[:6], tzinfo=timezone.utc)
    assert json_feed_problems((public / "feed.json").read_bytes()) == []


def test_undated_items_seen_in_one_fetch_get_distinct_dates_in_feed_order(project, server):
    items = "".join(f"<item><title>Undated {n}</title><link>https://news.example.org/u{n}</link>"
                    "<description>d</description></item>" for n in (1, 2, 3))
    usecases.run(_remote(project, server, _rss(items)), progress=False)
    published = _published(project)
    dates = [published[f"Undated {n}"]["date_published"] for n in (1, 2, 3)]
    assert dates == sorted(set(dates), reverse=True)
    assert atom_problems((project / "public" / "atom.xml").read_bytes()) == []


# the W3C error that started it all ----------------------------------------------------------------

def test_an_item_with_one_image_has_media_content_without_a_group(config):
    feeds = build_feeds(read_content(config), config)
    for data in (feeds.rss, feeds.atom):
        root = etree.fromstring(data)
        assert root.findall(f".//{MEDIA_NS}group") == []
        assert len(root.findall(f".//{MEDIA_NS}content")) == 1
    assert rss_problems(feeds.rss) == [] and atom_problems(feeds.atom) == []


def test_dates_in_local_files_lose_fractions_of_seconds(project, config):
    write_item(project, "precise", 'title: "Precise"\ndate: 2021-11-20T09:00:00.123456-05:00')
    item = next(i for i in read_content(config) if i.slug == "precise")
    assert item.published == datetime(2021, 11, 20, 9, 0, tzinfo=timezone(timedelta(hours=-5)))

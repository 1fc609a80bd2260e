"""Property-based: whatever titles and HTML a remote feed sends, the normaliser does not crash
and the feeds it leads to are well-formed XML that a reader parses cleanly."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import feedparser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from lxml import html as lxml_html

from pipeline.config import RemoteSource, load_config
from pipeline.publish.feeds import build_atom, build_json_feed, build_rss
from pipeline.sources.normalise import entry_data, item_from_row, item_id_for
from pipeline.sources.parse import RawEntry
from pipeline.state.storage import StoredEntry

from .conftest import FIXTURE_PROJECT

CONFIG = load_config(FIXTURE_PROJECT / "config.yaml")  # read only: nothing here writes the project
SOURCE = RemoteSource(name="fuzz", url="https://fuzz.example.org/feed.xml")
FEED = {"title": "Fuzz <b>feed</b>", "link": "https://fuzz.example.org/"}
NOW = datetime(2021, 11, 12, tzinfo=timezone.utc)

any_text = st.text(st.characters(blacklist_categories=()), max_size=200)  # includes controls and lone surrogates
fragments = st.sampled_from([
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", '<a href="javascript:alert(1)">x</a>',
    "<iframe src=//evil>", "<p>", "</div>", "&nbsp;", "&undefined;", "]]>", "<![CDATA[", "\x00", "\x1b", "\ud800",
    '<a href="/relative">r</a>', "<style>p{}</style>", "<!-- c -->", "<svg onload=x>", "&#0;", "&#x1F600;",
])
html = st.lists(st.one_of(any_text, fragments), max_size=12).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=html, body=html, summary=html, author=st.one_of(st.none(), any_text),
       tags=st.lists(any_text, max_size=4), link=st.one_of(st.none(), any_text, st.just("/posts/1")))
def test_normaliser_never_crashes_and_feeds_stay_well_formed(title, body, summary, author, tags, link):
    raw = RawEntry(id=None, link=link, title=title, content_html=body, summary=summary, published=None,
                   updated=None, author=author, tags=tags)
    data = json.loads(json.dumps(entry_data(raw, SOURCE, FEED, SOURCE.url)))  # as stored and read back
    item = item_from_row(StoredEntry(item_id_for(raw), NOW, data), SOURCE)
    assert item.link.startswith("https://")
    for document in (build_rss([item], CONFIG), build_atom([item], CONFIG)):
        etree.fromstring(document)  # well-formed
        parsed = feedparser.parse(document)
        assert parsed.bozo == 0, parsed.get("bozo_exception")
        assert len(parsed.entries) == 1
    json.loads(build_json_feed([item], CONFIG))
    assert_safe_html(item.content_html)


def assert_safe_html(markup: str) -> None:
    """No active content: checked on the parsed tree, since the words themselves may be text."""
    root = lxml_html.fragment_fromstring(markup, create_parent="div")
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue  # comments and processing instructions are inert, and nh3 drops them anyway
        assert element.tag.lower() not in {"script", "iframe", "style", "object", "embed", "svg", "form"}, element.tag
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on"), name
            if name in ("href", "src"):
                assert value.startswith(("https://", "http://", "mailto:")), value


@settings(max_examples=100, deadline=None)
@given(size=st.one_of(st.integers(), st.text(max_size=30)))
def test_whatever_size_a_feed_gives_an_enclosure_or_image_every_feed_is_built(size):
    raw = RawEntry(id="urn:x:sized", link="https://fuzz.example.org/sized", title="Sized", content_html="<p>a</p>",
                   summary="s", published=NOW, updated=None, author=None,
                   image={"url": "https://fuzz.example.org/i.jpg", "length": str(size), "width": str(size)},
                   enclosure={"url": "https://fuzz.example.org/e.mp3", "type": "audio/mpeg", "length": str(size)})
    data = json.loads(json.dumps(entry_data(raw, SOURCE, FEED, SOURCE.url)))
    item = item_from_row(StoredEntry(item_id_for(raw), NOW, data), SOURCE)
    lengths = [a.get("size_in_bytes", 0) for a in json.loads(build_json_feed([item], CONFIG))["items"][0]["attachments"]]
    assert all(0 <= length <= 2**53 for length in lengths)
    for document in (build_rss([item], CONFIG), build_atom([item], CONFIG)):
        assert feedparser.parse(document).bozo == 0

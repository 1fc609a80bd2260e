"""The feeds a subscriber's reader sees: parsed with feedparser and checked against the format rules."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from pipeline.items import Item
from pipeline.publish.feeds import STYLESHEET_PI, build_atom, build_feeds, build_rss
from pipeline.sources import read_content

from .conftest import write_item
from .feedcheck import atom_problems, parse_rfc3339, rss_problems

MESEMS_ID = "tag:nationalmssociety.org,2021:news/mesems-stem-cell-trial-results"
MESEMS_LINK = "https://www.nationalmssociety.org/news-feed/stories/mesems-stem-cell-trial-results/"


@pytest.fixture
def feeds(config):
    return build_feeds(read_content(config), config)


@pytest.mark.parametrize("kind", ["rss", "atom"])
def test_feedparser_reads_the_mesems_entry(feeds, kind):
    parsed = feedparser.parse(getattr(feeds, kind))
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    entry = parsed.entries[0]
    assert entry.title == "International Mesenchymal Stem Cell Trial Finds No Effect on Inflammation in Active MS"
    assert entry.link == MESEMS_LINK
    assert entry.id == MESEMS_ID
    assert entry.published_parsed[:3] == (2021, 11, 4)
    assert entry.author == "National MS Society"
    assert [tag.term for tag in entry.tags] == ["research", "stem cells", "clinical trials"]
    content = " ".join(entry.content[0].value.split())
    assert "144 people aged up to 50" in content and "Lancet Neurology (2021; 20: 917–29)." in content
    assert parsed.feed.language == "en-us"


# The shipped story image: feeds give its length from the file.
SHIPPED_IMAGE = Path(__file__).resolve().parent.parent / "content" / "images" / "mesems-trial-design.png"


def test_json_feed_has_the_same_ids_links_dates_and_titles(feeds):
    rss = feedparser.parse(feeds.rss).entries
    atom = feedparser.parse(feeds.atom).entries
    data = json.loads(feeds.json)
    assert data["version"] == "https://jsonfeed.org/version/1.1"
    json_items = data["items"]
    assert [e.id for e in rss] == [e.id for e in atom] == [i["id"] for i in json_items]
    assert [e.link for e in rss] == [e.link for e in atom] == [i["url"] for i in json_items]
    assert [e.title for e in rss] == [e.title for e in atom] == [i["title"] for i in json_items]
    assert [e.published_parsed for e in rss] == [e.published_parsed for e in atom]
    json_dates = [parse_rfc3339(i["date_published"]) for i in json_items]
    atom_dates = [parse_rfc3339(e.published) for e in atom]
    assert json_dates == atom_dates


def test_rss_has_every_required_element(feeds):
    assert rss_problems(feeds.rss) == []


def test_atom_has_every_required_element(feeds):
    assert atom_problems(feeds.atom) == []


def test_rss_channel_link_is_the_site_not_the_self_link(feeds, config):
    channel = etree.fromstring(feeds.rss).find("channel")
    assert channel.findtext("link") == config.site.base_url
    self_link = channel.find("{http://www.w3.org/2005/Atom}link")
    assert self_link.get("rel") == "self" and self_link.get("href") == config.site.url("rss.xml")


def test_rss_item_carries_guid_creator_content_and_image(feeds):
    item = etree.fromstring(feeds.rss).find("channel/item")
    guid = item.find("guid")
    assert guid.text == MESEMS_ID and guid.get("isPermaLink") == "false"
    assert item.findtext("{http://purl.org/dc/elements/1.1/}creator") == "National MS Society"
    assert "MESEMS" in item.findtext("{http://purl.org/rss/1.0/modules/content/}encoded")
    enclosure = item.find("enclosure")
    assert enclosure.attrib == {"url": "https://www.nationalmssociety.org/news-feed/images/mesems-trial-design.png",
                                "length": str(SHIPPED_IMAGE.stat().st_size), "type": "image/png"}
    media = item.find(".//{http://search.yahoo.com/mrss/}content")
    assert media.get("url") == enclosure.get("url") and media.get("width") == "1200"


def test_atom_content_is_typed_html_never_cdata(feeds):
    assert b'type="CDATA"' not in feeds.atom
    contents = etree.fromstring(feeds.atom).findall(".//{http://www.w3.org/2005/Atom}content")
    assert contents and {c.get("type") for c in contents} == {"html"}


def test_feed_dates_come_from_the_newest_item_not_the_clock(feeds):
    channel = etree.fromstring(feeds.rss).find("channel")
    assert channel.findtext("lastBuildDate") == "Thu, 04 Nov 2021 09:00:00 -0400"
    assert etree.fromstring(feeds.atom).findtext("{http://www.w3.org/2005/Atom}updated") == "2021-11-04T09:00:00-04:00"


def test_no_relative_urls_in_the_raw_feeds(feeds):
    for data in (feeds.rss, feeds.atom, feeds.json):
        # The one relative reference is the browser stylesheet, which must be same-origin.
        text = data.decode().replace(STYLESHEET_PI.decode(), "")
        for match in re.finditer(r'(?:href|src)\s*=\s*(?:\\?"|&quot;|\')([^"\'&\\]*)', text):
            assert match.group(1).startswith(("https://", "http://", "mailto:", "tel:")), match.group(0)


def test_entries_are_newest_first(feeds):
    dates = [e.published_parsed for e in feedparser.parse(feeds.rss).entries]
    assert dates == sorted(dates, reverse=True) and len(dates) == 4


def test_feeds_carry_at_most_the_configured_number_of_items(project, config):
    limited = config.model_copy(update={"feeds": config.feeds.model_copy(update={"limit": 2})})
    feeds = build_feeds(read_content(config), limited)
    assert len(feedparser.parse(feeds.rss).entries) == 2
    assert len(json.loads(feeds.json)["items"]) == 2
    assert feedparser.parse(feeds.atom).entries[0].id == MESEMS_ID


def test_control_characters_never_reach_feedgen(config):
    item = Item(id="urn:x:1", slug="x", title="Bad \x00\x1b title", link="https://example.org/x",
                published=datetime(2021, 11, 5, tzinfo=timezone.utc), summary="s\x0c", content_html="<p>a\x01b</p>")
    rss = build_rss([item], config)
    atom = build_atom([item], config)
    assert feedparser.parse(rss).entries[0].title == "Bad  title"
    assert feedparser.parse(atom).bozo == 0


def test_updated_date_is_published_separately(project, config):
    write_item(project, "corrected", 'title: "Correction"\ndate: 2021-11-05T10:00:00-04:00\n'
               'updated: 2021-11-06T08:00:00-04:00')
    entry = feedparser.parse(build_feeds(read_content(config), config).atom).entries[0]
    assert entry.published.startswith("2021-11-05") and entry.updated.startswith("2021-11-06")


def test_feeds_point_browsers_at_the_stylesheet_and_stay_valid(feeds):
    for data in (feeds.rss, feeds.atom):
        assert data.splitlines()[1] == b'<?xml-stylesheet type="text/xsl" href="feed.xsl"?>'
        assert feedparser.parse(data).bozo == 0
    assert rss_problems(feeds.rss) == [] and atom_problems(feeds.atom) == []


def test_a_size_too_large_for_64_bits_still_gives_the_json_feed_json_would(config):
    from pipeline.items import Enclosure
    from pipeline.publish.feeds import build_json_feed

    item = Item(id="urn:x:big", slug="big", title="Episode", link="https://example.org/big",
                published=datetime(2021, 11, 5, tzinfo=timezone.utc), summary="s", content_html="<p>a</p>",
                enclosure=Enclosure(url="https://example.org/big.mp3", type="audio/mpeg", length=2**70))
    document = json.loads(build_json_feed([item], config))
    assert document["items"][0]["attachments"][0]["size_in_bytes"] == 2**70


def test_json_feed_dates_are_the_instants_atom_gives_even_with_an_offset_in_seconds(config):
    from datetime import timedelta

    from pipeline.publish.feeds import build_json_feed

    historic = timezone(timedelta(minutes=19, seconds=32))  # Amsterdam's mean time, before 1937
    item = Item(id="urn:x:old", slug="old", title="From the archive", link="https://example.org/old",
                published=datetime(1930, 1, 1, 12, tzinfo=historic), summary="s", content_html="<p>a</p>")
    json_date = json.loads(build_json_feed([item], config))["items"][0]["date_published"]
    atom_date = etree.fromstring(build_atom([item], config)).findtext("{http://www.w3.org/2005/Atom}entry/"
                                                                     "{http://www.w3.org/2005/Atom}published")
    assert json_date == atom_date == "1930-01-01T12:00:00+00:19:32"


def test_items_in_the_hour_daylight_saving_repeats_are_ordered_by_the_instant():
    from zoneinfo import ZoneInfo

    from pipeline.items import newest_first

    new_york = ZoneInfo("America/New_York")  # 2021-11-07 01:00-02:00 happens twice
    earlier = datetime(2021, 11, 7, 1, 30, tzinfo=new_york)  # EDT: 05:30 UTC
    later = datetime(2021, 11, 7, 1, 15, fold=1, tzinfo=new_york)  # EST: 06:15 UTC
    items = [Item(id=f"urn:x:{name}", slug=name, title=name, link=f"https://example.org/{name}", published=when,
                  summary="s", content_html="<p>a</p>") for name, when in (("earlier", earlier), ("later", later))]
    assert [item.slug for item in newest_first(items)] == ["later", "earlier"]


def test_an_image_of_unknown_size_has_no_atom_length_and_rss_says_zero(config):
    from pipeline.items import Image

    item = Item(id="urn:x:img", slug="img", title="Picture", link="https://example.org/img",
                published=datetime(2021, 11, 5, tzinfo=timezone.utc), summary="s", content_html="<p>a</p>",
                image=Image(url="https://example.org/i.jpg", alt="An MRI light box"))
    atom = etree.fromstring(build_atom([item], config))
    (enclosure,) = atom.iterfind("{http://www.w3.org/2005/Atom}entry/{http://www.w3.org/2005/Atom}link[@rel='enclosure']")
    assert "length" not in enclosure.attrib
    assert etree.fromstring(build_rss([item], config)).find("channel/item/enclosure").get("length") == "0"

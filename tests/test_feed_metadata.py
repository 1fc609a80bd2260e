"""What readers use besides the items: cache hints from the schedule, a square JSON Feed icon,
the documented _source extension, and a readable page per feed now that browsers drop XSLT."""

from __future__ import annotations

import json

from lxml import etree
from lxml import html as lxml_html

from pipeline.config import load_config
from pipeline.publish.digest import template_file
from pipeline.publish.feed_files import feed_files
from pipeline.publish.feeds import schedule_interval, sy_update
from pipeline.sources import read_content

from .conftest import set_config

SY = "{http://purl.org/rss/1.0/modules/syndication/}"


def test_ttl_and_update_period_follow_the_shortest_scheduled_interval(config):
    channel = etree.fromstring(feed_files(read_content(config), config)["rss.xml"]).find("channel")
    assert schedule_interval(config) == 15  # refresh-feeds runs every 15 minutes
    assert channel.findtext("ttl") == "15"
    assert (channel.findtext(f"{SY}updatePeriod"), channel.findtext(f"{SY}updateFrequency")) == ("hourly", "4")


def test_update_period_for_daily_and_weekly_schedules():
    assert sy_update(1440) == ("daily", 1)
    assert sy_update(180) == ("daily", 8)
    assert sy_update(10080) == ("weekly", 1)


def test_without_a_schedule_no_cache_hint_is_invented(project):
    config = load_config(set_config(project, **{"schedule.jobs": {}}))
    channel = etree.fromstring(feed_files(read_content(config), config)["rss.xml"]).find("channel")
    assert channel.find("ttl") is None and channel.find(f"{SY}updatePeriod") is None


def test_json_feed_icon_is_the_square_icon_not_the_wide_logo(project, config):
    assert "icon" not in json.loads(feed_files(read_content(config), config)["feed.json"])
    square = "https://www.nationalmssociety.org/news-feed/icon-512.png"
    config = load_config(set_config(project, **{"site.feed_icon": square}))
    assert json.loads(feed_files(read_content(config), config)["feed.json"])["icon"] == square


def test_the_source_extension_says_what_it_is(project, config):
    from pipeline.items import Source

    item = read_content(config)[0].model_copy(update={"source": Source(name="Partner", url="https://p.example.org/",
                                                                       feed_url="https://p.example.org/feed.xml")})
    entry = json.loads(feed_files([item], config)["feed.json"])["items"][0]
    assert entry["_source"]["about"].startswith("https://")
    assert entry["_source"]["feed_url"] == "https://p.example.org/feed.xml"


def test_each_feed_has_a_readable_page_with_its_addresses_and_language(config):
    files = feed_files(read_content(config), config)
    for page_name, folder in (("feed.html", ""), ("tags/research/index.html", "tags/research/")):
        page = lxml_html.fromstring(files[page_name])
        assert page.get("lang") == "en-us"
        text = page.text_content()
        for name in ("rss.xml", "atom.xml", "feed.json"):
            assert config.site.url(folder + name) in text
        assert "International Mesenchymal Stem Cell Trial" in text


def test_the_feed_stylesheet_sets_the_page_language(config):
    rss = etree.fromstring(feed_files(read_content(config), config)["rss.xml"])
    page = etree.XSLT(etree.parse(str(template_file(config, "feed.xsl"))))(rss)
    assert page.getroot().get("lang") == "en-us"

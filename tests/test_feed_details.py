"""Feed details a validator or a reader trips over: the empty archive page's date, the archive pages' self
links, the topic feeds' image link, and addresses on the feed pages that a click opens."""

from __future__ import annotations

import email.utils

from lxml import etree
from lxml import html as lxml_html

from pipeline.config import load_config
from pipeline.publish.digest import template_file
from pipeline.publish.feed_files import feed_files
from pipeline.sources import read_content

from .conftest import set_config

ATOM = "{http://www.w3.org/2005/Atom}"
BASE = "https://www.nationalmssociety.org/news-feed/"


def _archived(project):
    """The four shipped stories with feeds.limit 2: one full archive page and the empty newest one."""
    config = load_config(set_config(project, **{"feeds.limit": 2}))
    return config, feed_files(read_content(config), config)


def test_the_empty_newest_archive_page_is_dated_by_the_newest_archived_item_not_1970(project):
    config, files = _archived(project)
    full, empty = etree.fromstring(files["feed-archive/atom-1.xml"]), etree.fromstring(files["feed-archive/atom-2.xml"])
    assert empty.findall(f"{ATOM}entry") == []
    newest_archived = max(entry.findtext(f"{ATOM}updated") for entry in full.findall(f"{ATOM}entry"))
    assert empty.findtext(f"{ATOM}updated") == newest_archived
    rss = etree.fromstring(files["feed-archive/rss-2.xml"]).find("channel")
    assert email.utils.parsedate_to_datetime(rss.findtext("lastBuildDate")).year == 2021


def test_archive_pages_type_their_self_link_by_their_own_format(project):
    _config, files = _archived(project)
    for number in (1, 2):
        atom = etree.fromstring(files[f"feed-archive/atom-{number}.xml"])
        (self_link,) = [link for link in atom.findall(f"{ATOM}link") if link.get("rel") == "self"]
        assert (self_link.get("href"), self_link.get("type")) == (f"{BASE}feed-archive/atom-{number}.xml",
                                                                  "application/atom+xml")
        channel = etree.fromstring(files[f"feed-archive/rss-{number}.xml"]).find("channel")
        (rss_self,) = [link for link in channel.findall(f"{ATOM}link") if link.get("rel") == "self"]
        assert rss_self.get("type") == "application/rss+xml"


def test_a_topic_feeds_image_links_where_its_channel_does(config):
    files = feed_files(read_content(config), config)
    topic_feeds = [name for name in files if name.startswith("tags/") and name.endswith("rss.xml")]
    assert topic_feeds
    for name in topic_feeds + ["rss.xml"]:
        channel = etree.fromstring(files[name]).find("channel")
        assert channel.findtext("image/link") == channel.findtext("link"), name


def test_the_feed_page_addresses_are_links(config):
    files = feed_files(read_content(config), config)
    for page, folder in (("feed.html", ""), ("tags/research/index.html", "tags/research/")):
        hrefs = lxml_html.fromstring(files[page]).xpath("//ul/li/a/@href")
        assert hrefs == [f"{BASE}{folder}rss.xml", f"{BASE}{folder}atom.xml", f"{BASE}{folder}feed.json"]


def test_the_feed_stylesheet_makes_the_feed_address_a_link(config):
    files = feed_files(read_content(config), config)
    transform = etree.XSLT(etree.parse(str(template_file(config, "feed.xsl"))))
    for name in ("rss.xml", "atom.xml"):
        page = transform(etree.fromstring(files[name]))
        assert page.xpath('//p[@class="note"]/a/@href') == [f"{BASE}{name}"]

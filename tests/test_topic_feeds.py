"""Per-topic feeds: every tag with enough items gets RSS, Atom and JSON Feed of its own,
found from the site page, holding that tag's items and nothing else."""

from __future__ import annotations

import json

import feedparser
from lxml import html as lxml_html

from pipeline import usecases
from pipeline.config import load_config
from pipeline.items import tag_slug
from pipeline.publish.feed_files import feed_files
from pipeline.sources import read_content

from .conftest import set_config
from .feedcheck import atom_problems, json_feed_problems, rss_problems

MESEMS_ID = "tag:nationalmssociety.org,2021:news/mesems-stem-cell-trial-results"


def _ids(files: dict[str, bytes], folder: str) -> dict[str, list[str]]:
    return {
        "rss": [e.id for e in feedparser.parse(files[folder + "rss.xml"]).entries],
        "atom": [e.id for e in feedparser.parse(files[folder + "atom.xml"]).entries],
        "json": [i["id"] for i in json.loads(files[folder + "feed.json"])["items"]],
    }


def test_an_item_tagged_research_is_in_all_three_research_feeds_with_the_same_id(config):
    files = feed_files(read_content(config), config)
    ids = _ids(files, "tags/research/")
    assert ids["rss"] == ids["atom"] == ids["json"]
    assert MESEMS_ID in ids["rss"] and len(ids["rss"]) == 2


def test_a_topic_feed_holds_nothing_it_does_not_belong_to(config):
    items = read_content(config)
    files = feed_files(items, config)
    tagged = {i.id for i in items if "research" in i.tags}
    for ids in _ids(files, "tags/research/").values():
        assert set(ids) == tagged
    assert MESEMS_ID not in _ids(files, "tags/living-with-ms/")["rss"]


def test_a_topic_feed_has_its_own_self_link_and_title(config):
    files = feed_files(read_content(config), config)
    parsed = feedparser.parse(files["tags/research/atom.xml"])
    self_link = next(link.href for link in parsed.feed.links if link.rel == "self")
    assert self_link == config.site.url("tags/research/atom.xml")
    assert parsed.feed.title == "National MS Society News: research"
    assert json.loads(files["tags/research/feed.json"])["feed_url"] == config.site.url("tags/research/feed.json")


def test_one_off_tags_get_no_feed_by_default(config):
    files = feed_files(read_content(config), config)
    assert "tags/stem-cells/rss.xml" not in files  # one item only; topics.min_items is 2


def test_an_allow_list_chooses_the_topics(project):
    config = load_config(set_config(project, **{"feeds.topics": {"allow": ["Stem Cells"]}}))
    topics = {name.split("/")[1] for name in feed_files(read_content(config), config) if name.startswith("tags/")}
    assert topics == {"stem-cells"}


def test_one_tag_name_maps_to_one_slug():
    assert tag_slug("Living with MS") == tag_slug("living with ms") == tag_slug(" living-with-MS ") == "living-with-ms"
    assert tag_slug("Café science") == "cafe-science"


def test_the_site_page_lists_and_links_every_topic_feed(config):
    files = usecases.dry_run(config, send=False).files
    page = lxml_html.fromstring(files[config.path("output") / "index.html"])
    alternates = {link.get("href") for link in page.xpath("//link[@rel='alternate']")}
    for slug in ("research", "clinical-trials", "living-with-ms"):
        for name in ("rss.xml", "atom.xml", "feed.json"):
            assert config.site.url(f"tags/{slug}/{name}") in alternates
        assert config.site.url(f"tags/{slug}/") in page.xpath("//a/@href")


def test_topic_feeds_pass_the_feed_checks(config):
    files = feed_files(read_content(config), config)
    for slug in ("research", "clinical-trials", "living-with-ms"):
        assert rss_problems(files[f"tags/{slug}/rss.xml"]) == []
        assert atom_problems(files[f"tags/{slug}/atom.xml"]) == []
        assert json_feed_problems(files[f"tags/{slug}/feed.json"]) == []

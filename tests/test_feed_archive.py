"""RFC 5005 complete archives: from the main feed, prev-archive links reach every item once,
and an archive document that is full never changes again."""

from __future__ import annotations

from datetime import timedelta

import feedparser
import pytest
from lxml import etree

from pipeline.publish.feed_files import feed_files

from .generated import START, make_item, make_items

HISTORY = "{http://purl.org/syndication/history/1.0}"


@pytest.fixture
def limit20(config):
    return config.model_copy(update={"feeds": config.feeds.model_copy(update={"limit": 20})})


def walk(files: dict[str, bytes], config, first: str) -> list[feedparser.FeedParserDict]:
    """Follow prev-archive links from ``first`` as a reader would, collecting every entry."""
    entries, name, visited = [], first, set()
    while name is not None:
        assert name not in visited, f"loop at {name}"
        visited.add(name)
        parsed = feedparser.parse(files[name])
        assert parsed.bozo == 0, parsed.get("bozo_exception")
        entries.extend(parsed.entries)
        previous = [link.href for link in parsed.feed.get("links", []) if link.rel == "prev-archive"]
        name = previous[0].removeprefix(config.site.base_url) if previous else None
    return entries


@pytest.mark.parametrize("main", ["rss.xml", "atom.xml"])
def test_walking_prev_archive_from_the_main_feed_reaches_every_item_once(limit20, main):
    items = make_items(95)
    files = feed_files(items, limit20)
    assert len(feedparser.parse(files[main]).entries) == 20
    entries = walk(files, limit20, main)
    assert sorted(e.id for e in entries) == sorted(i.id for i in items)


def test_archive_documents_are_marked_and_link_back_to_the_current_feed(limit20):
    files = feed_files(make_items(95), limit20)
    archive = etree.fromstring(files["feed-archive/atom-2.xml"])
    assert archive.find(f"{HISTORY}archive") is not None
    links = {link.get("rel"): link.get("href") for link in archive.findall("{http://www.w3.org/2005/Atom}link")}
    base = limit20.site.base_url
    assert links["current"] == base + "atom.xml"
    assert links["prev-archive"] == base + "feed-archive/atom-1.xml"
    assert links["next-archive"] == base + "feed-archive/atom-3.xml"
    rss_channel = etree.fromstring(files["feed-archive/rss-2.xml"]).find("channel")
    assert rss_channel.find(f"{HISTORY}archive") is not None
    assert etree.fromstring(files["rss.xml"]).find(f"channel/{HISTORY}archive") is None


def test_a_new_item_rewrites_only_the_current_documents(limit20):
    items = make_items(95)
    before = feed_files(items, limit20)
    after = feed_files([make_item(95, START + timedelta(hours=1)), *items], limit20)
    changed = {name for name in after if before.get(name) != after[name]}
    assert {"rss.xml", "atom.xml", "feed.json"} <= changed
    full = {f"feed-archive/{kind}-{n}.xml" for kind in ("rss", "atom") for n in (1, 2, 3)}
    assert full <= set(after) and not (changed & full)
    assert changed & {"feed-archive/rss-4.xml", "feed-archive/atom-4.xml"}  # the page still filling up


def test_a_page_that_just_filled_up_is_already_final(limit20):
    items = make_items(101)  # 81 older than the main feed: four full pages and one still filling
    before = feed_files(items[1:], limit20)  # 100 items: four full pages and an empty fifth
    after = feed_files(items, limit20)
    assert before["feed-archive/rss-4.xml"] == after["feed-archive/rss-4.xml"]
    assert before["feed-archive/atom-4.xml"] == after["feed-archive/atom-4.xml"]
    assert len(feedparser.parse(before["feed-archive/atom-5.xml"]).entries) == 0


TOPIC = "tags/research/"  # make_items tags every fifth item and the one two after it "research"


def topic_items(items):
    return [item for item in items if "research" in item.tags]


@pytest.mark.parametrize("feed", ["rss.xml", "atom.xml"])
def test_a_topic_feed_keeps_a_window_and_its_archive_reaches_every_older_item_once(limit20, feed):
    items = make_items(150)  # 60 in the topic: 20 in its feed, 40 on two full archive pages
    files = feed_files(items, limit20)
    assert len(feedparser.parse(files[TOPIC + feed]).entries) == 20
    entries = walk(files, limit20, TOPIC + feed)
    assert sorted(e.id for e in entries) == sorted(i.id for i in topic_items(items))


def test_a_topic_archive_page_is_marked_links_back_to_the_topic_feed_and_is_named_for_it(limit20):
    files = feed_files(make_items(150), limit20)
    archive = etree.fromstring(files[TOPIC + "feed-archive/atom-2.xml"])
    assert archive.find(f"{HISTORY}archive") is not None
    links = {link.get("rel"): link.get("href") for link in archive.findall("{http://www.w3.org/2005/Atom}link")}
    base = limit20.site.base_url
    assert links["current"] == base + TOPIC + "atom.xml"
    assert links["alternate"] == base + TOPIC
    assert links["prev-archive"] == base + TOPIC + "feed-archive/atom-1.xml"
    assert links["next-archive"] == base + TOPIC + "feed-archive/atom-3.xml"  # the empty page still to fill
    assert archive.findtext("{http://www.w3.org/2005/Atom}title") == "National MS Society News: research (archive 2)"


def test_a_new_item_leaves_every_full_topic_archive_page_as_it_was(limit20):
    items = make_items(150)
    before = feed_files(items, limit20)
    after = feed_files([make_item(150, START + timedelta(hours=1)), *items], limit20)  # 150 is "research"
    full = [f"{TOPIC}feed-archive/{kind}-{n}.xml" for kind in ("rss", "atom") for n in (1, 2)]
    assert [after[name] for name in full] == [before[name] for name in full]
    assert after[TOPIC + "rss.xml"] != before[TOPIC + "rss.xml"]


def entry_of(document: bytes, item, tag: bytes = b"entry") -> bytes:
    """The bytes of ``item``'s entry (Atom) or item (RSS, ``tag=b"item"``) in ``document``."""
    at = document.index(f">{item.id}<".encode())  # its id (Atom) or guid (RSS)
    start = document.rindex(b"<" + tag + b">", 0, at)
    return document[start: document.index(b"</" + tag + b">", at)]


OLDEST_SHARED = 148  # "living with ms" and "research": on the oldest archive page of the main feed and both topics


def test_a_topic_archive_carries_each_story_s_summary_and_link_but_not_its_text(limit20):
    items = make_items(150)
    files = feed_files(items, limit20)
    story = items[OLDEST_SHARED]
    atom = "{http://www.w3.org/2005/Atom}"
    main, topic = (next(e for e in etree.fromstring(files[folder + "feed-archive/atom-1.xml"]).iter(f"{atom}entry")
                        if e.findtext(f"{atom}id") == story.id) for folder in ("", TOPIC))
    assert main.find(f"{atom}content") is not None and topic.find(f"{atom}content") is None
    assert topic.findtext(f"{atom}summary") == story.summary
    assert [link.get("href") for link in topic.findall(f"{atom}link") if link.get("rel") == "alternate"] == [story.link]
    rss = feedparser.parse(files[TOPIC + "feed-archive/rss-1.xml"])
    entry = next(e for e in rss.entries if e.id == story.id)
    assert entry.summary == story.summary and "content" not in entry and entry.link == story.link


def test_a_brief_entry_keeps_its_text_when_the_story_has_no_page_of_its_own(limit20):
    """An Atom entry needs content or an alternate link (RFC 4287 4.1.1.3): a story from a source
    that gave it no link of its own has only its content, so its brief entry keeps it."""
    items = make_items(150)
    story = items[OLDEST_SHARED] = items[OLDEST_SHARED].model_copy(
        update={"link": "https://www.example.org/", "own_link": False})
    files = feed_files(items, limit20)
    atom = "{http://www.w3.org/2005/Atom}"
    topic = next(e for e in etree.fromstring(files[TOPIC + "feed-archive/atom-1.xml"]).iter(f"{atom}entry")
                 if e.findtext(f"{atom}id") == story.id)
    assert [link for link in topic.findall(f"{atom}link") if link.get("rel") == "alternate"] == []
    assert topic.find(f"{atom}content") is not None
    assert entry_of(files[TOPIC + "feed-archive/atom-1.xml"], story) == entry_of(files["feed-archive/atom-1.xml"], story)


def test_a_topic_archive_with_the_full_text_has_the_main_archive_s_entries(limit20):
    topics = limit20.feeds.topics.model_copy(update={"archive_text": "full"})
    config = limit20.model_copy(update={"feeds": limit20.feeds.model_copy(update={"topics": topics})})
    items = make_items(150)
    files = feed_files(items, config)
    story = items[OLDEST_SHARED]
    for kind, tag in (("atom", b"entry"), ("rss", b"item")):
        main = entry_of(files[f"feed-archive/{kind}-1.xml"], story, tag)
        assert main == entry_of(files[f"{TOPIC}feed-archive/{kind}-1.xml"], story, tag)
        assert main == entry_of(files[f"tags/living-with-ms/feed-archive/{kind}-1.xml"], story, tag)


def test_the_topic_feeds_themselves_carry_the_stories_text(limit20):
    items = make_items(150)
    files = feed_files(items, limit20)
    newest = items[0]  # "research"
    assert entry_of(files[TOPIC + "atom.xml"], newest) == entry_of(files["atom.xml"], newest)


def test_each_item_s_entry_is_built_once_for_all_the_feeds_that_list_it(limit20, monkeypatch):
    from pipeline.publish.feeds import FeedEntries

    built: list[str] = []
    build = FeedEntries._build
    monkeypatch.setattr(FeedEntries, "_build", lambda self, item: built.append(item.id) or build(self, item))
    items = make_items(150)
    feed_files(items, limit20)
    assert sorted(built) == sorted(item.id for item in items)  # each once, though most are in three feeds


def test_topic_archives_can_be_turned_off_and_the_main_archive_stays(limit20):
    feeds = limit20.feeds.model_copy(update={"topics": limit20.feeds.topics.model_copy(update={"archive": False})})
    files = feed_files(make_items(150), limit20.model_copy(update={"feeds": feeds}))
    assert not [name for name in files if name.startswith("tags/") and "/feed-archive/" in name]
    assert b"prev-archive" not in files[TOPIC + "rss.xml"]
    assert b"prev-archive" in files["rss.xml"]


def test_no_archive_while_the_main_feed_holds_everything(config):
    files = feed_files(make_items(4), config)
    assert not [name for name in files if name.startswith("feed-archive/")]
    assert b"prev-archive" not in files["rss.xml"]


def test_cached_archive_pages_are_the_bytes_a_fresh_build_gives_and_an_edit_rebuilds_its_page(limit20):
    from pipeline.publish.feed_files import ArchiveCache, save_archive_cache

    items = make_items(95)
    fresh = feed_files(items, limit20)
    save_archive_cache(limit20)
    assert (limit20.path("state") / ArchiveCache.FILE).exists()
    assert feed_files(items, limit20) == fresh  # every archive page from the cache
    oldest = min(items, key=lambda item: item.published)
    edited = [item.model_copy(update={"title": "Corrected title"}) if item is oldest else item for item in items]
    from_cache = feed_files(edited, limit20)
    save_archive_cache(limit20)
    (limit20.path("state") / ArchiveCache.FILE).unlink()
    rebuilt = feed_files(edited, limit20)
    assert from_cache == rebuilt and from_cache != fresh
    assert b"Corrected title" in from_cache["feed-archive/rss-1.xml"]


def test_archive_pages_built_from_parsed_items_are_found_again_for_the_same_items_from_the_parse_cache(
        limit20, monkeypatch):
    """The parse cache gives unpickled copies, whose objects are shared differently from a fresh
    parse: the archive cache must key pages by the items' values, or the run after a full build
    rebuilds every page."""
    import pickle

    from pipeline.publish import feed_files as feed_files_module
    from pipeline.publish import feeds
    from pipeline.publish.feed_files import save_archive_cache

    items = make_items(95)
    fresh = feed_files(items, limit20)
    save_archive_cache(limit20)
    builds = []
    build = feeds.build_rss_and_atom
    monkeypatch.setattr(feed_files_module, "build_rss_and_atom", lambda *args: builds.append(args) or build(*args))
    copies = [pickle.loads(pickle.dumps(item)) for item in items]
    assert feed_files(copies, limit20) == fresh
    assert [args for args in builds if not args[2].archive]  # the feeds' windows: built, and seen here
    built_archive_pages = [args for args in builds if args[2].archive]
    assert built_archive_pages == []


def test_a_new_process_builds_no_archive_page_the_last_one_built(project):
    """Runs are processes, each with its own string hashing: the archive cache must hit across them."""
    import os
    import subprocess
    import sys

    from .conftest import set_config

    set_config(project, **{"feeds.limit": 2, "delivery": None})

    def run(seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        return subprocess.run([sys.executable, "-m", "pipeline", "-vv", "run"], cwd=project, env=env,
                              capture_output=True, text=True, check=True).stderr

    assert "feed archive: 2 pages, 2 built" in run("1")
    newest = project / "content" / "mesems-stem-cell-trial-results.md"  # in the main feed, not archived
    newest.write_text(newest.read_text().replace('title: "', 'title: "Corrected: ', 1))
    assert "feed archive: 2 pages, 0 built" in run("2")


def test_editing_an_archived_story_rebuilds_its_archive_page(project):
    """Archive pages are cached by what their items were made from: an edit of an old story's file
    must reach the archive document it lives in."""
    from pipeline import usecases
    from pipeline.config import load_config

    from .conftest import set_config

    config = load_config(set_config(project, **{"feeds.limit": 2}))
    usecases.run(config, progress=False)
    oldest = project / "content" / "ms-navigators-are-here-to-help.md"
    assert b"MS Navigators Are Here to Help" in (project / "public" / "feed-archive" / "rss-1.xml").read_bytes()
    oldest.write_text(oldest.read_text().replace("MS Navigators Are Here to Help", "MS Navigators Can Help", 1))
    usecases.run(config, progress=False)
    archived = (project / "public" / "feed-archive" / "rss-1.xml").read_bytes()
    assert b"MS Navigators Can Help" in archived and b"Are Here to Help" not in archived

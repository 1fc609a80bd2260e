"""Remote sources over real HTTP on loopback: good feeds merge in, broken ones harm nothing."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit, urlunsplit

import feedparser
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import usecases
from pipeline.config import load_config
from pipeline.sources.merge import canonical_link, merge_items
from pipeline.usecases import open_storage

from .conftest import run_cli, set_config
from .feed_server import FeedServer, Response

RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel>
<title>MS Research Blog</title><link>https://research.example.org/</link><description>Notes from the lab</description>
<item><title>Remyelination study enrolls first participants</title>
<link>https://research.example.org/posts/remyelination</link>
<guid>https://research.example.org/posts/remyelination</guid>
<pubDate>Tue, 09 Nov 2021 14:00:00 GMT</pubDate><category>research</category>
<description>&lt;p&gt;A new study of myelin repair has begun.&lt;/p&gt;</description></item>
<item><title>Volunteer day recap</title><link>https://research.example.org/posts/volunteers</link>
<pubDate>Mon, 08 Nov 2021 10:00:00 GMT</pubDate><category>community</category>
<description>Thanks to everyone who came.</description></item>
</channel></rss>"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://partner.example.org/news/">
<title>Partner News</title><id>urn:partner</id><updated>2021-11-10T09:00:00Z</updated>
<link href="https://partner.example.org/"/>
<entry><title type="html">Walk &amp;amp; Roll event raises funds</title><id>urn:partner:walk</id>
<link href="walk-and-roll"/><updated>2021-11-10T09:00:00Z</updated><published>2021-11-10T09:00:00Z</published>
<author><name>Partner Team</name></author>
<content type="html">&lt;p&gt;See &lt;a href="photos/"&gt;the photos&lt;/a&gt; and &lt;img src="/img/walk.jpg" alt="walk"&gt;&lt;/p&gt;</content>
</entry></feed>"""

JSON_FEED = json.dumps({
    "version": "https://jsonfeed.org/version/1.1", "title": "Chapter Updates", "home_page_url": "https://chapter.example.org/",
    "items": [{"id": "chapter-1", "url": "https://chapter.example.org/updates/1", "title": "Chapter meeting moved",
               "content_html": "<p>The meeting is now on Thursday.</p>", "date_published": "2021-11-11T18:00:00-05:00",
               "tags": ["community"]}],
}).encode()

RELATIVE = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Relative</title><link>/</link><description>d</description>
<item><title>Relative links</title><link>/posts/relative</link><guid isPermaLink="false">rel-1</guid>
<pubDate>Wed, 10 Nov 2021 12:00:00 GMT</pubDate>
<description>&lt;a href="../about"&gt;about&lt;/a&gt; &lt;img src="images/pic.png" alt="pic"&gt;</description></item></channel></rss>"""

HOSTILE = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Hostile</title><link>https://evil.example.org/</link>
<description>d</description><item><title>&lt;script&gt;alert('title')&lt;/script&gt;Free prize</title>
<link>https://evil.example.org/prize</link><pubDate>Wed, 10 Nov 2021 12:00:00 GMT</pubDate>
<description>&lt;p onclick="steal()"&gt;Hi&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src="x.png" onerror="alert(2)" alt="x"&gt;
&lt;a href="javascript:alert(3)"&gt;click&lt;/a&gt;&lt;iframe src="https://evil.example.org/frame"&gt;&lt;/iframe&gt;
&lt;style&gt;body{display:none}&lt;/style&gt;&lt;/p&gt;</description></item></channel></rss>"""

CONTROL = (b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Control</title><link>https://ctl.example.org/</link>
<description>d</description><item><title>Bell\x07 and &nbsp;non-breaking &copy; 2021</title>
<link>https://ctl.example.org/1</link><pubDate>Wed, 10 Nov 2021 12:00:00 GMT</pubDate>
<description>Text with \x01 control \x1b characters &amp; an &undeclared; entity</description></item></channel></rss>""")

UNDATED = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Undated</title><link>https://und.example.org/</link>
<description>d</description><item><title>No date here</title><link>https://und.example.org/1</link>
<description>Body</description></item></channel></rss>"""


def _sources(project, server, **routes):
    entries = [{"name": name, "url": server.url(f"/{name}")} for name in routes]
    for name, route in routes.items():
        server.routes[f"/{name}"] = route
    return load_config(set_config(project, sources=entries, **{"fetch.timeout": 2, "fetch.max_bytes": 200_000}))


def _run(config):
    return usecases.run(config, progress=False)


def _published(project) -> dict[str, dict]:
    """The items as subscribers get them (feed.json), by title: valid whether or not a run was skipped."""
    return {item["title"]: item for item in json.loads((project / "public" / "feed.json").read_text())["items"]}


@pytest.fixture
def server():
    with FeedServer() as srv:
        yield srv


def test_rss_atom_and_json_feed_items_appear_with_their_source_credited(project, server):
    config = _sources(project, server, blog=Response(body=RSS), partner=Response(body=ATOM, headers={"Content-Type": "application/atom+xml"}),
                      chapter=Response(body=JSON_FEED, headers={"Content-Type": "application/feed+json"}))
    result = _run(config)
    titles = {item.title for item in result.items}
    assert {"Remyelination study enrolls first participants", "Walk & Roll event raises funds",
            "Chapter meeting moved"} <= titles
    rss = feedparser.parse((project / "public" / "rss.xml").read_bytes())
    assert rss.bozo == 0
    walk = next(e for e in rss.entries if e.title == "Walk & Roll event raises funds")
    assert walk.link == "https://partner.example.org/news/walk-and-roll"
    assert walk.author == "Partner Team"
    digest = (project / "public" / "digest.html").read_text()
    assert "Chapter meeting moved" in digest and "From <a href=\"https://chapter.example.org/\"" in digest
    assert "From Chapter Updates" in (project / "public" / "digest.txt").read_text()


def test_second_fetch_is_conditional_and_a_304_keeps_the_items(project, server):
    config = _sources(project, server, blog=server.with_etag(RSS, '"v1"'))
    first = {i.id for i in _run(config).items}
    second = _run(config)
    assert server.requests["/blog"][1].get("If-None-Match") == '"v1"'
    assert server.requests["/blog"][0]["User-Agent"].startswith("newsletter-pipeline/")
    assert "gzip" in server.requests["/blog"][0]["Accept-Encoding"]
    assert second.unchanged  # the 304 gave the same items: nothing to rebuild
    published = {e.id for e in feedparser.parse((project / "public" / "rss.xml").read_bytes()).entries}
    assert published == first
    storage = open_storage(config)
    assert storage.source_state("blog").status == "not modified (304)"
    storage.close()


def test_a_failing_source_keeps_its_earlier_items_and_harms_no_other(project, server, caplog):
    config = _sources(project, server, blog=Response(body=RSS), chapter=Response(body=JSON_FEED))
    _run(config)
    server.routes["/blog"] = Response(500, b"Internal Server Error")
    with caplog.at_level(logging.WARNING):
        _run(config)
    titles = set(_published(project))
    assert "Remyelination study enrolls first participants" in titles and "Chapter meeting moved" in titles
    (line,) = [r.getMessage() for r in caplog.records if "source blog" in r.getMessage()]
    assert "HTTP 500" in line and "keeping 2 items seen before" in line


@pytest.mark.parametrize(("route", "reason"), [
    ("hang", "timed out after 2s"),
    ("html", "not a feed"),
    ("huge", "over the limit of 200000 bytes"),
    ("missing", "HTTP 404"),
])
def test_broken_sources_are_reported_by_name_and_the_run_goes_on(project, server, caplog, route, reason):
    routes = {
        "hang": server.hanging(b"<?xml version='1.0'?><rss version='2.0'><channel>"),
        "html": Response(body=b"<!DOCTYPE html><html><body><p>Welcome!</p></body></html>", headers={"Content-Type": "text/html"}),
        "huge": Response(body=b"<rss>" + b" " * 300_000 + b"</rss>"),
        "missing": Response(404, b"gone"),
    }
    config = _sources(project, server, bad=routes[route], good=Response(body=RSS))
    with caplog.at_level(logging.WARNING):
        result = _run(config)
    assert "Remyelination study enrolls first participants" in {i.title for i in result.items}
    assert any("source bad" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    assert (project / "public" / "rss.xml").exists()


def test_gzip_and_permanent_redirect(project, server):
    config = _sources(project, server, old=server.redirect("/new"))
    server.routes["/new"] = server.gzipped(RSS)
    result = _run(config)
    assert "Volunteer day recap" in {i.title for i in result.items}
    storage = open_storage(config)
    assert storage.source_state("old").url == server.url("/new")
    storage.close()
    _run(config)
    assert len(server.requests["/old"]) == 1 and len(server.requests["/new"]) == 2  # fetched from the new place


def test_relative_urls_become_absolute(project, server):
    config = _sources(project, server, rel=Response(body=RELATIVE))
    result = _run(config)
    item = next(i for i in result.items if i.title == "Relative links")
    assert item.link == server.url("/posts/relative")
    assert f'href="{server.url("/about")}"' in item.content_html
    # No xml:base in the feed: relative URLs in the description resolve against the feed's own URL.
    assert f'src="{server.url("/images/pic.png")}"' in item.content_html
    for name in ("rss.xml", "atom.xml"):
        raw = (project / "public" / name).read_text()
        assert 'href="/' not in raw and "src=&quot;/" not in raw and 'src="images' not in raw


def test_hostile_markup_reaches_no_output(project, server):
    config = _sources(project, server, evil=Response(body=HOSTILE))
    _run(config)
    for name in ("rss.xml", "atom.xml", "feed.json", "digest.html", "digest.txt"):
        text = (project / "public" / name).read_text().lower()
        for bad in ("<script", "&lt;script", "onerror", "onclick", "javascript:", "<iframe", "&lt;iframe", "display:none}"):
            assert bad not in text, (name, bad)
    assert "Free prize" in (project / "public" / "digest.txt").read_text()


def test_control_characters_and_undeclared_entities_are_survived(project, server):
    config = _sources(project, server, ctl=Response(body=CONTROL))
    result = _run(config)
    item = next(i for i in result.items if i.link == "https://ctl.example.org/1")
    assert "\x07" not in item.title and "\x01" not in item.content_html
    for name in ("rss.xml", "atom.xml"):
        assert feedparser.parse((project / "public" / name).read_bytes()).bozo == 0


def test_undated_item_keeps_its_first_seen_date(project, server, monkeypatch):
    config = _sources(project, server, und=Response(body=UNDATED))
    _run(config)
    first = _published(project)["No date here"]["date_published"]
    server.routes["/und"] = Response(body=UNDATED.replace(b"<description>Body", b"<description>Body, edited"))
    later = datetime.now(timezone.utc) + timedelta(minutes=1)  # dates are whole seconds: edit a minute later
    monkeypatch.setattr("pipeline.sources.remote.utcnow", lambda: later)
    _run(config)
    second = _published(project)["No date here"]
    assert second["date_published"] == first and first.endswith("+00:00")
    assert second["date_modified"] > first


def test_updated_changes_only_when_the_content_really_changes(project, server):
    config = _sources(project, server, blog=Response(body=RSS, headers={"ETag": '"a"'}))
    item = lambda: _published(project)["Volunteer day recap"]  # noqa: E731
    _run(config)
    assert item()["date_modified"] == item()["date_published"]
    server.routes["/blog"] = Response(body=RSS, headers={"ETag": '"b"'})  # same content, new ETag
    assert _run(config).unchanged and item()["date_modified"] == item()["date_published"]
    server.routes["/blog"] = Response(body=RSS.replace(b"Thanks to everyone", b"Many thanks to everyone"))
    _run(config)
    assert item()["date_modified"] > item()["date_published"]


def test_tag_filter_item_limit_and_default_author(project, server):
    server.routes["/blog"] = Response(body=RSS)
    config = load_config(set_config(project, sources=[{"name": "blog", "url": server.url("/blog"), "tags": ["Research"],
                                                       "max_items": 5, "author": "Research Office"}]))
    remote = [i for i in _run(config).items if i.source]
    assert [i.title for i in remote] == ["Remyelination study enrolls first participants"]
    assert remote[0].author == "Research Office"


def test_the_same_story_from_two_sources_appears_once(project, server):
    config = _sources(project, server, one=Response(body=RSS), two=Response(body=RSS.replace(b"MS Research Blog", b"Mirror")))
    result = _run(config)
    assert [i.title for i in result.items].count("Remyelination study enrolls first participants") == 1
    assert [i.title for i in result.items].count("Volunteer day recap") == 1


def test_sources_command_lists_fetch_time_status_and_count(project, server):
    _sources(project, server, blog=Response(body=RSS), bad=Response(500, b"x"))
    run_cli(project, "run", "--no-send", check=True)
    out = run_cli(project, "sources", check=True).stdout
    blog = next(line for line in out.splitlines() if line.startswith("blog"))
    bad = next(line for line in out.splitlines() if line.startswith("bad"))
    assert "ok (2 entries)" in blog and "2 items" in blog
    assert "error: HTTP 500" in bad and "0 items" in bad


def test_merge_prefers_local_content(config):
    from pipeline.sources import read_content

    local = read_content(config)
    copy = local[0].model_copy(update={"title": "Copy from elsewhere", "id": "urn:other"})
    merged = merge_items(local, [copy])
    assert len(merged) == len(local) and merged[0].title == local[0].title


def test_a_changed_source_url_never_goes_back_to_the_old_redirect_target(project, server):
    config = _sources(project, server, old=server.redirect("/new"))
    server.routes["/new"] = Response(body=RSS, headers={"ETag": '"n1"'})
    _run(config)  # the source moved permanently to /new
    server.routes["/third"] = Response(500, b"down for maintenance")
    config = load_config(set_config(project, sources=[{"name": "old", "url": server.url("/third")}]))
    _run(config)  # the new URL fails: its state must not inherit /new or its ETag
    server.routes["/third"] = Response(body=RSS.replace(b"Volunteer day", b"Volunteers' day"))
    _run(config)
    assert len(server.requests["/new"]) == 1 and len(server.requests["/third"]) == 2
    assert "If-None-Match" not in server.requests["/third"][0]
    assert "Volunteers' day recap" in _published(project)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["http", "https", "HTTP", "ftp", "mailto"]),
       st.sampled_from(["example.org", "Example.ORG", "xn--bcher-kva.example", "example.org:8080", "[::1]", ""]),
       st.text(alphabet="aZé/?#=&.-_ %\t", max_size=12))
def test_a_link_is_made_canonical_the_same_way_with_or_without_the_shortcut(scheme, host, rest):
    url = f"{scheme}://{host}/{rest}" if rest[:1] != "/" else f"{scheme}://{host}{rest}"
    parts = urlsplit(url)
    assert canonical_link(url) == urlunsplit((parts.scheme.lower(), parts.netloc.lower(),
                                              parts.path.rstrip("/") or "/", parts.query, ""))

"""The shipped project sends on the first try, media of any name are published, and every reader sees the
same words: a story with a hostile title, an accented image name and an MP3 enclosure, read back from
every feed document by feedparser and by a second parser, its files served from public/."""

from __future__ import annotations

import html
import json
import re
import threading
import urllib.error
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import feedparser
import pytest
from lxml import etree
from lxml import html as lxml_html

from pipeline import usecases
from pipeline.config import load_config
from pipeline.mail.lint import SUBJECT_CHARS, SUBJECT_LINE_LIMIT, lint_media, lint_sizes, lint_subject
from pipeline.media import published_name
from pipeline.sources import read_content
from pipeline.sources.parse import parse_json_feed

from .conftest import add_subscribers, run_cli, set_config, use_smtp, write_image, write_item
from .feedcheck import aa_problems, html_problems
from .smtp_sink import RecordingHandler, SmtpSink
from .test_feed_validation import problems

BASE = "https://www.nationalmssociety.org/news-feed/"
TITLE = 'Q&A <MS> & "you" — café'
SUMMARY = "Ask us <anything> & we’ll answer: \"MS\" isn't the end — 5\u00a0km walks, café talks."
HOSTILE = f"""title: '{TITLE}'
date: 2021-12-01T09:00:00-05:00
summary: '{SUMMARY.replace("'", "''")}'
tags: [research, podcast]
image:
  url: "images/MS walk é.jpg"
  alt: "People walking together at an MS walk"
enclosure:
  url: "audio/Q&A episode é.mp3"
  type: "audio/mpeg"
"""
MP3 = b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 40  # a stand-in episode: its bytes are what counts


@pytest.fixture
def hostile(project, secret) -> Path:
    """The shipped project plus the hostile story and its two files, built by a real run."""
    write_image(project / "content" / "images" / "MS walk é.jpg", 600, 315)
    (project / "content" / "audio").mkdir()
    (project / "content" / "audio" / "Q&A episode é.mp3").write_bytes(MP3)
    write_item(project, "q-and-a", HOSTILE, "We answered your questions about MS.\n")
    usecases.run(load_config(set_config(project, **{"feeds.limit": 3})), progress=False)  # older items: archive pages
    return project


def feed_documents(public: Path) -> dict[str, bytes]:
    return {p.relative_to(public).as_posix(): p.read_bytes() for p in public.rglob("*")
            if p.is_file() and p.suffix in (".xml", ".json") and p.name != "feed.xsl"}


def entry_of(parsed, link_part: str = "q-and-a"):
    return next(entry for entry in parsed.entries if link_part in (entry.get("id", "") + entry.get("link", "")))


def summary_text(detail) -> str:
    """What a reader shows for a summary: HTML is rendered (here: its entities decoded), text shown as is."""
    return html.unescape(re.sub(r"<[^>]+>", "", detail.value)) if "html" in detail.type else detail.value


@pytest.mark.parametrize("name", ["rss.xml", "atom.xml", "tags/research/rss.xml", "tags/research/atom.xml"])
def test_feedparser_reads_the_hostile_title_and_summary_exactly(hostile, name):
    entry = entry_of(feedparser.parse((hostile / "public" / name).read_bytes()))
    assert entry.title == TITLE
    assert summary_text(entry.summary_detail) == SUMMARY


def test_rss_read_by_lxml_gives_the_title_as_text_and_the_description_as_html_of_the_text(hostile):
    channel = etree.fromstring((hostile / "public" / "rss.xml").read_bytes()).find("channel")
    item = next(i for i in channel.findall("item") if "q-and-a" in i.findtext("guid"))
    assert item.findtext("title") == TITLE
    description = item.findtext("description")
    assert "<" not in description and html.unescape(description) == SUMMARY


def test_atom_read_by_lxml_gives_text_constructs_as_text(hostile):
    ns = {"a": "http://www.w3.org/2005/Atom"}
    feed = etree.fromstring((hostile / "public" / "atom.xml").read_bytes())
    entry = next(e for e in feed.findall("a:entry", ns) if "q-and-a" in e.findtext("a:id", namespaces=ns))
    title, summary = entry.find("a:title", ns), entry.find("a:summary", ns)
    assert (title.get("type", "text"), title.text) == ("text", TITLE)
    assert (summary.get("type", "text"), summary.text) == ("text", SUMMARY)


@pytest.mark.parametrize("name", ["feed.json", "tags/research/feed.json"])
def test_json_feed_read_by_the_json_module_and_a_feed_reader_gives_the_same_words(hostile, name):
    """feedparser 6.0 reads no JSON Feed; the json module and the pipeline's own JSON Feed reader do."""
    data = (hostile / "public" / name).read_bytes()
    item = next(i for i in json.loads(data)["items"] if "q-and-a" in i["id"])
    assert (item["title"], item["summary"]) == (TITLE, SUMMARY)
    entry = next(e for e in parse_json_feed(data, BASE + name)[1] if e.id and "q-and-a" in e.id)
    assert (entry.title, entry.summary, entry.title_html, entry.summary_html) == (TITLE, SUMMARY, False, False)


def test_media_are_published_under_url_safe_names_with_length_and_type_from_the_file(hostile):
    image_name, audio_name = published_name("images/MS walk é.jpg"), published_name("audio/Q&A episode é.mp3")
    assert re.fullmatch(r"audio/Q-A-episode-e-[0-9a-f]{8}\.mp3", audio_name)
    public = hostile / "public"
    assert (public / image_name).read_bytes() == (hostile / "content" / "images" / "MS walk é.jpg").read_bytes()
    assert (public / audio_name).read_bytes() == MP3
    item = next(i for i in etree.fromstring((public / "rss.xml").read_bytes()).iter("item")
                if "q-and-a" in i.findtext("guid"))
    assert item.find("enclosure").attrib == {"url": BASE + audio_name, "length": str(len(MP3)), "type": "audio/mpeg"}
    assert item.find("{http://search.yahoo.com/mrss/}content").get("url") == BASE + image_name


def test_image_and_enclosure_play_the_same_roles_in_rss_atom_and_json(hostile):
    public = hostile / "public"
    audio, image = BASE + published_name("audio/Q&A episode é.mp3"), BASE + published_name("images/MS walk é.jpg")
    rss = entry_of(feedparser.parse((public / "rss.xml").read_bytes()))
    atom = entry_of(feedparser.parse((public / "atom.xml").read_bytes()))
    item = next(i for i in json.loads((public / "feed.json").read_bytes())["items"] if "q-and-a" in i["id"])
    assert [e.href for e in rss.enclosures] == [e.href for e in atom.enclosures] == [audio]
    assert [a["url"] for a in item["attachments"]] == [audio]
    assert rss.media_content[0]["url"] == atom.media_content[0]["url"] == item["image"] == image


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass


def test_every_local_media_url_in_every_feed_page_and_digest_answers_200(hostile):
    public = hostile / "public"
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(public)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        urls: set[str] = set()
        for path in public.rglob("*"):
            if path.suffix in (".xml", ".json", ".html"):
                text = html.unescape(path.read_text(encoding="utf-8"))
                urls |= {url for url in re.findall(re.escape(BASE) + r"[^\s\"'<>)]+", text)
                         if re.search(r"\.(png|jpe?g|gif|mp3|svg|pdf)$", url)}
        assert BASE + published_name("audio/Q&A episode é.mp3") in urls
        assert BASE + published_name("images/MS walk é.jpg") in urls and BASE + "logo.png" in urls
        statuses = {}
        for url in sorted(urls):
            local = f"http://127.0.0.1:{server.server_address[1]}/{url.removeprefix(BASE)}"
            try:
                with urllib.request.urlopen(local, timeout=10) as response:
                    statuses[url] = response.status
            except urllib.error.HTTPError as exc:
                statuses[url] = exc.code
        assert {url: status for url, status in statuses.items() if status != 200} == {}
    finally:
        server.shutdown()
        server.server_close()


def test_feedcheck_at_level_aa_reports_nothing_over_every_feed_document(hostile):
    documents = feed_documents(hostile / "public")
    assert sorted(name for name in documents if name.startswith("feed-archive/")) == [
        "feed-archive/atom-1.xml", "feed-archive/rss-1.xml"]
    assert {"rss.xml", "atom.xml", "feed.json", "tags/research/rss.xml", "tags/research/atom.xml",
            "tags/research/feed.json"} <= set(documents)
    assert problems(documents) == {}


def test_feedcheck_reports_a_summary_escaped_only_once_as_invalid_html():
    assert html_problems("Q&A <MS> & you", "item/description")[0].startswith("item/description: Invalid HTML")
    assert html_problems("Q&amp;A &lt;MS&gt; &amp; you", "item/description") == []


def test_feedcheck_reports_unencoded_markup_characters_in_an_rss_title():
    feed = (b'<rss version="2.0"><channel><title>t</title><link>https://example.org/</link><description>d'
            b'</description><item><title>Q&amp;A &lt;MS&gt;</title><guid isPermaLink="false">x</guid></item>'
            b"</channel></rss>")
    assert any("hexadecimal character references" in problem for problem in aa_problems(feed))


def test_a_missing_enclosure_file_is_a_lint_finding_with_file_line_and_field(project, config):
    write_item(project, "episode", 'title: "Episode"\ndate: 2021-12-01T09:00:00-05:00\n'
               'enclosure:\n  type: audio/mpeg\n  url: "audio/missing one.mp3"\n')
    findings = lint_media(read_content(config), config)
    assert [(f.rule, f.where) for f in findings] == [("media-missing", "content/episode.md:6: enclosure.url")]
    assert "audio/missing one.mp3" in findings[0].detail


# -- the Subject -----------------------------------------------------------------------------------

def test_a_subject_past_the_limit_is_a_finding_that_states_the_limit():
    (finding,) = lint_subject("x" * (SUBJECT_CHARS + 1))
    assert finding.rule == "subject-length" and f"about {SUBJECT_CHARS}" in finding.detail and not finding.blocking


def test_a_100000_character_title_is_refused_by_lint_even_with_force(project, secret):
    write_item(project, "long", f'title: "{"Long " * 20000}"\ndate: 2025-01-01T09:00:00-05:00\n')
    result = run_cli(project, "lint")
    assert result.returncode != 0
    assert f"over the {SUBJECT_LINE_LIMIT}-character line limit of RFC 5322" in result.stdout + result.stderr


# -- the first send ----------------------------------------------------------------------------------

def test_the_shipped_project_runs_and_sends_without_force(project, secret):
    """A clean copy (config, templates, content, assets as shipped) with only a postal address and one
    subscriber: `pipeline run` then `pipeline send` deliver to a loopback SMTP server."""
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port)
        add_subscribers(config, 1)
        ran = run_cli(project, "run")
        sent = run_cli(project, "send")
    assert (ran.returncode, sent.returncode) == (0, 0), ran.stderr + sent.stderr
    assert "img-missing" not in ran.stderr + sent.stderr
    (message,) = handler.by_recipient()["reader00000@example.org"]
    assert b"International Mesenchymal Stem Cell Trial" in message.raw
    assert (project / "public" / "logo.png").read_bytes() == (project / "assets" / "logo.png").read_bytes()
    assert (project / "public" / "images" / "mesems-trial-design.png").is_file()


def test_a_send_that_lint_stops_creates_no_edition(project, secret):
    write_item(project, "long", f'title: "{"Long " * 30}"\ndate: 2025-01-01T09:00:00-05:00\n')
    config = load_config(project / "config.yaml")
    add_subscribers(config, 1)
    result = run_cli(project, "send")
    assert result.returncode != 0 and "subject-length" in result.stderr
    with usecases.open_storage(config) as storage:
        assert storage.list_editions() == []


def test_the_test_copy_prints_the_findings_the_real_send_stops_on(project, secret):
    write_item(project, "long", f'title: "{"Long " * 30}"\ndate: 2025-01-01T09:00:00-05:00\n')
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        use_smtp(project, sink.port)
        copy = run_cli(project, "send", "--to", "editor@example.org")
    assert copy.returncode == 0 and "test copy sent to editor@example.org" in copy.stdout
    assert "the real send will stop on 1 pre-send check(s)" in copy.stderr and "subject-length" in copy.stderr
    assert len(handler.by_recipient()["editor@example.org"]) == 1


# -- remote Atom text is text ------------------------------------------------------------------------

REMOTE_ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Partner news</title><id>urn:uuid:60a76c80-d399-11d9-b93c-0003939e0af6</id>
<updated>2021-11-20T10:00:00Z</updated><link href="https://partner.example.org/"/>
<entry><id>urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a</id><updated>2021-11-20T10:00:00Z</updated>
<link href="https://partner.example.org/q-and-a"/>
<title type="text">Q&amp;A &lt;MS&gt; &amp; "you" — café: &lt;script&gt;alert(1)&lt;/script&gt;</title>
<summary type="text">Text that looks like markup: &lt;img src=x onerror=alert(1)&gt; &amp;lt;b&amp;gt; stays text</summary>
</entry></feed>""".encode()


def test_remote_atom_type_text_titles_and_summaries_are_kept_as_text(project):
    from .feed_server import FeedServer, Response

    with FeedServer() as server:
        server.routes["/partner"] = Response(body=REMOTE_ATOM, headers={"Content-Type": "application/atom+xml"})
        config = load_config(set_config(project, sources=[{"name": "partner", "url": server.url("/partner")}]))
        usecases.run(config, progress=False)
    atom = feedparser.parse((project / "public" / "atom.xml").read_bytes())
    entry = entry_of(atom, "partner.example.org/q-and-a")
    assert entry.title == 'Q&A <MS> & "you" — café: <script>alert(1)</script>'
    assert entry.summary == "Text that looks like markup: <img src=x onerror=alert(1)> &lt;b&gt; stays text"
    feed = json.loads((project / "public" / "feed.json").read_bytes())
    item = next(i for i in feed["items"] if "q-and-a" in i.get("url", "") + i.get("external_url", ""))
    assert "<img" not in item["content_html"] and "&lt;img src=x onerror=alert(1)&gt;" in item["content_html"]


def test_a_mis_sized_image_is_a_lint_finding_with_file_line_and_field(project, config):
    write_image(project / "content" / "images" / "walk.png", 600, 315)
    write_item(project, "walk", 'title: "Walk"\ndate: 2021-12-01T09:00:00-05:00\n'
               'image:\n  url: images/walk.png\n  alt: "Walkers"\n  width: 1200\n  height: 700\n')
    findings = [f for f in lint_sizes(read_content(config), config) if "walk" in f.where]
    assert [(f.rule, f.where) for f in findings] == [("img-dimensions", "content/walk.md:7: image.width")]
    assert "1200x700" in findings[0].detail and "600x315" in findings[0].detail


@pytest.mark.parametrize("title", ["Bonjour\u00a0! Les «\u202fMS\u202f» & <vous>", "5\u00a0km walk: 'quotes' & \"more\"",
                                   "Why <script>alert(1)</script> is text in a title"])
def test_no_break_spaces_and_quotes_in_a_title_round_trip_through_rss_and_atom(project, config, title):
    from pipeline.publish.feeds import build_feeds

    write_item(project, "nbsp", f"title: {json.dumps(title)}\ndate: 2025-01-01T09:00:00-05:00\n")
    feeds = build_feeds(read_content(config), config)
    for data in (feeds.rss, feeds.atom):
        assert entry_of(feedparser.parse(data), "nbsp").title == title
    assert json.loads(feeds.json)["items"][0]["title"] == title


def test_a_script_tag_in_a_local_title_is_shown_as_text_in_the_digest_and_never_runs(project, config):
    from pipeline.publish.digest import render_digest

    title = "Why <script>alert(1)</script> is text in a title"
    write_item(project, "script", f"title: {json.dumps(title)}\ndate: 2025-01-01T09:00:00-05:00\n")
    digest = render_digest(read_content(config), config, "edition-1")
    page = lxml_html.fromstring(digest.html)
    assert page.xpath("//script") == []
    assert title in page.text_content() and title in digest.text
    assert digest.subject == f"National MS Society News: {title}"

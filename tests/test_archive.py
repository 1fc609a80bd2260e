"""The web archive: one page per edition, an index newest first, and the email's "view in browser" link."""

from __future__ import annotations

from email import message_from_bytes, policy

from lxml import html as lxml_html

from .conftest import run_cli, write_item

BASE = "https://www.nationalmssociety.org/news-feed/"


def _send_edition(project):
    run_cli(project, "run", check=True)
    return sorted((project / "outbox").iterdir(), key=lambda p: p.stat().st_mtime)


def test_each_edition_has_an_archive_page_linked_from_the_email_and_the_index(project, secret):
    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    (first,) = _send_edition(project)
    write_item(project, "grants", 'title: "New research grants"\ndate: 2021-11-20T09:00:00-05:00')
    second = next(p for p in _send_edition(project) if p != first)

    archive = project / "public" / "archive"
    assert (archive / f"{first.name}.html").exists() and (archive / f"{second.name}.html").exists()
    index = lxml_html.fromstring((archive / "index.html").read_text())
    assert index.xpath("//li/a/@href") == [f"{BASE}archive/{second.name}.html", f"{BASE}archive/{first.name}.html"]

    message = message_from_bytes(next(second.glob("*.eml")).read_bytes(), policy=policy.default)
    html = message.get_body(("html",)).get_content()
    view = lxml_html.fromstring(html).xpath('//a[contains(., "View this email in your browser")]/@href')
    assert view == [f"{BASE}archive/{second.name}.html"]

    page = (archive / f"{second.name}.html").read_text()
    assert "New research grants" in page and "Mesenchymal" not in page
    assert "token=" not in page  # no personal unsubscribe link on the web


def test_site_home_links_the_feeds_the_digest_and_the_archive(project):
    run_cli(project, "run", "--no-send", check=True)
    home = lxml_html.fromstring((project / "public" / "index.html").read_text())
    links = set(home.xpath("//a/@href") + home.xpath("//link/@href"))
    assert {f"{BASE}rss.xml", f"{BASE}atom.xml", f"{BASE}feed.json", f"{BASE}digest.html", f"{BASE}archive/"} <= links
    assert home.xpath("//code/text()") == [f"{BASE}rss.xml", f"{BASE}atom.xml", f"{BASE}feed.json"]


def _created_day(project) -> str:
    """The day the one edition was created, as readers in the configured timezone count days."""
    from zoneinfo import ZoneInfo

    from pipeline.config import load_config
    from pipeline.publish.digest import longdate
    from pipeline.usecases import open_storage

    with open_storage(load_config(project / "config.yaml")) as storage:
        (edition,) = storage.list_editions()
    return longdate(edition.created_at.astimezone(ZoneInfo("America/New_York")))


def test_the_archive_dates_each_edition_by_its_creation_in_the_configured_timezone(project, secret):
    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    _send_edition(project)
    index = lxml_html.fromstring((project / "public" / "archive" / "index.html").read_text())
    assert index.xpath("//li/span/text()")[0].startswith(_created_day(project) + " · 4 stories")


def test_the_email_the_web_copy_and_the_text_part_carry_the_editions_date(project, secret):
    """Not the newest story's date (4 November 2021): the day the edition was made."""
    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    (sent,) = _send_edition(project)
    message = message_from_bytes(next(sent.glob("*.eml")).read_bytes(), policy=policy.default)
    pages = [message.get_body(("html",)).get_content(), (project / "public" / "digest.html").read_text(),
             (project / "public" / "archive" / f"{sent.name}.html").read_text()]
    shown = [" ".join(lxml_html.fromstring(page).xpath('//p[contains(@class, "edition-date")]')[0].text_content().split())
             for page in pages]
    assert shown == [_created_day(project)] * 3
    assert message.get_body(("plain",)).get_content().splitlines()[1] == _created_day(project)


def test_web_copies_do_not_offer_to_view_themselves_in_a_browser(project, secret):
    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    (sent,) = _send_edition(project)
    email = message_from_bytes(next(sent.glob("*.eml")).read_bytes(), policy=policy.default)
    assert "View this email in your browser" in email.get_body(("html",)).get_content()
    assert "View this email in your browser" in email.get_body(("plain",)).get_content()
    for page in (project / "public" / "archive" / f"{sent.name}.html", project / "public" / "digest.html",
                 project / "public" / "digest.txt"):
        assert "View this email in your browser" not in page.read_text()


def test_a_story_outside_the_latest_edition_changes_without_rendering_its_digest_again(project, config, secret):
    from pipeline import usecases

    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    (edition,) = _send_edition(project)
    page = project / "public" / "archive" / f"{edition.name}.html"
    before = page.read_bytes()
    write_item(project, "grants", 'title: "New research grants"\ndate: 2021-11-20T09:00:00-05:00')
    outcome = usecases.run(config, action="feeds", progress=False)  # published, not mailed: not in the edition
    assert outcome.written and outcome.renders == 0
    write_item(project, "grants", 'title: "New research grants, corrected"\ndate: 2021-11-20T09:00:00-05:00')
    assert usecases.run(config, action="feeds", progress=False).renders == 0
    assert page.read_bytes() == before and b"corrected" not in (project / "public" / "digest.html").read_bytes()
    shown = next((project / "content").glob("mesems*.md"))  # in the edition: its page is made again
    shown.write_text(shown.read_text().replace("MESEMS", "MESEMS (corrected)", 1))
    assert usecases.run(config, action="feeds", progress=False).renders == 1
    assert page.read_bytes() != before and b"MESEMS (corrected)" in page.read_bytes()

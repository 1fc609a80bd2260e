"""The MESEMS citation whole where a reader looks for it (feeds, the email and its text part, the web
copies of the digest); only a citation over 1,500 characters is shortened in the email, at an author
boundary with "et al." and a link to the whole one; no cut mid-word."""

from __future__ import annotations

import json
import re

import feedparser
import pytest
from lxml import html as lxml_html

from pipeline.publish.digest import CITATION_CHARS, public_copy, render_digest, short_citation
from pipeline.publish.feeds import build_feeds
from pipeline.sources import read_content

from .conftest import run_cli

WHOLE = ('"Safety, tolerability, and activity of mesenchymal stem cells versus placebo in multiple sclerosis '
         '(MESEMS): a phase 2, randomised, double-blind crossover trial," by Antonio Uccelli, Alice Laroni, '
         "Rehiana Ali, Mario Alberto Battaglia, Morten Blinkenberg, Lou Brundin, Michel Clanet, Oscar Fernandez, "
         "James Marriot, Paolo Muraro, Seyed Massood Nabavi, Roberto S Oliveri, Ernst Radue, Cristina Ramo Tello, "
         "Irene Schiavetti, Johann Sellner, Per Soelberg Sorensen, Maria Pia Sormani, Jens Thomas Wuerfel, "
         "Mark S Freedman, on behalf of the MESEMS investigators. Lancet Neurology (2021; 20: 917\u201329).")
ARCHIVE = "https://www.nationalmssociety.org/news-feed/archive/"


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def digest(config):
    return render_digest(read_content(config), config, "edition-1")


def test_the_content_file_carries_the_whole_citation(config):
    (item,) = [item for item in read_content(config) if item.citation]
    assert _flat(item.citation) == WHOLE


def test_every_feed_carries_the_whole_citation_with_its_en_dash(config):
    feeds = build_feeds(read_content(config), config)
    for data in (feeds.rss, feeds.atom):
        entry = next(e for e in feedparser.parse(data).entries if "mesems" in e.id)
        assert WHOLE in _flat(lxml_html.fromstring(entry.content[0].value).text_content())
    item = next(i for i in json.loads(feeds.json)["items"] if "mesems" in i["id"])
    assert WHOLE in _flat(lxml_html.fromstring(item["content_html"]).text_content())


def test_the_email_carries_the_whole_citation_with_no_link_to_another_copy(digest):
    (paragraph,) = lxml_html.fromstring(digest.html).xpath('//p[contains(@class, "citation")]')
    assert _flat(paragraph.text_content()) == WHOLE
    assert paragraph.xpath("a") == []


def test_the_text_part_carries_the_whole_citation(digest):
    assert f"Citation: {WHOLE}" in _flat(digest.text)
    assert "Full citation:" not in digest.text


def _consortium_paper(config):
    """The MESEMS story citing a paper with 200 authors (about 3,000 characters)."""
    authors = ", ".join(f"Author{n} Surname{n}" for n in range(200))
    citation = f'"A consortium paper," by {authors}, on behalf of the consortium. Lancet Neurology (2021; 20: 917\u201329).'
    return [item.model_copy(update={"citation": citation}) if item.citation else item for item in read_content(config)]


def test_a_citation_over_the_limit_is_shortened_in_the_email_at_an_author_boundary_with_a_link(config):
    digest = render_digest(_consortium_paper(config), config, "edition-1")
    (paragraph,) = lxml_html.fromstring(digest.html).xpath('//p[contains(@class, "citation")]')
    shown = _flat(paragraph.text_content())
    assert shown.startswith('"A consortium paper," by Author0 Surname0, Author1 Surname1, ')
    assert shown.endswith(" et al. Lancet Neurology (2021; 20: 917\u201329). Full citation")
    assert len(shown) <= CITATION_CHARS + len(" Full citation")
    assert paragraph.xpath("a/@href") == [f"{ARCHIVE}edition-1.html#citation-mesems-stem-cell-trial-results"]
    assert f"Full citation: {ARCHIVE}edition-1.html#citation-mesems-stem-cell-trial-results" in digest.text


def test_the_web_copy_carries_a_shortened_citation_whole_at_its_anchor(config):
    items = _consortium_paper(config)
    page, _text = public_copy(render_digest(items, config, "edition-1"), config)
    (paragraph,) = lxml_html.fromstring(page).xpath('//p[@id="citation-mesems-stem-cell-trial-results"]')
    (item,) = [item for item in items if item.citation]
    assert _flat(paragraph.text_content()) == _flat(item.citation)


def test_the_web_copy_the_link_points_at_carries_the_whole_citation_at_its_anchor(config, digest):
    page, _text = public_copy(digest, config)
    (paragraph,) = lxml_html.fromstring(page).xpath('//p[@id="citation-mesems-stem-cell-trial-results"]')
    assert _flat(paragraph.text_content()) == WHOLE


def test_the_archive_page_of_a_sent_edition_carries_the_whole_citation(project, secret):
    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    run_cli(project, "run", check=True)
    (page,) = [p for p in (project / "public" / "archive").glob("*.html") if p.name != "index.html"]
    assert WHOLE in _flat(lxml_html.fromstring(page.read_bytes()).text_content())


def test_a_citation_without_a_list_of_authors_is_cut_at_a_word():
    cut = short_citation("word " * 100, 50)
    assert cut is not None and cut.endswith("word…") and len(cut) <= 50


def test_no_shortened_text_in_the_digest_its_text_part_or_the_archive_page_ends_in_a_cut_word(config, digest):
    items = read_content(config)
    words = {word for item in items for field in (item.title, item.summary, item.citation or "", item.content_html)
             for word in re.findall(r"[\w’'-]+", field)}
    page, _text = public_copy(digest, config)
    for shown in (lxml_html.fromstring(digest.html).text_content(), digest.text,
                  lxml_html.fromstring(page).text_content()):
        cut_words = re.findall(r"([\w’'-]+)(?:…| …| et al\.)", shown)
        assert all(word in words for word in cut_words), [w for w in cut_words if w not in words]

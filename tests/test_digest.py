"""The email digest: inlined, responsive, within Gmail's limits, and carrying every fact."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from lxml import html as lxml_html

from pipeline.items import Item, newest_first
from pipeline.publish.digest import GMAIL_CLIP_BYTES, STYLE_BLOCK_LIMIT, UNSUBSCRIBE_PLACEHOLDER, render_digest
from pipeline.sources import read_content

MESEMS_FACTS = [
    "MESEMS", "144 people", "15 sites in 9 countries", "24 weeks",
    "Safety, tolerability, and activity of mesenchymal stem cells versus placebo in multiple sclerosis (MESEMS): "
    "a phase 2, randomised, double-blind crossover trial",
    "Antonio Uccelli", "Mark S Freedman, on behalf of the MESEMS investigators", "Lancet Neurology 2021; 20: 917–29",
]
FOOTER_FACTS = ["1-800-344-4867", "13-5661935", "1946", "National Multiple Sclerosis Society",
                "About Multiple Sclerosis", "Facebook", "Instagram", "YouTube"]


@pytest.fixture
def digest(config):
    return render_digest(read_content(config), config)


def _words(text: str) -> str:
    return " ".join(text.split())


def _visible_text(html: str) -> str:
    return _words(lxml_html.fromstring(html).text_content())


def test_elements_carry_inline_styles(digest):
    doc = lxml_html.fromstring(digest.html)
    container = doc.xpath('//table[contains(@class, "container")]')[0]
    assert "width:600px" in container.get("style").replace(" ", "")
    assert all(a.get("style") for a in doc.xpath('//a[contains(@class, "read-more")]'))


def test_media_queries_survive_in_the_style_block_with_important(digest):
    style = lxml_html.fromstring(digest.html).xpath("//style")[0].text
    assert re.search(r"@media only screen and \(max-width: 600px\)\s*{\s*\.container { width: 100% !important; }", style)
    assert "@media (prefers-color-scheme: dark)" in style
    assert len(style.encode()) < STYLE_BLOCK_LIMIT


def test_doctype_lang_color_scheme_and_preheader(digest):
    assert digest.html.startswith("<!DOCTYPE html>")
    doc = lxml_html.fromstring(digest.html)
    assert doc.get("lang") == "en-us"
    assert doc.xpath('//meta[@name="color-scheme"]/@content') == ["light dark"]
    preheader = doc.xpath('//div[@class="preheader"]')[0]
    assert "display:none" in preheader.get("style").replace(" ", "")
    assert preheader.text_content().startswith("The phase 2 MESEMS trial")


def test_layout_tables_are_presentational_and_images_have_alt_and_width(digest):
    doc = lxml_html.fromstring(digest.html)
    assert all(t.get("role") == "presentation" for t in doc.xpath("//table"))
    images = doc.xpath("//img")
    assert images and all(img.get("alt") and img.get("width") for img in images)


@pytest.mark.parametrize("fact", MESEMS_FACTS + FOOTER_FACTS)
def test_every_fact_is_in_the_html_and_the_text(digest, fact):
    assert fact in _visible_text(digest.html)
    assert fact in _words(digest.text)


def test_each_item_is_a_card_with_title_link_and_read_more(digest):
    doc = lxml_html.fromstring(digest.html)
    titles = [a.text_content() for a in doc.xpath('//h2[contains(@class, "card-title")]/a')]
    assert len(titles) == 4 and titles[0].startswith("International Mesenchymal Stem Cell Trial")
    links = doc.xpath('//a[contains(@class, "read-more")]/@href')
    assert links[0] == "https://www.nationalmssociety.org/news-and-magazine/news/mesems-stem-cell-trial-results"


def test_text_part_lists_each_item_with_its_link(digest):
    for item in digest.items:
        assert _words(item.title) in _words(digest.text)
        assert f"Read more: {item.link}" in digest.text


def test_html_stays_under_gmail_clipping(digest):
    assert len(digest.html.encode()) < GMAIL_CLIP_BYTES


def test_unsubscribe_placeholder_is_filled_per_recipient(digest):
    assert UNSUBSCRIBE_PLACEHOLDER in digest.html and UNSUBSCRIBE_PLACEHOLDER in digest.text
    html, text = digest.with_unsubscribe("https://example.org/unsubscribe?token=abc")
    assert 'href="https://example.org/unsubscribe?token=abc"' in html
    assert "Unsubscribe: https://example.org/unsubscribe?token=abc" in text
    assert UNSUBSCRIBE_PLACEHOLDER not in html + text


def test_hostile_title_is_escaped(config):
    item = Item(id="urn:x:evil", slug="evil", title='<script>alert("x")</script> & more', link="https://example.org/e",
                published=datetime(2021, 11, 5, tzinfo=timezone.utc), summary="<img src=x onerror=alert(1)>",
                content_html="<p>x</p>")
    digest = render_digest([item], config)
    assert "<script>" not in digest.html
    assert "&lt;script&gt;alert(\"x\")&lt;/script&gt; &amp; more" in digest.html
    assert "<img src=x" not in digest.html
    assert '<script>alert("x")</script> & more' in digest.text  # plain text needs no escaping


def test_subject_is_one_line_from_the_lead_item(digest):
    assert digest.subject == ("National MS Society News: International Mesenchymal Stem Cell Trial Finds No Effect "
                              "on Inflammation in Active MS")


def test_rendering_is_deterministic(config):
    items = read_content(config)
    ordered = newest_first(items)
    first, second = render_digest(ordered, config), render_digest(ordered, config)
    assert first is not second and first == second


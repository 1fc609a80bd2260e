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
    "Safety, tolerability, and activity of mesenchymal stem cells versus placebo",
]
FOOTER_FACTS = ["1-800-344-4867", "13-5661935", "National Multiple Sclerosis Society",
                "You receive this because you subscribed to National MS Society News"]


@pytest.fixture
def digest(config):
    return render_digest(read_content(config), config)


def _words(text: str) -> str:
    return " ".join(text.split())


def _visible_text(html: str) -> str:
    return _words(lxml_html.fromstring(html).text_content())


def _style(element) -> str:
    return (element.get("style") or "").replace(" ", "")


def test_the_column_is_fluid_from_inline_styles_alone(digest):
    """Clients that strip <style> still get a column that shrinks: max-width, not width, inlined."""
    doc = lxml_html.fromstring(digest.html)
    (container,) = doc.xpath('//div[contains(@class, "container")]')
    assert "max-width:600px" in _style(container) and "width:600px" not in _style(container).replace("max-width", "")
    for image in doc.xpath('//img[contains(@class, "item-image")]'):
        assert "width:100%" in _style(image) and "height:auto" in _style(image)
    assert all(_style(a) for a in doc.xpath('//a[contains(@class, "button-a")]'))


def test_media_queries_only_refine_and_survive_with_important(digest):
    style = lxml_html.fromstring(digest.html).xpath("//style")[0].text
    assert re.search(r"@media only screen and \(max-width: 599px\)\s*{[^}]*padding-left: 16px !important", style)
    assert "@media (prefers-color-scheme: dark)" in style
    assert all(len((s.text or "").encode()) < STYLE_BLOCK_LIMIT for s in lxml_html.fromstring(digest.html).xpath("//style"))


def test_outlook_dark_mode_hooks_have_a_style_block_of_their_own(digest):
    """Gmail drops a whole <style> with selectors it does not know; the [data-ogsc] rules must not take the rest along."""
    main, outlook = lxml_html.fromstring(digest.html).xpath("//style")
    assert "[data-og" not in main.text
    assert "[data-ogsc] .item-summary" in outlook.text and "[data-ogsb] .container" in outlook.text


def test_doctype_lang_color_scheme_and_preheader(digest):
    assert digest.html.startswith("<!DOCTYPE html>")
    doc = lxml_html.fromstring(digest.html)
    assert doc.get("lang") == "en-us"
    assert doc.xpath('//meta[@name="color-scheme"]/@content') == ["light dark"]
    preheader = doc.xpath('//div[@class="preheader"]')[0]
    assert "display:none" in preheader.get("style").replace(" ", "")
    assert preheader.text_content().startswith("The phase 2 MESEMS trial")
    assert preheader.text_content().endswith("\u200c\u00a0" * 40)  # padding keeps body text out of the preview


def test_gmail_keeps_the_language_on_a_wrapper(digest):
    """Gmail drops <html>; the article wrapper carries lang for screen readers."""
    (wrapper,) = lxml_html.fromstring(digest.html).xpath('//div[@role="article"]')
    assert wrapper.get("lang") == "en-us" and wrapper.get("aria-roledescription") == "email"


def test_layout_tables_are_presentational_and_images_have_alt_width_and_height(digest):
    doc = lxml_html.fromstring(digest.html)
    assert all(t.get("role") == "presentation" for t in doc.xpath("//table"))
    images = doc.xpath("//img")
    assert images and all(img.get("alt") and img.get("width") and img.get("height") for img in images)


def test_an_image_is_never_wider_than_its_cell_and_keeps_its_proportions(digest):
    (image,) = lxml_html.fromstring(digest.html).xpath('//img[contains(@class, "item-image")]')
    assert (image.get("width"), image.get("height")) == ("552", "290")  # 1200x630 in a 552 px cell


def test_alt_text_is_styled_to_read_on_its_background(digest):
    """With images off (Outlook's default) the logo's alt text shows on the masthead colour."""
    (logo,) = lxml_html.fromstring(digest.html).xpath('//img[contains(@class, "logo")]')
    assert re.search(r"(^|;)color:#fff(fff)?(;|$)", _style(logo)) and "font-family:Arial" in _style(logo)


@pytest.mark.parametrize("fact", MESEMS_FACTS + FOOTER_FACTS)
def test_every_fact_is_in_the_html_and_the_text(digest, fact):
    assert fact in _visible_text(digest.html)
    assert fact in _words(digest.text)


MESEMS_LINK = "https://www.nationalmssociety.org/news-feed/stories/mesems-stem-cell-trial-results/"


def test_each_item_has_one_title_link_and_a_call_to_action_naming_it(digest):
    doc = lxml_html.fromstring(digest.html)
    titles = [a.text_content() for a in doc.xpath('//h2[contains(@class, "item-title")]/a')]
    assert len(titles) == 4 and titles[0].startswith("International Mesenchymal Stem Cell Trial")
    buttons = doc.xpath('//a[contains(@class, "button-a")]')
    assert [b.get("href") for b in buttons][0] == MESEMS_LINK
    assert [b.get("aria-label") for b in buttons] == [f"Read the full story: {title}" for title in titles]
    assert not doc.xpath("//a//img[contains(@class, 'item-image')]")  # the image is not a third link


def test_buttons_are_bulletproof_table_cells(digest):
    """Outlook ignores padding on <a>: the coloured, padded box is the table cell (mso-padding-alt)."""
    cells = lxml_html.fromstring(digest.html).xpath('//td[contains(@class, "button-td")]')
    assert len(cells) == 4
    assert all(c.get("bgcolor") == "#1f5fa8" and "mso-padding-alt:10px18px" in _style(c) for c in cells)


def test_the_citation_goes_out_whole_down_to_its_last_author(digest):
    (citation,) = lxml_html.fromstring(digest.html).xpath('//p[contains(@class, "citation")]')
    assert "Mark S Freedman, on behalf of the MESEMS investigators" in citation.text_content()
    assert "et al." not in citation.text_content()


def test_the_author_is_shown_only_when_it_is_not_the_organisation(config):
    items = newest_first(read_content(config))
    guest = items[1].model_copy(update={"author": "Dr. Jane Researcher"})
    digest = render_digest([items[0], guest], config)
    metas = [_words(p.text_content()) for p in lxml_html.fromstring(digest.html).xpath('//p[contains(@class, "item-meta")]')]
    assert metas == ["November 4, 2021", "November 2, 2021 · Dr. Jane Researcher"]
    assert "November 2, 2021 - Dr. Jane Researcher" in digest.text and "National MS Society\n" not in digest.text


def test_the_edition_has_an_h1_and_more_than_three_items_get_an_in_this_issue_list(config, digest):
    doc = lxml_html.fromstring(digest.html)
    assert [h.text_content() for h in doc.xpath("//h1")] == ["National MS Society News"]
    assert len(doc.xpath('//ol[contains(@class, "contents-list")]/li')) == 4
    assert "In this issue:\n- International Mesenchymal" in digest.text
    three = render_digest(newest_first(read_content(config))[:3], config)
    assert "In this issue" not in three.html and "In this issue" not in three.text


def test_phone_and_dates_do_not_break_across_lines(digest):
    doc = lxml_html.fromstring(digest.html)
    nowrap = [_words(s.text_content()) for s in doc.xpath('//span[contains(@class, "nowrap")]')]
    assert "Call 1-800-344-4867" in nowrap and "November 4, 2021" in nowrap
    assert all("white-space:nowrap" in _style(s) for s in doc.xpath('//span[contains(@class, "nowrap")]'))


def test_social_links_are_small_icons_with_alt_text_and_lines_in_the_text_part(digest):
    icons = lxml_html.fromstring(digest.html).xpath('//a[contains(@class, "social-link")]/img')
    assert [(i.get("alt"), i.get("width"), i.get("height")) for i in icons] == [
        ("Facebook", "24", "24"), ("X (formerly Twitter)", "24", "24"), ("Instagram", "24", "24"), ("YouTube", "24", "24")]
    assert icons[0].get("src") == "https://www.nationalmssociety.org/news-feed/icons/facebook.png"
    assert icons[0].getparent().get("href") == "https://www.facebook.com/nationalmssociety"
    assert "Facebook: https://www.facebook.com/nationalmssociety" in digest.text


def test_the_footer_is_compact(digest):
    footer = lxml_html.fromstring(digest.html).xpath('//td[contains(@class, "footer")]')[0]
    assert len(footer.text_content().split()) < 80
    assert "https://www.nationalmssociety.org/news-feed/archive/" in footer.xpath(".//a/@href")


def test_the_edition_date_is_the_editions_in_the_configured_timezone(config):
    items = newest_first(read_content(config))
    created = datetime(2021, 11, 8, 3, 30, tzinfo=timezone.utc)  # still Sunday 7 November in New York
    digest = render_digest(items, config, "e1", edition_date=created)
    edition = lxml_html.fromstring(digest.html).xpath('//p[contains(@class, "edition-date")]')[0]
    assert _words(edition.text_content()) == "November 7, 2021"
    assert digest.text.splitlines()[1] == "November 7, 2021"


def test_text_part_lists_each_item_with_its_link(digest):
    for item in digest.items:
        assert _words(item.title) in _words(digest.text)
        assert f"Read the full story: {item.link}" in digest.text


def test_html_stays_under_gmail_clipping(digest):
    assert len(digest.html.encode()) < GMAIL_CLIP_BYTES


def test_ten_long_items_stay_under_gmail_clipping(config):
    """digest.limit is 10: ten items with long titles, summaries and citations still fit in 102 KB."""
    (lead, *_rest) = newest_first(read_content(config))
    long_items = [lead.model_copy(update={
        "id": f"urn:long:{n}", "link": f"https://www.nationalmssociety.org/news/long-{n}",
        "title": "A long headline about research results and what they mean for people living with MS " * 2,
        "summary": "A long summary sentence about a trial, its participants and its findings. " * 8,
        "published": lead.published.replace(day=n + 1),
    }) for n in range(config.digest.limit)]
    digest = render_digest(newest_first(long_items), config)
    assert len(digest.html.encode()) < GMAIL_CLIP_BYTES


def test_outlook_markup_is_well_formed(digest):
    """Every conditional comment opens and closes, and so does every VML element."""
    html = digest.html
    assert html.count("<!--[if mso]>") + html.count("<!--[if gte mso 9]>") >= 4
    assert len(re.findall(r"<!--\[if [^\]]+\]>", html)) == len(re.findall(r"<!\[endif\]-->", html))
    assert re.search(r"<o:PixelsPerInch>96</o:PixelsPerInch>", html) and "<o:OfficeDocumentSettings>" in html
    # the ghost table around the column: opened before the container, closed after it
    assert html.index('<table role="presentation" align="center" width="600"') < html.index('class="container"')
    opened = re.findall(r"<(v:[a-z]+)\b[^>]*?(?<!/)>", html)
    for tag in set(opened):
        assert html.count(f"</{tag}>") == opened.count(tag)


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



def test_inlining_without_cssutils_validation_gives_the_same_bytes(config, monkeypatch):
    """The render turns off premailer's cssutils validation (a fixed cost of every send, issue 26):
    validation only logs, so the inlined digest must be byte-identical with it on."""
    import inspect

    from cssutils.parse import CSSParser
    from premailer import merge_style

    from pipeline.publish import digest as digest_module

    items = read_content(config)
    without = render_digest(items, config).html
    monkeypatch.setattr(digest_module, "_no_css_validation", lambda: None)
    monkeypatch.setattr(inspect.unwrap(merge_style.csstext_to_pairs), "__defaults__", (True,))
    merge_style.csstext_to_pairs.cache_clear()  # type: ignore[attr-defined]
    monkeypatch.setattr(CSSParser.__init__, "__defaults__", (*CSSParser.__init__.__defaults__[:-1], True))
    assert render_digest(items, config).html == without

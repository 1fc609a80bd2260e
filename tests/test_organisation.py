"""The organisation, from config.yaml to every place a reader looks: the digest's footer (HTML and text),
the site page and the archive page. The facts are the seed's, exactly."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest
from lxml import html as lxml_html

from .conftest import TEST_POSTAL_ADDRESS, run_cli

# What the footer of every digest says about the Society (issue 23, item 2).
FOOTER_FACTS = [
    "National Multiple Sclerosis Society", "founded in 1946", "A world free of MS.", "1-800-344-4867",
    TEST_POSTAL_ADDRESS, "EIN 13-5661935.",
    "© 2024 The National Multiple Sclerosis Society, a tax-exempt 501(c)3 nonprofit organization.",
]
FOOTER_LINKS = ["https://www.nationalmssociety.org", "https://www.facebook.com/nationalmssociety",
                "https://x.com/mssociety", "https://www.instagram.com/nationalmssociety",
                "https://www.youtube.com/user/NationalMSSociety"]
# What the site page and the archive page carry besides: both About paragraphs under their headings.
ABOUT_FACTS = [
    "About multiple sclerosis", "An estimated 1 million people in the United States live with MS.",
    "About the National MS Society", "Founded in 1946, the National MS Society leads a growing global movement",
    "1-800-344-4867", "© 2024 The National Multiple Sclerosis Society, a tax-exempt 501(c)3 nonprofit organization. "
                      "EIN 13-5661935.",
]


def _words(text: str) -> str:
    return " ".join(text.split())


def _visible(html: str) -> str:
    return _words(lxml_html.fromstring(html).text_content())


@pytest.fixture
def sent(project, secret):
    """The digest as a subscriber receives it, after a real run."""
    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    run_cli(project, "run", check=True)
    (eml,) = (project / "outbox").rglob("*.eml")
    return message_from_bytes(eml.read_bytes(), policy=policy.default)


@pytest.mark.parametrize("fact", FOOTER_FACTS)
def test_the_digest_footer_carries_each_fact(sent, fact):
    footer = lxml_html.fromstring(sent.get_body(("html",)).get_content()).xpath('//td[contains(@class, "footer")]')[0]
    assert fact in _words(footer.text_content())


def test_the_digest_footer_links_the_website_and_each_social_network(sent):
    footer = lxml_html.fromstring(sent.get_body(("html",)).get_content()).xpath('//td[contains(@class, "footer")]')[0]
    hrefs = footer.xpath(".//a/@href")
    assert all(link in hrefs for link in FOOTER_LINKS)
    assert "tel:1-800-344-4867" in hrefs


@pytest.mark.parametrize("fact", FOOTER_FACTS + FOOTER_LINKS)
def test_the_text_part_carries_each_fact(sent, fact):
    assert fact in _words(sent.get_body(("plain",)).get_content())


@pytest.mark.parametrize("page", ["index.html", "archive/index.html"])
@pytest.mark.parametrize("fact", ABOUT_FACTS)
def test_the_site_page_and_the_archive_page_carry_both_about_paragraphs_and_the_copyright_line(project, page,
                                                                                             fact):
    run_cli(project, "run", "--no-send", check=True)
    assert fact in _visible((project / "public" / page).read_text(encoding="utf-8"))


def test_the_site_page_names_no_cause_the_config_does_not(project):
    """The headings are the config's: nothing about multiple sclerosis is written in a template."""
    import yaml

    path = project / "config.yaml"
    data = yaml.safe_load(path.read_text())
    data["organisation"]["about"] = [{"heading": "About the food bank", "text": "We share food in Riverside."}]
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    run_cli(project, "run", "--no-send", check=True)
    home = lxml_html.fromstring((project / "public" / "index.html").read_text(encoding="utf-8"))
    assert "About the food bank" in home.xpath("//h2/text()")
    assert "multiple sclerosis" not in " ".join(home.xpath("//h2/text()")).lower()

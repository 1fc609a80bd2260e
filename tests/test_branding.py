"""Branding without editing templates: colours and fonts in config.yaml, WCAG AA checked by lint, and a
project's own templates/ folder overriding any packaged template by name."""

from __future__ import annotations

from importlib import resources

from lxml import html as lxml_html

from pipeline.branding import Branding
from pipeline.colour import contrast, parse_colour

from .conftest import run_cli, set_config


def _button_style(project) -> str:
    page = lxml_html.fromstring((project / "public" / "digest.html").read_text(encoding="utf-8"))
    return page.xpath('//a[contains(@class, "button-a")]')[0].get("style").replace(" ", "")


def test_colours_and_fonts_from_the_config_reach_the_digest(project):
    set_config(project, **{"branding.accent": "#0b5d3b", "branding.font_stack": "Georgia, 'Times New Roman', serif"})
    run_cli(project, "run", "--no-send", check=True)
    style = _button_style(project)
    assert "background-color:#0b5d3b" in style
    assert 'font-family:Georgia,"TimesNewRoman",serif' in style  # premailer writes the quotes as double


def test_colours_from_the_config_reach_the_site_page_with_their_dark_mode_pair(project):
    set_config(project, **{"branding.accent": "#0b5d3b", "branding.dark.link": "#9fe3c2"})
    run_cli(project, "run", "--no-send", check=True)
    style = " ".join(lxml_html.fromstring((project / "public" / "index.html").read_text()).xpath("//style/text()"))
    assert "a { color: #0b5d3b; }" in style
    assert "a { color: #9fe3c2; }" in style  # inside @media (prefers-color-scheme: dark)


def test_the_shipped_branding_passes_aa_in_light_and_dark_mode():
    assert Branding().low_contrast() == []
    ratios = [contrast(parse_colour(fore), parse_colour(back)) for _f, fore, _b, back in Branding().pairs()]
    assert min(ratios) >= 4.5


def test_lint_reports_a_colour_pair_below_aa(project):
    set_config(project, **{"branding.accent": "#7fa7d8"})  # light blue links on white: 2.49:1
    result = run_cli(project, "lint")
    assert result.returncode == 1
    assert ("config.yaml: branding.accent: brand-contrast: accent on background has contrast 2.49:1, below AA 4.5:1"
            in result.stderr)


def test_lint_reports_a_dark_mode_pair_below_aa(project):
    set_config(project, **{"branding.dark.link": "#3a4a66"})
    result = run_cli(project, "lint")
    assert result.returncode == 1
    assert "branding.dark.link: brand-contrast: dark.link on dark.background" in result.stderr


def test_a_colour_that_is_not_hex_names_its_key(project):
    set_config(project, **{"branding.accent": "teal"})
    result = run_cli(project, "validate")
    assert result.returncode == 1
    assert "branding.accent: 'teal': write a colour as #rrggbb" in result.stderr


def test_a_project_template_overrides_the_packaged_one_by_name(project):
    (project / "templates").mkdir(exist_ok=True)
    (project / "templates" / "organisation.html").write_text('<p class="ours">Our own footer</p>\n')
    run_cli(project, "run", "--no-send", check=True)
    home = lxml_html.fromstring((project / "public" / "index.html").read_text())
    assert home.xpath('//p[@class="ours"]/text()') == ["Our own footer"]
    assert "About multiple sclerosis" not in home.text_content()
    assert home.xpath("//h1/text()") == ["National MS Society News"]  # index.html itself is still the package's


def test_the_default_templates_are_package_data():
    templates = resources.files("pipeline") / "templates"
    assert all((templates / name).is_file() for name in ("digest.html", "digest.txt", "index.html", "archive.html",
                                                          "organisation.html", "digest.css", "icons/x.png"))

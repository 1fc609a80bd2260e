"""The digest and the feeds in real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import os
import threading
import urllib.request
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe

from pipeline.colour import contrast, luminance, parse_colour
from pipeline.service.browser import VIEWS, View, chromium, open_page, show_digest
from pipeline.service.preview import make_app, make_preview_server

from .conftest import SECRET, make_project, run_cli, set_config


@pytest.fixture(scope="module")
def browser():
    with chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """One built project for the module: an edition sent to one subscriber, so the archive has a page."""
    project = make_project(tmp_path_factory.mktemp("browser") / "site")
    env = {**os.environ, "PIPELINE_SECRET": SECRET}
    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True, env=env)
    run_cli(project, "run", check=True, env=env)
    (sent,) = (project / "outbox").glob("*/*.eml")
    html = message_from_bytes(sent.read_bytes(), policy=policy.default).get_body(("html",)).get_content()
    (project / "public" / SENT).write_text(html, encoding="utf-8")  # beside the images it shows
    return project


SENT = "sent-email.html"  # the HTML part of the message the subscriber got, as sent


@pytest.fixture
def built(project):
    run_cli(project, "run", "--no-send", check=True)
    return project / "public"


# Every element that shows text of its own, with its colour and the first opaque background behind it.
TEXT_PAIRS = """() => {
  const opaque = el => { for (; el; el = el.parentElement) {
      const bg = getComputedStyle(el).backgroundColor;
      if (bg && !/rgba\\(.*,\\s*0\\)$/.test(bg) && bg !== 'transparent') return bg; }
    return 'rgb(255, 255, 255)'; };
  const pairs = [];
  for (const el of document.body.querySelectorAll('*')) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (!own || box.width === 0 || box.height === 0 || style.visibility === 'hidden' || el.closest('[aria-hidden=true]')) continue;
    pairs.push({text: [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim().slice(0, 40),
                tag: el.tagName, color: style.color, background: opaque(el)});
  }
  return pairs;
}"""

LAYOUT = """() => {
  const c = document.querySelector('.container').getBoundingClientRect();
  const images = [...document.images].map(i => i.getBoundingClientRect());
  const story = document.querySelector('img.item-image').getBoundingClientRect();
  return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth, left: c.left, width: c.width,
          text: document.querySelector('.item-summary').getBoundingClientRect().width,
          imgRight: Math.max(...images.map(r => r.right)), storyImage: [story.width, story.height]};
}"""

# Outlook.com / the Outlook apps in dark mode mark the elements they recolour; our [data-ogs*] rules answer.
OUTLOOK_DARK = "() => { for (const el of [document.body, ...document.body.querySelectorAll('*')]) { el.setAttribute('data-ogsc', ''); el.setAttribute('data-ogsb', ''); } }"

WIDTHS = [320, 375, 600, 1024]
SCHEMES = ["light", "dark", "outlook-dark"]
VARIANTS = ["as-sent", "styles-stripped", "images-blocked"]


def _show(browser, site: Path, width: int, scheme: str, variant: str, name: str = SENT):
    view = View(f"{width}-{scheme}-{variant}", width, 800, "dark" if scheme == "dark" else "light",
                images=variant != "images-blocked", styles=variant != "styles-stripped")
    page = open_page(browser, view)
    show_digest(page, site / "public" / name, view)
    if scheme == "outlook-dark":
        page.evaluate(OUTLOOK_DARK)
    return page


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS)
def test_the_digest_fits_and_every_text_reads_at_4_5_to_1(browser, site, width, scheme, variant):
    page = _show(browser, site, width, scheme, variant)
    try:
        box = page.evaluate(LAYOUT)
        pairs = page.evaluate(TEXT_PAIRS)
    finally:
        page.context.close()
    assert box["scroll"] <= width, box  # no horizontal scrolling
    assert box["width"] == min(width, 600), box  # below 600 px the column fills the viewport
    assert abs(box["left"] - (width - box["width"]) / 2) <= 1, box  # above, it is centred
    assert box["text"] >= box["width"] - 48, box  # text runs nearly edge to edge: 24 px padding at most
    assert box["imgRight"] <= width, box
    story_width, story_height = box["storyImage"]
    assert abs(story_height - story_width * 630 / 1200) <= 2, box  # the 1200x630 photo keeps its shape, even blocked
    texts = [pair["text"] for pair in pairs]  # every element with text, not a sample: buttons to footer
    assert texts.count("Read the full story") == 4 and "Unsubscribe" in texts and len(texts) > 30
    low = [(p["text"], p["color"], p["background"], round(contrast(parse_colour(p["color"]), parse_colour(p["background"])), 2))
           for p in pairs if contrast(parse_colour(p["color"]), parse_colour(p["background"])) < 4.5]
    assert low == []


def test_dark_mode_really_switches_to_a_dark_palette(browser, site):
    colours = "() => [getComputedStyle(document.querySelector('.container')).backgroundColor, getComputedStyle(document.querySelector('.item-summary')).color]"
    light, dark, outlook = (_show(browser, site, 375, scheme, "as-sent") for scheme in SCHEMES)
    try:
        (light_bg, light_text), (dark_bg, dark_text), (outlook_bg, outlook_text) = (
            page.evaluate(colours) for page in (light, dark, outlook))
    finally:
        for page in (light, dark, outlook):
            page.context.close()
    assert luminance(parse_colour(light_bg)) > 0.9 and luminance(parse_colour(dark_bg)) < 0.05
    assert (dark_bg, dark_text) == (outlook_bg, outlook_text) != (light_bg, light_text)


@pytest.fixture(scope="module")
def logoless_site(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("logoless") / "site")
    set_config(project, **{"site.logo": None})
    run_cli(project, "run", "--no-send", check=True)
    return project


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_masthead_without_a_logo_reads_at_4_5_to_1(browser, logoless_site, scheme):
    page = _show(browser, logoless_site, 375, scheme, "as-sent", "digest.html")
    try:
        (title,) = [p for p in page.evaluate(TEXT_PAIRS) if p["text"] == "National MS Society"]
    finally:
        page.context.close()
    assert contrast(parse_colour(title["color"]), parse_colour(title["background"])) >= 4.5, title


def test_the_published_images_are_shown(browser, site):
    page = _show(browser, site, 600, "light", "as-sent")
    try:
        loaded = page.evaluate("() => [...document.images].map(i => [i.naturalWidth, i.naturalHeight])")
    finally:
        page.context.close()
    assert sorted(loaded) == [[48, 48]] * 4 + [[200, 60], [1200, 630]]  # icons, logo, story photo


AXE_TAGS = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}


def _axe_violations(browser, url: str, scheme: str) -> list[str]:
    page = open_page(browser, View("axe", 1024, 900, scheme))
    try:
        page.goto(url)
        result = Axe().run(page, options=AXE_TAGS)
    finally:
        page.context.close()
    return [f"{v['id']}: {[n['target'] for n in v['nodes']]}" for v in result.response["violations"]]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("page_name", [SENT, "digest.html", "archive/index.html", "archive/EDITION.html", "index.html"])
def test_axe_finds_no_wcag_2_1_aa_violations(browser, site, page_name, scheme):
    if page_name == "archive/EDITION.html":
        (page_name,) = [f"archive/{p.name}" for p in (site / "public" / "archive").glob("*.html") if p.name != "index.html"]
    assert _axe_violations(browser, (site / "public" / page_name).as_uri(), scheme) == []


def test_preview_writes_the_same_screenshots_for_a_person(project, tmp_path):
    result = run_cli(project, "preview", "--screenshots", str(tmp_path / "shots"), check=True, timeout=180)
    names = sorted(p.name for p in (tmp_path / "shots").iterdir())
    assert names == sorted(f"digest-{view.name}.png" for view in VIEWS)
    assert {"digest-images-off-375.png", "digest-no-styles-375.png"} <= set(names)
    assert result.stdout.count("wrote") == len(VIEWS)


@pytest.fixture
def preview(project):
    from pipeline.config import load_config

    server = make_preview_server(load_config(project / "config.yaml"), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("feed", ["rss.xml", "atom.xml"])
def test_feeds_read_well_in_a_browser_through_their_stylesheet(browser, preview, feed):
    urllib.request.urlopen(preview + "/", timeout=30).read()  # builds the outputs
    page = open_page(browser, View("feed", 1024, 900))
    page.goto(f"{preview}/{feed}")
    text = page.inner_text("body")
    page.context.close()
    assert "This is a web feed" in text and f"https://www.nationalmssociety.org/news-feed/{feed}" in text
    for title in ("International Mesenchymal Stem Cell Trial Finds No Effect on Inflammation in Active MS",
                  "MS Navigators Are Here to Help"):
        assert title in text


def test_preview_index_links_everything_and_rebuilds_without_sending(project, preview, secret):
    run_cli(project, "subscribers", "add", "ann@example.org", "--confirmed", check=True)
    page = urllib.request.urlopen(preview + "/", timeout=30).read().decode()
    for link in ("/digest.html", "/digest.txt", "/rss.xml", "/atom.xml", "/feed.json", "/archive/"):
        assert f'href="{link}"' in page
    assert urllib.request.urlopen(preview + "/digest.txt", timeout=10).read().startswith(b"NATIONAL MS SOCIETY NEWS")
    assert not (project / "outbox").exists()  # a subscriber exists, yet nothing was sent
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(preview + "/../config.yaml", timeout=10)
    assert caught.value.code == 404


def test_preview_app_refuses_paths_outside_the_output(config):
    calls = []
    app = make_app(config, rebuild=lambda: calls.append(1))
    statuses = []
    body = app({"PATH_INFO": "/../../etc/passwd"}, lambda status, headers: statuses.append(status))
    assert statuses == ["404 Not Found"] and b"".join(body) == b"not found" and calls == []

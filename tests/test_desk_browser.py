"""The weekly job on the desk in real headless Chromium, against `serve-web`'s real server (waitress on a loopback
port), the real state database and an SMTP server on loopback; axe-core on every page; keyboard only.

The walk through the weekly job starts the desk as the docs tell an operator to: `pipeline desk add-user` and
`pipeline serve-web`, each a process of its own; the other tests serve the same app from this process."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import feedparser
import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from PIL import Image
from playwright.sync_api import expect

from pipeline.config import Config
from pipeline.desk.accounts import add_user
from pipeline.service.browser import View, chromium, open_page, serve_images_from
from pipeline.service.web import make_web_server
from pipeline.sources.local import read_item
from pipeline.state.storage import Storage
from pipeline.usecases import open_storage

from .conftest import add_subscribers, run_cli, use_smtp, write_image, write_item
from .desk_helpers import ADMIN, EDITOR, PASSWORD, desk_config
from .smtp_sink import RecordingHandler, SmtpSink, free_port

# The desk's screenshots in docs/images come from this walk through the weekly job, but a test run
# never writes into the working tree: `DESK_SCREENSHOTS=docs/images pytest tests/test_desk_browser.py`
# refreshes them; otherwise they go to a scratch folder.  Resolved now: each test runs in a folder of its own.
SCREENSHOTS = Path(os.environ.get("DESK_SCREENSHOTS") or Path(tempfile.gettempdir()) / "desk-screenshots").resolve()
TITLE = "A new wheelchair clinic opens in Denver"
FRAMES = {"The digest at phone width": "digest-phone", "The digest at phone width in dark mode": None,
          "The digest at desktop width": "digest-desktop"}  # each frame of the digest page, and its own shot
AXE_TAGS = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}


@dataclass
class Served:
    url: str
    project: Path
    config: Config
    storage: Storage
    mail: RecordingHandler


@pytest.fixture
def served(project: Path, secret: str) -> Iterator[Served]:
    """`serve-web` with the desk on, as `pipeline serve-web` runs it, two people and three subscribers."""
    with serving(project, RecordingHandler()) as site:
        yield site


@pytest.fixture
def holding(project: Path, secret: str) -> Iterator[tuple[Served, threading.Event]]:
    """The same, with an SMTP server that holds every message until the test opens the gate: a send that is
    in progress for as long as the test needs."""
    gate = threading.Event()
    try:
        with serving(project, RecordingHandler(gate=gate)) as site:
            yield site, gate
    finally:
        gate.set()  # nothing left waiting on it


@contextmanager
def serving(project: Path, handler: RecordingHandler) -> Iterator[Served]:
    with SmtpSink(handler) as sink:
        use_smtp(project, sink.port)
        config = desk_config(project)
        storage = open_storage(config)
        add_user(storage, ADMIN, "admin", PASSWORD)
        add_user(storage, EDITOR, "editor", PASSWORD)
        add_subscribers(config, 3)
        server = make_web_server(config, storage, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Served(f"http://127.0.0.1:{server.server_port}", project, config, storage, handler)
        finally:
            server.shutdown()
            storage.close()


PIPELINE = Path(sys.executable).parent / "pipeline"  # the console script, as installed with the suite


@pytest.fixture
def commanded(project: Path, secret: str, tmp_path: Path) -> Iterator[Served]:
    """The desk as an operator starts it, each command its own process in the project folder: the config's desk
    and relay (an SMTP server on loopback) turned on, three subscribers imported, then `pipeline desk add-user`
    with the password typed in twice (on its standard input) and `pipeline serve-web` on a free loopback port."""
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        use_smtp(project, sink.port)
        config = desk_config(project)
        readers = project / "readers.csv"
        readers.write_text("email,name\n" + "".join(f"reader0000{n}@example.org,Reader {n}\n" for n in range(3)))
        subprocess.run([str(PIPELINE), "subscribers", "import", readers.name, "--confirmed"], cwd=project,
                       check=True, capture_output=True, timeout=60)
        # A session of its own: no terminal to open, so the password prompt reads standard input.
        added = subprocess.run([str(PIPELINE), "desk", "add-user", ADMIN, "--role", "admin"], cwd=project,
                               input=f"{PASSWORD}\n{PASSWORD}\n", capture_output=True, text=True, timeout=60,
                               start_new_session=True)
        assert added.returncode == 0 and f"{ADMIN}: added as admin" in added.stdout, added.stderr
        port = free_port()
        log = tmp_path / "serve-web.log"
        with log.open("wb") as out:
            server = subprocess.Popen([str(PIPELINE), "serve-web", "--host", "127.0.0.1", "--port", str(port)],
                                      cwd=project, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        storage = open_storage(config)
        try:
            wait_for_port(port, server, log)
            yield Served(f"http://127.0.0.1:{port}", project, config, storage, handler)
        finally:
            server.terminate()
            server.wait(timeout=30)
            storage.close()


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    """Until something listens on the loopback port; the process exiting first fails the test with its output."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on 127.0.0.1:{port} after {timeout} s"
        try:  # waiting on the process, not sleeping: it returns at once if the server died
            process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"the server exited with status {process.returncode}:\n{log.read_text()[-3000:]}")


@pytest.fixture
def browser():
    with chromium() as instance:
        yield instance


def desk_page(browser, served: Served, width: int = 1280, height: int = 900, scheme: str = "light"):
    page = open_page(browser, View("desk", width, height, scheme))
    serve_images_from(page, served.config.path("output"))  # the site's images, as published
    return page


def sign_in(page, served: Served, email: str = ADMIN) -> None:
    page.goto(f"{served.url}/desk/")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="The weekly job").wait_for()


def shot(page, name: str, **options) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"desk-{name}.png"
    (page if "locator" not in options else options.pop("locator")).screenshot(path=str(path), **options)
    return path


DECODED = "() => Promise.all([...document.images].map(image => image.decode().catch(() => null)))"
PAINTED = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"


def frames_painted(page) -> None:
    """Wait until each frame of the page has loaded and decoded its images, then for the page to paint."""
    for frame in page.frames[1:]:
        frame.wait_for_load_state("load")
        frame.evaluate(DECODED)
    page.evaluate(PAINTED)


def page_shot(page, name: str) -> tuple[Path, dict[str, dict]]:
    """The whole page, frames and all, and where each frame is on it (by its title).  A full-page screenshot
    paints nothing below the viewport inside frames, so the viewport is made as tall as the page for the shot."""
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": page.evaluate("document.documentElement.scrollHeight")})
    try:
        frames_painted(page)
        path = shot(page, name)
        boxes = {frame.get_attribute("title"): frame.bounding_box() for frame in page.locator("iframe").all()}
    finally:
        page.set_viewport_size(size)
    return path, boxes


def frame_shot(page, title: str, name: str) -> Path:
    """One frame alone, scrolled into view and painted first."""
    frame = page.locator(f"iframe[title='{title}']")
    frame.scroll_into_view_if_needed()
    frames_painted(page)
    return shot(page, name, locator=frame)


def assert_painted(path: Path, box: dict | None = None, colours: int = 16) -> None:
    """The shot (or the box of it a frame covers) is painted across its width: each third has more than
    ``colours`` colours.  A blank frame has one or two, a half-painted one a white right side."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        if box is not None:
            rgb = rgb.crop((round(box["x"]), round(box["y"]), round(box["x"] + box["width"]),
                            round(box["y"] + box["height"])))
        width, height = rgb.size
        for third in range(3):
            part = rgb.crop((third * width // 3, 0, (third + 1) * width // 3, height))
            found = part.getcolors(colours + 1)  # None: more colours than that
            assert found is None, f"{path.name}: third {third + 1} of {box or 'the shot'} has {len(found)} colours"


def test_the_weekly_job_from_sign_in_to_one_recipients_history(browser, commanded, tmp_path):
    served = commanded
    photo = write_image(tmp_path / "clinic.jpg", 1200, 630, "#2f6f4f")
    page = desk_page(browser, served)
    page.goto(f"{served.url}/desk/")
    shot(page, "sign-in")
    sign_in(page, served)

    page.get_by_role("link", name="Write a story").click()
    page.get_by_label("File name (slug)").fill("wheelchair-clinic-denver")
    page.get_by_label("Title").fill(TITLE)
    page.get_by_label("Summary (optional)").fill("Free fittings and repairs for people with MS, every Monday.")
    page.get_by_label("Tags (optional)").fill("programs and services, living with ms")
    page.get_by_label("Image (optional)").set_input_files(str(photo))
    page.get_by_label("Image description (alt text)").fill("The clinic's bright waiting room")
    page.get_by_label("Story (Markdown)").fill("The clinic opens on **Monday** at 9am.\n\nCall to book a fitting.\n")
    page.locator("#live-preview strong").get_by_text("Monday").wait_for()  # the live preview (JavaScript)
    page.get_by_label("Published: in the feeds and the next digest").check()
    shot(page, "story", full_page=True)
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Saved content/wheelchair-clinic-denver.md.").wait_for()

    item = read_item(served.project / "content" / "wheelchair-clinic-denver.md", served.config)
    assert (item.title, item.image.width, item.image.alt) == (TITLE, 1200, "The clinic's bright waiting room")
    feed = feedparser.parse((served.config.path("output") / "atom.xml").read_bytes())
    assert feed.entries[0].title == TITLE

    page.get_by_role("link", name="Next digest").click()
    assert page.locator("#subject").inner_text() == f"National MS Society News: {TITLE}"
    for title in FRAMES:
        page.frame_locator(f"iframe[title='{title}']").get_by_role("heading", name=TITLE).wait_for()
    whole, boxes = page_shot(page, "digest")
    assert set(boxes) == set(FRAMES)
    for box in boxes.values():
        assert_painted(whole, box)
    for title, name in FRAMES.items():
        if name:
            assert_painted(frame_shot(page, title, name))
    page.goto(page.url)  # afresh: the element shots left it scrolled, and a reload would restore that

    page.get_by_role("button", name=f"Send a test to me ({ADMIN})").click()
    page.get_by_text(f"A test message is on its way to {ADMIN}").wait_for()
    assert served.mail.when_count(1).wait(30), "the test message did not arrive"
    test = served.mail.received[0]
    assert test.recipient == ADMIN and test.message["Subject"].strip() == f"[TEST] National MS Society News: {TITLE}"

    page.get_by_role("link", name="Send the edition…").click()
    assert page.locator("#recipient-count").inner_text() == "3"
    page.get_by_label(re.compile("I have looked at the preview")).check()
    shot(page, "send", full_page=True)
    page.get_by_role("button", name="Send the edition").click()
    page.get_by_text("Finished.").wait_for(timeout=60_000)  # the page's script updates it while it sends
    assert page.locator('td[data-status="sent"]').inner_text() == "3"
    shot(page, "progress")
    assert served.mail.when_count(4).wait(30)
    assert sorted(m.recipient for m in served.mail.received[1:]) == [f"reader0000{n}@example.org" for n in range(3)]

    page.get_by_role("link", name="The edition's report and recipient search").click()
    page.get_by_label("Email address").fill("reader00001@example.org")
    page.get_by_role("button", name="Look up").click()
    assert page.locator("#recipient tbody td").first.inner_text() == "sent"
    shot(page, "edition", full_page=True)

    page.get_by_role("navigation", name="Desk").get_by_role("link", name="Subscribers").click()
    page.get_by_label("Email address or name").fill("reader00001")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="reader00001@example.org").click()
    page.get_by_role("heading", name="reader00001@example.org").wait_for()
    consent = page.locator("h2:text-is('Consent history') + ul").inner_text()
    assert "subscribe via import; source: readers.csv; confirmed_by: operator flag --confirmed" in consent
    (edition,) = served.storage.list_editions()
    (row,) = page.locator("#deliveries tbody tr").all()
    assert row.locator("td").all_inner_texts()[:4] == [edition.id, f"National MS Society News: {TITLE}", "sent", "1"]
    shot(page, "subscriber", full_page=True)
    page.context.close()


def _focused(page) -> str:
    return page.evaluate("""() => { const e = document.activeElement; if (!e) return "";
        const label = e.labels && e.labels[0];
        return ((label && label.textContent) || (e.tagName === "INPUT" && e.type !== "text" && e.value) ||
                e.textContent || "").trim().replace(/\\s+/g, " "); }""")


def tab_to(page, name: str, limit: int = 80) -> None:
    """Press Tab until the focused element is called ``name`` (its label, value or text)."""
    page.wait_for_load_state()
    for _ in range(limit):
        page.keyboard.press("Tab")
        if _focused(page).startswith(name):
            return
    raise AssertionError(f"{name!r} is not reachable with the Tab key")


def test_the_weekly_job_can_be_done_with_the_keyboard_alone(browser, served):
    page = desk_page(browser, served)
    page.goto(f"{served.url}/desk/")
    tab_to(page, "Email address")
    page.keyboard.type(ADMIN)
    tab_to(page, "Password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="The weekly job").wait_for()

    tab_to(page, "Write a story")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Write a new story").wait_for()
    for label, text in (("File name (slug)", "keyboard-story"), ("Title", "Written without a mouse"),
                        ("Story (Markdown)", "Every step works from the keyboard.")):
        tab_to(page, label)
        page.keyboard.type(text)
    tab_to(page, "Draft")  # a radio group is one Tab stop; the arrow keys choose within it
    page.keyboard.press("ArrowDown")
    assert page.get_by_label("Published: in the feeds and the next digest").is_checked()
    tab_to(page, "Save")
    page.keyboard.press("Enter")
    page.get_by_text("Saved content/keyboard-story.md.").wait_for()

    tab_to(page, "Next digest")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="The next digest").wait_for()
    tab_to(page, "Send a test to me")
    page.keyboard.press("Enter")
    page.get_by_text("A test message is on its way").wait_for()
    tab_to(page, "Send the edition…")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Send the edition").wait_for()
    tab_to(page, "I have looked at the preview")
    page.keyboard.press("Space")
    tab_to(page, "Send the edition")
    page.keyboard.press("Enter")
    page.get_by_text("Finished.").wait_for(timeout=60_000)
    tab_to(page, "The edition's report")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="What happened to one recipient").wait_for()
    tab_to(page, "Email address")
    page.keyboard.type("reader00002@example.org")
    page.keyboard.press("Enter")
    page.locator("#recipient").wait_for()
    assert page.locator("#recipient tbody td").first.inner_text() == "sent"
    assert served.mail.when_count(4).wait(30)
    page.context.close()


def _serious(page) -> list[str]:
    result = Axe().run(page, options=AXE_TAGS)
    return [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}" for v in result.response["violations"]
            if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_or_critical_violations_on_any_desk_page(browser, served, scheme):
    run_cli(served.project, "send", check=True)  # one edition, so its pages exist
    (edition,) = served.storage.list_editions()
    write_item(served.project, "new-since", 'title: "New since the edition"\ndate: 2025-01-02T09:00:00+00:00')
    page = desk_page(browser, served, scheme=scheme)  # the send page has its send and schedule forms
    found = {}
    for path in ("/desk/login", "/desk/set-password?token=a-token-from-add-user"):
        page.goto(served.url + path)
        found[path] = _serious(page)
    sign_in(page, served)
    paths = ["/desk/", "/desk/stories", "/desk/stories/new", "/desk/stories/mesems-stem-cell-trial-results",
             "/desk/digest", "/desk/send", f"/desk/progress/{edition.id}", "/desk/editions",
             f"/desk/editions/{edition.id}?q=reader00001@example.org", "/desk/subscribers?q=reader",
             "/desk/subscribers/one?email=reader00001@example.org", "/desk/subscribers/add", "/desk/subscribers/import",
             "/desk/health", "/desk/audit", "/desk/no-such-page"]
    for path in paths:
        page.goto(served.url + path)
        found[path] = _serious(page)
    page.context.close()
    assert {path: problems for path, problems in found.items() if problems} == {}


def test_the_progress_page_updates_its_counts_in_place_and_passes_axe_while_the_edition_is_sending(browser, holding):
    served, gate = holding
    page = desk_page(browser, served)
    sign_in(page, served)
    page.goto(f"{served.url}/desk/send")
    page.get_by_label(re.compile("I have looked at the preview")).check()
    page.get_by_role("button", name="Send the edition").click()
    status = page.get_by_role("status")
    expect(status).to_have_text(re.compile(r"^Sending… 0 sent"))
    assert served.mail.data_started.wait(30), "the send never reached the SMTP server"
    assert _serious(page) == []  # audited mid-send: the page that polls, not the finished one
    expect(page.get_by_role("link", name="Refresh")).to_be_hidden()  # the script keeps the counts current
    page.evaluate("window.loadedOnce = true")  # gone if the page were reloaded

    gate.set()
    expect(status).to_have_text("Finished. 3 sent, 0 deferred, 0 failed.", timeout=30_000)
    expect(page.locator('td[data-status="sent"]')).to_have_text("3")
    assert page.evaluate("window.loadedOnce") is True
    page.context.close()


def test_without_javascript_the_progress_page_shows_the_counts_of_each_load(browser, holding):
    served, gate = holding
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, served)
    page.goto(f"{served.url}/desk/send")
    page.get_by_label(re.compile("I have looked at the preview")).check()
    page.get_by_role("button", name="Send the edition").click()
    assert served.mail.data_started.wait(30)
    expect(page.get_by_role("status")).to_have_text(re.compile(r"^Sending… 0 sent"))
    gate.set()
    assert served.mail.when_count(3).wait(30)
    deadline = time.monotonic() + 30
    while "Sending…" in page.get_by_role("status").inner_text():  # each press loads the counts of that moment
        assert time.monotonic() < deadline, "the send did not finish"
        page.get_by_role("link", name="Refresh").click()
    expect(page.get_by_role("status")).to_have_text("Finished. 3 sent, 0 deferred, 0 failed.")
    context.close()


def test_serve_web_answers_the_desk_and_the_unsubscribe_page_side_by_side(served):
    assert httpx.get(f"{served.url}/desk/login").status_code == 200
    assert httpx.get(f"{served.url}/unsubscribe").status_code == 200


def test_the_real_server_refuses_a_50_mb_upload_before_the_desk_reads_it(served):
    response = httpx.post(f"{served.url}/desk/stories/new", content=b"\0" * (50 * 1024 * 1024),
                          headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413

"""A reader signs up in real Chromium on the served site page, confirms from a real mailbox, and chooses topics."""

from __future__ import annotations

import re
import threading
from email import message_from_bytes, policy

import pytest

from pipeline.config import load_config
from pipeline.service.browser import View, chromium, open_page
from pipeline.service.preview import make_preview_server
from pipeline.service.web import WebServer
from pipeline.usecases import open_storage

from .conftest import run_cli, set_config, use_smtp, write_item
from .smtp_sink import RecordingHandler, SmtpSink, free_port
from .test_signup import Clock, signup_app

TOPICS = {"research": {"description": "Research results", "tags": ["research", "clinical trials"]},
          "programs": {"description": "Programs and services", "tags": ["programs and services"]}}


def _serve(server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def _text(raw: bytes) -> str:
    return message_from_bytes(raw, policy=policy.default).get_body(("plain",)).get_content()


@pytest.fixture
def browser():
    with chromium() as instance:
        yield instance


def test_a_reader_signs_up_confirms_and_chooses_topics_in_a_real_browser(project, secret, browser):
    handler = RecordingHandler()
    site_port, web_port = free_port(), free_port()
    with SmtpSink(handler) as sink:
        use_smtp(project, sink.port)
        set_config(project, topics=TOPICS, **{"site.base_url": f"http://127.0.0.1:{site_port}/",
                                              "site.logo.url": f"http://127.0.0.1:{site_port}/logo.png",
                                              "signup.web_url": f"http://127.0.0.1:{web_port}/",
                                              "signup.check_deliverability": False})
        config = load_config(project / "config.yaml")
        run_cli(project, "subscribers", "add", "old@example.org", "--confirmed", check=True)
        run_cli(project, "run", "--force", check=True)  # the current news to the existing list (loopback: http)
        assert handler.count == 1
        clock = Clock()
        storage = open_storage(config)
        web = WebServer(signup_app(config, storage, clock), "127.0.0.1", web_port)
        site = make_preview_server(config, "127.0.0.1", site_port)
        _serve(web), _serve(site)
        try:
            page = open_page(browser, View("signup", 1024, 900))
            page.goto(f"http://127.0.0.1:{site_port}/index.html")
            page.get_by_label("Email address").fill("New.Reader@example.org")
            page.get_by_label("Name (optional)").fill("New Reader")
            page.get_by_label("Research").check()
            page.get_by_role("button", name="Subscribe").click()
            page.wait_for_url(f"http://127.0.0.1:{web_port}/subscribe")
            assert page.get_by_role("heading").inner_text() == "One more step"  # the static form had no stamp
            assert page.get_by_label("Email address").input_value() == "New.Reader@example.org"
            clock.advance(seconds=5)
            page.get_by_role("button", name="Subscribe").click()
            page.get_by_text("we have sent it an email with a link to confirm").wait_for()
            assert storage.profile(email="new.reader@example.org").status == "pending"

            assert handler.when_count(2).wait(timeout=30), "no confirmation mail arrived"
            confirmation = handler.received[-1]
            assert confirmation.recipient == "new.reader@example.org"
            link = re.search(r"http://\S+/confirm\?token=\S+", _text(confirmation.raw)).group(0)
            page.goto(link)
            assert page.get_by_role("heading").inner_text() == "Confirm your subscription"
            assert storage.profile(email="new.reader@example.org").status == "pending"  # opening the link: nothing
            page.get_by_role("button", name="Confirm my subscription").click()
            page.get_by_role("heading", name="You are subscribed").wait_for()
            assert storage.profile(email="new.reader@example.org").status == "subscribed"

            write_item(project, "trial-news", 'title: "A new trial begins"\ndate: 2025-01-02T09:00:00+00:00\n'
                                              'tags: [research]')
            write_item(project, "navigator-news", 'title: "Navigators open a new line"\n'
                                                  'date: 2025-01-03T09:00:00+00:00\ntags: [programs and services]')
            run_cli(project, "run", "--force", check=True)  # http on loopback fails the https check
            (digest,) = handler.by_recipient()["new.reader@example.org"][-1:]
            body = " ".join(_text(digest.raw).split())
            assert "A new trial begins" in body and "Navigators open a new line" not in body

            preferences = re.search(r"Manage preferences: (\S+)", _text(digest.raw)).group(1)
            assert preferences.startswith(f"http://127.0.0.1:{web_port}/preferences?token=")
            page.goto(preferences)
            assert page.get_by_label("Research").is_checked()
            page.get_by_label("Research").uncheck()
            page.get_by_label("Programs").check()
            page.get_by_role("button", name="Save preferences").click()
            page.get_by_text("Your preferences are saved").wait_for()
            assert storage.profile(email="new.reader@example.org").topics == ("programs",)
            page.context.close()

            write_item(project, "more-trials", 'title: "Another trial result"\ndate: 2025-01-04T09:00:00+00:00\n'
                                               'tags: [research]')
            write_item(project, "more-navigators", 'title: "Navigators in every state"\n'
                                                   'date: 2025-01-05T09:00:00+00:00\ntags: [programs and services]')
            run_cli(project, "run", "--force", check=True)  # http on loopback fails the https check
            latest = handler.by_recipient()["new.reader@example.org"][-1]
            body = " ".join(_text(latest.raw).split())
            assert "Navigators in every state" in body and "Another trial result" not in body
            assert len(handler.by_recipient()["new.reader@example.org"]) == 3  # confirmation + two digests
        finally:
            web.shutdown(), site.shutdown()
            web.server_close(), site.server_close()
            storage.close()


def test_the_signup_confirm_and_preferences_pages_have_no_wcag_2_1_aa_violations(project, secret, browser):
    from axe_playwright_python.sync_playwright import Axe

    from pipeline.mail.signup_tokens import make_preferences_token

    set_config(project, topics=TOPICS, **{"signup.check_deliverability": False,
                                          "signup.blocked_domains": ["mailinator.com"]})
    config = load_config(project / "config.yaml")
    clock = Clock()
    storage = open_storage(config)
    _, profile = storage.operator_add("reader@example.org", None, "research", confirmed=True, now=clock.now)
    web = WebServer(signup_app(config, storage, clock), "127.0.0.1", 0)
    _serve(web)
    base = f"http://127.0.0.1:{web.server_port}"
    token = make_preferences_token(secret.encode(), profile.id, clock.now.replace(year=clock.now.year + 1))
    found: dict[str, list[str]] = {}
    try:
        page = open_page(browser, View("axe", 1024, 900))

        def check(name: str) -> None:
            result = Axe().run(page, options={"runOnly": {"type": "tag",
                                                          "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}})
            found[name] = [f"{v['id']}: {[n['target'] for n in v['nodes']]}" for v in result.response["violations"]]

        page.goto(base + "/subscribe")
        check("form")
        page.get_by_label("Email address").fill("someone@mailinator.com")
        clock.advance(seconds=5)
        page.get_by_role("button", name="Subscribe").click()
        page.get_by_role("alert").wait_for()
        assert page.get_by_label("Email address").get_attribute("aria-invalid") == "true"
        check("form with an error")
        page.goto(base + "/confirm?token=nothing")
        check("invalid confirmation link")
        page.goto(f"{base}/preferences?token={token}")
        assert page.get_by_label("Research").is_checked()
        check("preferences")
        page.context.close()
    finally:
        web.shutdown()
        web.server_close()
        storage.close()
    assert found == {"form": [], "form with an error": [], "invalid confirmation link": [], "preferences": []}

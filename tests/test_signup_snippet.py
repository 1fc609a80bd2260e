"""`pipeline signup-snippet`: a form pasted into another website signs a reader up through the web app, in
real Chromium, with no WCAG 2.1 AA violation, and only from an origin the app accepts."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.config import load_config
from pipeline.service.browser import View, chromium, open_page
from pipeline.service.web import WebServer
from pipeline.usecases import open_storage

from .conftest import run_cli, set_config, use_smtp
from .smtp_sink import RecordingHandler, SmtpSink
from .test_signup import Clock, signup_app

AXE_TAGS = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}


class _OnePage(BaseHTTPRequestHandler):
    """The organisation's own website: one page with the snippet pasted in."""

    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def _website() -> ThreadingHTTPServer:
    """The organisation's website on a loopback port; its page is set once the snippet is made."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Page", (_OnePage,), {}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def browser():
    with chromium() as instance:
        yield instance


def _configure(project, web_port: int, website_port: int) -> None:
    set_config(project, **{"signup.web_url": f"http://127.0.0.1:{web_port}/",
                           "signup.embed_origins": [f"http://127.0.0.1:{website_port}"],
                           "signup.check_deliverability": False})


def test_the_pasted_form_signs_a_reader_up_through_the_web_app(project, secret, browser):
    from axe_playwright_python.sync_playwright import Axe

    from .smtp_sink import free_port

    web_port = free_port()
    handler = RecordingHandler()
    website = _website()
    with SmtpSink(handler) as sink:
        use_smtp(project, sink.port)
        _configure(project, web_port, website.server_port)
        snippet = run_cli(project, "signup-snippet", "--origin", f"http://127.0.0.1:{website.server_port}",
                          check=True)
        assert snippet.stderr.count("Warning") == 0
        website.RequestHandlerClass.body = _website_body(snippet.stdout)
        config = load_config(project / "config.yaml")
        clock = Clock()
        storage = open_storage(config)
        web = WebServer(signup_app(config, storage, clock), "127.0.0.1", web_port)
        threading.Thread(target=web.serve_forever, daemon=True).start()
        try:
            page = open_page(browser, View("snippet", 1024, 900))
            page.goto(f"http://127.0.0.1:{website.server_port}/")
            result = Axe().run(page, options=AXE_TAGS)
            assert [v["id"] for v in result.response["violations"]] == []
            page.get_by_label("Email address").fill("neighbour@example.org")
            page.get_by_role("button", name="Subscribe").click()
            page.wait_for_url(f"http://127.0.0.1:{web_port}/subscribe")
            assert page.get_by_role("heading").inner_text() == "One more step"  # a pasted form has no stamp
            clock.advance(seconds=5)
            page.get_by_role("button", name="Subscribe").click()
            page.get_by_text("we have sent it an email with a link to confirm").wait_for()
            assert storage.profile(email="neighbour@example.org").status == "pending"
            assert handler.when_count(1).wait(timeout=30), "no confirmation mail arrived"
            assert handler.received[0].recipient == "neighbour@example.org"
        finally:
            web.shutdown(), website.shutdown()
            web.server_close(), website.server_close()
            storage.close()


def _website_body(snippet: str) -> bytes:
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Riverside Food Bank</title></head>'
            f'<body><main><h1>Riverside Food Bank</h1><p>We share food in Riverside.</p>{snippet}</main></body>'
            "</html>").encode()


def test_a_page_on_an_origin_the_app_refuses_is_warned_about_and_refused(project, secret, browser):
    from .smtp_sink import free_port

    web_port = free_port()
    website = _website()
    _configure(project, web_port, website.server_port - 1)  # another origin is the embedding one
    snippet = run_cli(project, "signup-snippet", "--origin", f"http://127.0.0.1:{website.server_port}", check=True)
    assert (f"Warning: http://127.0.0.1:{website.server_port} is not allowed to post to "
            f"http://127.0.0.1:{web_port}/subscribe: add it to signup.embed_origins") in snippet.stderr
    website.RequestHandlerClass.body = _website_body(snippet.stdout)
    config = load_config(project / "config.yaml")
    storage = open_storage(config)
    web = WebServer(signup_app(config, storage, Clock()), "127.0.0.1", web_port)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        page = open_page(browser, View("snippet", 1024, 900))
        page.goto(f"http://127.0.0.1:{website.server_port}/")
        page.get_by_label("Email address").fill("neighbour@example.org")
        with page.expect_response(f"http://127.0.0.1:{web_port}/subscribe") as answer:
            page.get_by_role("button", name="Subscribe").click()
        assert answer.value.status == 403
        assert storage.profile(email="neighbour@example.org") is None
    finally:
        web.shutdown(), website.shutdown()
        web.server_close(), website.server_close()
        storage.close()


def test_the_snippet_says_which_origins_may_post_it(project):
    set_config(project, **{"signup.embed_origins": ["https://www.example.org"]})
    result = run_cli(project, "signup-snippet", check=True)
    assert "https://www.nationalmssociety.org, https://www.example.org" in result.stdout
    assert 'action="https://www.nationalmssociety.org/news-feed/subscribe"' in result.stdout
    assert result.stderr == ""

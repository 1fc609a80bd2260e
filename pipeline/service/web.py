"""One-click unsubscribe (RFC 8058) as a small WSGI app, servable by any WSGI server.

GET only shows a confirmation page: mail security scanners follow every link in a
message, and a GET that unsubscribed would unsubscribe people who never asked.
POST with ``List-Unsubscribe=One-Click`` (what Gmail and Yahoo send) unsubscribes.
"""

from __future__ import annotations

import logging
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qs, urlencode
from wsgiref.simple_server import WSGIRequestHandler, make_server

from ..config import Config
from ..environment import signing_secret
from ..publish.digest import template_environment
from ..mail.tokens import read_token
from ..state.storage import Storage

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
UNSUBSCRIBE_PATH = "/unsubscribe"


def _one_click(environ) -> bool:
    """True when the POST body carries List-Unsubscribe=One-Click (urlencoded or multipart)."""
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_BODY)
    except ValueError:
        return False
    body = environ["wsgi.input"].read(length) if length else b""
    content_type = environ.get("CONTENT_TYPE", "")
    if content_type.startswith("multipart/form-data"):
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "List-Unsubscribe":
                return part.get_content().strip() == "One-Click"
        return False
    values = parse_qs(body.decode("latin-1"))
    return values.get("List-Unsubscribe") == ["One-Click"]


def make_app(config: Config, storage: Storage):
    delivery = config.require_delivery()
    secret = signing_secret(delivery.secret_env, config.path("state"))
    env = template_environment(config.path("templates"))

    def page(start_response, status: str, **context):
        body = env.get_template("unsubscribe.html").render(
            site=config.site, organisation=config.organisation, mailto=delivery.unsubscribe_mailto, **context)
        data = body.encode("utf-8")
        start_response(status, [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data))),
                                ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                                ("Referrer-Policy", "no-referrer")])
        return [data]

    from .webhooks import WEBHOOK_PREFIX, make_webhook_app

    webhooks = make_webhook_app(config, storage)  # relay bounce/complaint webhooks (issue 14)

    def unsubscribe_app(environ, start_response):
        if environ.get("PATH_INFO", "").startswith(WEBHOOK_PREFIX):
            return webhooks(environ, start_response)
        if environ.get("PATH_INFO", "") != UNSUBSCRIBE_PATH:
            return page(start_response, "404 Not Found", state="error", heading="Not found", message="No such page.")
        method = environ.get("REQUEST_METHOD", "GET")
        token = parse_qs(environ.get("QUERY_STRING", "")).get("token", [""])[0]
        if method in ("GET", "HEAD") and not token:
            return page(start_response, "200 OK", state="info", heading="Unsubscribe")
        email = read_token(secret, token) if token else None
        if email is None:
            return page(start_response, "400 Bad Request", state="error", heading="Invalid link",
                        message="This unsubscribe link is not valid. Please use the link from your email.")
        if method in ("GET", "HEAD"):
            action = f"{UNSUBSCRIBE_PATH}?{urlencode({'token': token})}"
            return page(start_response, "200 OK", state="confirm", heading="Unsubscribe", email=email, action=action)
        if method != "POST":
            return page(start_response, "405 Method Not Allowed", state="error", heading="Not allowed",
                        message="Use the button on the unsubscribe page.")
        if not _one_click(environ):
            return page(start_response, "400 Bad Request", state="error", heading="Invalid request",
                        message="The request did not ask to unsubscribe.")
        changed = storage.unsubscribe(email)
        log.info("one-click unsubscribe%s", "" if changed else " (already unsubscribed)")
        return page(start_response, "200 OK", state="done", heading="You are unsubscribed", email=email)

    return unsubscribe_app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        # Request lines carry tokens; keep them out of the logs.
        log.debug("%s %s", self.command, self.path.split("?", 1)[0])


def make_web_server(config: Config, storage: Storage, host: str = "127.0.0.1", port: int = 8025):
    server = make_server(host, port, make_app(config, storage), handler_class=_QuietHandler)
    log.info("unsubscribe endpoint on http://%s:%d%s", host, server.server_port, UNSUBSCRIBE_PATH)
    return server

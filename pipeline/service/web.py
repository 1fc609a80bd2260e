"""The web app: one-click unsubscribe (RFC 8058) and the signup pages (``service/signup_pages.py``), as one
WSGI app, servable by any WSGI server.

GET only shows a confirmation page: mail security scanners follow every link in a
message, and a GET that unsubscribed would unsubscribe people who never asked.
POST with ``List-Unsubscribe=One-Click`` (what Gmail and Yahoo send) unsubscribes.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qs, urlencode

from markupsafe import escape

from ..clock import utcnow
from ..config import Config
from ..environment import previous_secrets, signing_secret
from ..mail.tokens import read_token
from ..publish.digest import environment_for
from ..state.storage import Storage
from ..state.unsubscribes import UnsubscribeGroups
from ..usecases.signup import Signups
from .http import MAX_BODY, BadBody, read_body
from .http_server import WebServer
from .notices import NoticeDrainer
from .signup_pages import PATHS as SIGNUP_PATHS
from .signup_pages import SignupPages
from .webhooks import WEBHOOK_PREFIX, make_webhook_app

log = logging.getLogger(__name__)

UNSUBSCRIBE_PATH = "/unsubscribe"


def _one_click(body: bytes, environ: dict) -> bool:
    """True when the POST body carries List-Unsubscribe=One-Click (urlencoded or multipart)."""
    content_type = environ.get("CONTENT_TYPE", "")
    if content_type.startswith("multipart/form-data"):
        head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "List-Unsubscribe":
                return part.get_content().strip() == "One-Click"
        return False
    values = parse_qs(body.decode("latin-1"))
    return values.get("List-Unsubscribe") == ["One-Click"]


def security_headers(config: Config, frame: bool = False) -> list[tuple[str, str]]:
    """Headers of every page: a strict CSP; only pages meant for embedding may be framed, and only by
    the origins in ``signup.embed_origins``."""
    ancestors = " ".join(["'self'", *config.signup.embed_origins]) if frame else "'none'"
    headers = [("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
                                           f"form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"),
               ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
               ("Cache-Control", "no-store")]
    if not frame:
        headers.append(("X-Frame-Options", "DENY"))
    elif not config.signup.embed_origins:
        headers.append(("X-Frame-Options", "SAMEORIGIN"))
    return headers


def _form_body(environ) -> dict[str, list[str]]:
    """The urlencoded POST body as fields (``read_body``'s limits; BadBody otherwise)."""
    try:
        return parse_qs(read_body(environ).decode("utf-8", "replace"), max_num_fields=50)
    except ValueError:  # more fields than any form of ours has
        raise BadBody("400 Bad Request") from None


def make_app(config: Config, storage: Storage, *, clock=None, transport=None,
             on_notice_queued: Callable[[], object] | None = None):
    """The whole web app: unsubscribe, and the signup pages (``service/signup_pages.py``).  A signup's mail is
    queued; ``on_notice_queued`` is told each time (by default it wakes a drainer thread of this app's own,
    ``service/notices.py``; a test may pass a function that drains the queue in place)."""

    delivery = config.require_delivery()
    secret = signing_secret(delivery.secret_env, config.path("state"))
    previous = previous_secrets(delivery.secret_env)
    env = environment_for(config)

    headers = {frame: security_headers(config, frame) for frame in (False, True)}  # built once
    templates: dict = {}  # loaded once: get_template would stat the file on every request (auto_reload)

    def respond(start_response, status: str, template: str, frame: bool = False, **context):
        if template not in templates:
            templates[template] = env.get_template(template)
        body = templates[template].render(
            site=config.site, organisation=config.organisation, mailto=delivery.unsubscribe_mailto, **context)
        data = body.encode("utf-8")
        start_response(status, [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data))),
                                *headers[frame]])
        return [data]

    def page(start_response, status: str, **context):
        return respond(start_response, status, "unsubscribe.html", **context)

    # The one-click answer is the same page for everyone but the address: rendered once around a marker,
    # then each request escapes its address into it (a third of a one-click POST's time was this render).
    marker = "pipeline-address-" + secrets.token_hex(8)
    done_parts = [part.encode("utf-8") for part in env.get_template("unsubscribe.html").render(
        site=config.site, organisation=config.organisation, mailto=delivery.unsubscribe_mailto, state="done",
        heading="You are unsubscribed", email=marker).split(marker)]

    def done_page(start_response, email: str):
        data = escape(email).encode("utf-8").join(done_parts)
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data))),
                                  *headers[False]])
        return [data]

    signups = Signups(config, storage, clock=clock or utcnow, transport=transport, secret=secret)
    # By default this app's own drainer thread sends what the form queues (``make_web_server`` passes its own).
    signups.on_queued = on_notice_queued or NoticeDrainer(signups.deliver_queued).wake
    signup_pages = SignupPages(config, signups, respond)

    webhooks = make_webhook_app(config, storage)  # relay bounce/complaint webhooks

    groups = UnsubscribeGroups(storage)  # concurrent one-click POSTs share one commit

    def unsubscribe_app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(WEBHOOK_PREFIX):
            return webhooks(environ, start_response)
        if path in SIGNUP_PATHS:
            try:
                fields = _form_body(environ) if environ.get("REQUEST_METHOD") == "POST" else {}
            except BadBody as exc:
                return page(start_response, exc.status, state="error", heading="Invalid request",
                            message="The request was refused.")
            return signup_pages(environ, start_response, path, fields)
        if path != UNSUBSCRIBE_PATH:
            return page(start_response, "404 Not Found", state="error", heading="Not found", message="No such page.")
        method = environ.get("REQUEST_METHOD", "GET")
        token = parse_qs(environ.get("QUERY_STRING", "")).get("token", [""])[0]
        if method in ("GET", "HEAD") and not token:
            return page(start_response, "200 OK", state="info", heading="Unsubscribe")
        email = read_token(secret, token, previous) if token else None
        if email is None:
            return page(start_response, "400 Bad Request", state="error", heading="Invalid link",
                        message="This unsubscribe link is not valid. Please use the link from your email.")
        if method in ("GET", "HEAD"):
            action = f"{UNSUBSCRIBE_PATH}?{urlencode({'token': token})}"
            return page(start_response, "200 OK", state="confirm", heading="Unsubscribe", email=email, action=action)
        if method != "POST":
            return page(start_response, "405 Method Not Allowed", state="error", heading="Not allowed",
                        message="Use the button on the unsubscribe page.")
        try:
            body = read_body(environ)
        except BadBody as exc:
            return page(start_response, exc.status, state="error", heading="Invalid request",
                        message="The request was refused.")
        if not _one_click(body, environ):
            return page(start_response, "400 Bad Request", state="error", heading="Invalid request",
                        message="The request did not ask to unsubscribe.")
        changed = groups.unsubscribe(email, "one-click", utcnow())  # recorded in the consent history
        log.info("one-click unsubscribe%s", "" if changed else " (already unsubscribed)")
        return done_page(start_response, email)

    from .proxies import behind_proxies  # the client, scheme and host your proxies forward (web.trusted_proxies)

    return behind_proxies(unsubscribe_app, config.web.trusted_proxies, config.web.proxy_headers)


def make_web_server(config: Config, storage: Storage, host: str = "127.0.0.1", port: int = 8025) -> WebServer:
    """The web app (unsubscribe, subscribe, confirm, preferences) on a production server."""
    from ..desk.web import mount  # the editor's desk at /desk/, when desk.enabled
    from .webhooks import MAX_BODY as WEBHOOK_MAX_BODY  # relays batch events; /unsubscribe keeps its 64 KB

    web = config.web
    drainer = NoticeDrainer(Signups(config, storage).deliver_queued)
    drainer.start()  # at once: mail queued before a restart goes out now
    app = mount(config, storage, make_app(config, storage, on_notice_queued=drainer.wake))
    server = WebServer(app, host, port, threads=web.threads, idle_timeout=web.idle_timeout,
                       header_timeout=web.header_timeout, connection_limit=web.connection_limit,
                       max_body=max(MAX_BODY, WEBHOOK_MAX_BODY), on_close=drainer.stop)
    log.info("web app (unsubscribe, subscribe, confirm, preferences) on http://%s:%d/", host, server.server_port)
    return server

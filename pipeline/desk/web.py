"""The desk's Flask app: pages over the use cases (``pipeline.usecases``) and the stories' files.
Mounted at /desk/ of ``serve-web`` (``mount``) or served alone (``make_desk_server``).  What every
page shares (the desk context, the audit log, the sign-in rule) is ``context.py``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wrappers import Response

from ..config import Config
from ..environment import signing_secret
from ..errors import PipelineError
from ..service.http_server import WebServer
from ..service.signup_pages import client_ip
from ..state.desk import DeskStore
from ..state.storage import Storage
from . import subscriber_views, views
from .accounts import Accounts, Clock, utcnow
from .context import SendJob
from .forms import ButtonForm
from .schedules import Ticker
from .sending import start_send
from .sessions import DeskSession, ServerSessions

log = logging.getLogger(__name__)

PREFIX = "/desk"
HERE = Path(__file__).parent
FORM_OVERHEAD = 64 * 1024  # the text fields around an upload


def client_address(config: Config) -> str:
    """The client's address for the sign-in throttle and the audit log: the same rule as the public app
    (forwarding headers believed only from ``web.trusted_proxies``, see ``service/proxies.py``)."""

    return (client_ip(request.environ, config.web.trusted_proxies) or "unknown")[:64]


def create_app(config: Config, storage: Storage, *, clock: Clock = utcnow, transport=None,
               ticker: bool = False) -> Flask:
    """The desk as a WSGI app (expects to be mounted at /desk); with ``ticker``, a thread starts scheduled sends."""

    settings = config.desk
    app = Flask("pipeline.desk", root_path=str(HERE), template_folder="templates", static_folder="static")
    state_secret = signing_secret(config.delivery.secret_env if config.delivery else "PIPELINE_SECRET",
                                  config.path("state"))
    app.config.update(
        SECRET_KEY=b"desk-csrf\0" + state_secret,  # Flask-WTF signs its tokens with it
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + FORM_OVERHEAD,
        SESSION_COOKIE_PATH=PREFIX, SESSION_COOKIE_SECURE=True, SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict", WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        WTF_CSRF_SSL_STRICT=True, PREFERRED_URL_SCHEME="https", TEMPLATES_AUTO_RELOAD=False,
    )
    store = DeskStore(storage)
    accounts = Accounts(config, storage, clock)
    app.session_interface = ServerSessions(store, clock, timedelta(minutes=settings.idle_minutes),
                                           timedelta(hours=settings.absolute_hours))
    CSRFProtect(app)
    from ..service.proxies import behind_proxies  # the client, scheme and host behind web.trusted_proxies

    app.wsgi_app = behind_proxies(app.wsgi_app, config.web.trusted_proxies, config.web.proxy_headers)  # type: ignore[method-assign]
    jobs: dict[str, SendJob] = {}
    app.extensions["desk"] = ext = {"config": config, "storage": storage, "store": store, "accounts": accounts,
                                    "clock": clock, "transport": transport, "jobs": jobs,
                                    "ticker_waiting": lambda: None}
    if ticker:

        running = Ticker(config, storage, clock, lambda edition_id, by: start_send(ext, edition_id, by))

        def wake() -> None:
            running.waiting = True

        ext["ticker_waiting"] = wake
        running.thread.start()

    @app.before_request
    def refuse_cross_site() -> None:
        """A state-changing request must come from a desk page: browsers say where a POST came from."""
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return
        site = request.headers.get("Sec-Fetch-Site", "")
        origin = request.headers.get("Origin")
        if site in ("cross-site", "same-site") or (origin is not None and urlsplit(origin).netloc != request.host):
            log.warning("desk: refused a cross-site %s to %s (from %s)", request.method, request.path, origin or site)
            abort(403, "This form was sent from another site.")

    @app.before_request
    def load_user() -> None:
        g.user = None
        sess = session
        if isinstance(sess, DeskSession) and sess.user_id is not None:
            g.user = store.user(user_id=sess.user_id)
        g.client = client_address(config)

    @app.after_request
    def headers(response):
        framed = request.endpoint == "digest_render"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' https: data:; "
            "script-src 'self'; connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors " + ("'self'" if framed else "'none'"))
        response.headers["X-Frame-Options"] = "SAMEORIGIN" if framed else "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        return response

    @app.errorhandler(CSRFError)
    def csrf_refused(error: CSRFError):
        log.warning("desk: refused a form without a valid CSRF token (%s)", error.description)
        if isinstance(session, DeskSession) and session.expired:  # a form left open past the session's end
            flash("Your session ended, so that form was not sent; sign in and do it again.")
            return redirect(url_for("login")), 302
        return render_template("error.html", heading="The form was refused",
                               message="This form has expired or did not come from your session. Go back, "
                                       "reload the page and try again."), 400

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_error):
        limit = settings.max_upload_bytes // 1000
        return render_template("error.html", heading="The upload is too large",
                               message=f"Files up to {limit:,} KB can be uploaded. Make the image smaller "
                                       "(a width of 1200 pixels is plenty) and try again."), 413

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return render_template("error.html", heading=error.name, message=error.description), error.code

    @app.context_processor
    def shared() -> dict[str, Any]:
        return {"user": g.get("user"), "site": config.site, "button": ButtonForm(formdata=None),
                "nav": NAV, "active": request.endpoint}

    views.register(app)
    subscriber_views.register(app)
    return app


NAV = [("home", "Desk"), ("stories", "Stories"), ("digest", "Next digest"), ("editions", "Editions"),
       ("subscribers", "Subscribers"), ("health", "Health"), ("audit", "Audit log")]


def mount(config: Config, storage: Storage, web_app):
    """``web_app`` with the desk at /desk/ (a path-prefix dispatch), when ``desk.enabled`` and not served alone."""
    if not config.desk.enabled or config.desk.host:
        return web_app

    log.info("the desk is at /desk/")
    return DispatcherMiddleware(web_app, {PREFIX: create_app(config, storage, ticker=True)})


def standalone(config: Config, storage: Storage, **kwargs):
    """The desk alone (still under /desk/, so its links and cookie path are the same either way)."""

    def elsewhere(environ, start_response):
        if environ.get("PATH_INFO", "") in ("", "/"):
            return Response("", 302, {"Location": f"{PREFIX}/"})(environ, start_response)
        return Response("Not found", 404, {"Content-Type": "text/plain"})(environ, start_response)

    return DispatcherMiddleware(elsewhere, {PREFIX: create_app(config, storage, **kwargs)})


def make_desk_server(config: Config, storage: Storage, host: str | None = None, port: int | None = None):
    """The desk alone on its own address (``desk.host``/``desk.port``), on waitress like the web app."""

    if not config.desk.enabled:
        raise PipelineError(f"{config.source_file}: desk.enabled: the desk is off; set it to true to serve it")
    web = config.web
    server = WebServer(standalone(config, storage, ticker=True), host or config.desk.host or "127.0.0.1",
                       config.desk.port if port is None else port, threads=web.threads,
                       idle_timeout=web.idle_timeout, header_timeout=web.header_timeout,
                       connection_limit=web.connection_limit)
    log.info("the desk on http://%s:%d/desk/", host or config.desk.host, server.server_port)
    return server

"""The signup pages of the web app: /subscribe, /confirm, /preferences.

Only translation lives here (request → ``pipeline.usecases.signup`` → page); every rule is in
``pipeline.usecases.signup``.  GETs show pages and change nothing (mail scanners follow
links); every change is a POST from a button.  Cross-site POSTs are refused unless
their Origin is the site's own or one listed in ``signup.embed_origins``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from urllib.parse import parse_qs, urlencode, urlsplit

from ..config import Config
from ..publish.signup_form import FormView, form_view
from ..state.storage import SUBSCRIBED, Profile
from ..urls import web_url
from ..usecases.signup import PAUSES, SignupForm, Signups
from .proxies import client_address

log = logging.getLogger(__name__)

PATHS = ("/subscribe", "/confirm", "/preferences")

StartResponse = Callable[..., object]


def client_ip(environ: dict, trusted_proxies: list[str]) -> str:
    """The client's address: REMOTE_ADDR as ``service/proxies.behind_proxies`` left it (the client your trusted
    proxies forwarded, never a header an untrusted peer wrote); resolved from X-Forwarded-For for an environ
    that did not pass through it."""

    return client_address(environ, trusted_proxies)


def allowed_origin(environ: dict, config: Config) -> bool:
    """A POST from a page of this app, the site, or a configured embedding origin (or a client sending no Origin).
    ``Origin: null`` (a sandboxed frame, a data: or file: page, a cross-site redirect) names no page we could
    trust and is refused, except with the browser's own ``Sec-Fetch-Site: same-origin``: our pages send
    ``Referrer-Policy: no-referrer``, under which a browser posts their forms with ``Origin: null``."""
    origin = environ.get("HTTP_ORIGIN")
    if not origin or origin == "null" and environ.get("HTTP_SEC_FETCH_SITE") == "same-origin":
        return True
    own = {f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}".lower()}
    for url in (web_url(config), config.site.base_url):
        parts = urlsplit(url)
        own.add(f"{parts.scheme}://{parts.netloc}".lower())
    return origin.lower() in own | set(config.signup.embed_origins)


class SignupPages:
    """The WSGI handlers; ``respond`` writes a page with the app's security headers."""

    def __init__(self, config: Config, signups: Signups, respond: Callable[..., Iterable[bytes]]):
        self.config, self.signups, self.respond = config, signups, respond

    def __call__(self, environ: dict, start_response: StartResponse, path: str, body: dict[str, list[str]]):
        method = environ.get("REQUEST_METHOD", "GET")
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if method not in ("GET", "HEAD", "POST"):
            return self._page(start_response, "405 Method Not Allowed", "error", "Not allowed",
                              message="Use the form on the page.")
        if method == "POST" and not allowed_origin(environ, self.config):
            log.info("refused a cross-site POST to %s", path)
            return self._page(start_response, "403 Forbidden", "error", "Not allowed",
                              message="This form can only be sent from our own pages.")
        if path == "/subscribe":
            return self.subscribe(environ, start_response, method, body)
        token = (body.get("token") or query.get("token") or [""])[0]
        if path == "/confirm":
            return self.confirm(start_response, method, token)
        return self.preferences(start_response, method, token, body)

    def _page(self, start_response, status: str, state: str, heading: str, *, frame: bool = False, **context):
        return self.respond(start_response, status, "signup.html", frame=frame, state=state, heading=heading,
                            **context)

    # -- /subscribe ----------------------------------------------------------------------------

    def subscribe(self, environ, start_response, method: str, body: dict[str, list[str]]):
        if method != "POST":
            form = _relative(form_view(self.config, stamp=self.signups.form_stamp()))
            return self._page(start_response, "200 OK", "form", f"Subscribe to {self.config.site.title}",
                              frame=True, form=form)

        def one(name: str) -> str:
            return (body.get(name) or [""])[0]

        submitted = SignupForm(email=one("email")[:320], name=one("name")[:300], topics=tuple(body.get("topics", [])),
                               stamp=one("stamp"), honeypot=one("website"),
                               client_ip=client_ip(environ, self.config.web.trusted_proxies))
        result = self.signups.subscribe(submitted)
        again = _relative(form_view(self.config, stamp=self.signups.form_stamp(), email=submitted.email,
                                    name=submitted.name, chosen=submitted.topics))
        if result.outcome == "accepted":
            return self._page(start_response, "200 OK", "check-inbox", "Check your inbox", frame=True)
        if result.outcome in ("again", "too-fast"):
            notice = ("Please check your details and press Subscribe once more." if result.outcome == "again"
                      else "That was quicker than a person types. Please check your details and press Subscribe.")
            return self._page(start_response, "200 OK" if result.outcome == "again" else "400 Bad Request", "form",
                              "One more step", frame=True, form=_replace(again, notice=notice))
        if result.outcome == "rate-limited":
            return self._page(start_response, "429 Too Many Requests", "error", "Please try again later",
                              frame=True, message=result.error)
        return self._page(start_response, "400 Bad Request", "form", f"Subscribe to {self.config.site.title}",
                          frame=True, form=_replace(again, error=result.error))

    # -- /confirm ------------------------------------------------------------------------------

    def confirm(self, start_response, method: str, token: str):
        if method != "POST":
            state = self.signups.check_confirmation(token)
            if state == "valid":
                return self._page(start_response, "200 OK", "confirm", "Confirm your subscription", token=token)
            return self._bad_confirmation(start_response, state)
        result = self.signups.confirm(token)
        if result.state == "confirmed":
            return self._page(start_response, "200 OK", "confirmed", "You are subscribed", email=result.email)
        return self._bad_confirmation(start_response, result.state)

    def _bad_confirmation(self, start_response, state: str):
        if state == "used":
            return self._page(start_response, "410 Gone", "error", "This link was already used",
                              message="This confirmation link has been used. If you confirmed, you are subscribed; "
                                      "you can sign up again with the form.")
        if state == "expired":
            return self._page(start_response, "410 Gone", "error", "This link has expired",
                              message="Confirmation links work for "
                                      f"{self.config.signup.confirm_hours:g} hours. Please sign up again with the "
                                      "form to get a new one.")
        return self._page(start_response, "400 Bad Request", "error", "Invalid link",
                          message="This confirmation link is not valid. Please use the link from your email.")

    # -- /preferences --------------------------------------------------------------------------

    def preferences(self, start_response, method: str, token: str, body: dict[str, list[str]]):
        if not token and method != "POST":
            return self._page(start_response, "200 OK", "form", "Manage your subscription",
                              form=_relative(form_view(self.config, stamp=self.signups.form_stamp(),
                                                       notice="To change your subscription, use the "
                                                              "“Manage preferences” link in any of our emails. "
                                                              "To subscribe, use this form.")))
        profile, problem = self.signups.preferences_of(token)
        if profile is None:
            heading = "This link has expired" if problem == "expired" else "Invalid link"
            return self._page(start_response, "410 Gone" if problem == "expired" else "400 Bad Request", "error",
                              heading, message="Please use the “Manage preferences” link in a recent email.")
        if method != "POST":
            return self._preferences_page(start_response, profile, token)
        action = (body.get("action") or ["save"])[0]
        if action == "unsubscribe":
            self.signups.unsubscribe(profile)
            return self._page(start_response, "200 OK", "unsubscribed", "You are unsubscribed", email=profile.email)
        if profile.status != SUBSCRIBED:
            return self._preferences_page(start_response, profile, token)
        updated = self.signups.update_preferences(profile, body.get("topics", []), (body.get("pause") or [""])[0])
        return self._preferences_page(start_response, updated, token, saved=True)

    def _preferences_page(self, start_response, profile: Profile, token: str, saved: bool = False):
        return self.respond(start_response, "200 OK", "preferences.html", frame=False, profile=profile,
                            action=f"preferences?{urlencode({'token': token})}", token=token, saved=saved,
                            topics=form_view(self.config).topics, pauses=list(PAUSES),
                            subscribed=profile.status == SUBSCRIBED)


def _replace(form: FormView, **values) -> FormView:

    return replace(form, **values)


def _relative(form: FormView) -> FormView:
    """Pages of the app post to themselves by a relative URL, so they work behind any path prefix."""
    return _replace(form, action="subscribe")

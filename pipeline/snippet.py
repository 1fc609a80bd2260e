"""``pipeline signup-snippet``: the sign-up form as HTML to paste into a page of your own website.

The form posts to the web app's ``/subscribe`` (``signup.web_url``). The app accepts a cross-site POST only
from its own origin, the site's (``site.base_url``) and ``signup.embed_origins``, so the snippet says which
origins work now and warns when the page it is meant for is not one of them. The pasted form carries no form
stamp (a static page cannot sign one); the app asks once more with a signed form, as for the site's pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from .config import Config
from .publish.digest import environment_for
from .publish.signup_form import form_view
from .urls import web_url


@dataclass(frozen=True)
class Snippet:
    html: str
    accepted_origins: list[str]
    warning: str | None  # the page's origin would be refused


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def accepted_origins(config: Config) -> list[str]:
    """The origins whose pages may post the form, as ``service.signup_pages.allowed_origin`` decides."""
    found = [_origin(web_url(config)), _origin(config.site.base_url), *config.signup.embed_origins]
    return list(dict.fromkeys(found))


def signup_snippet(config: Config, origin: str | None = None) -> Snippet:

    accepted = accepted_origins(config)
    warning = None
    if origin is not None and _origin(origin) not in accepted:
        warning = (f"{_origin(origin)} is not allowed to post to {web_url(config)}subscribe: add it to "
                   f"signup.embed_origins in {config.source_file.name} (now: {', '.join(accepted)})")
    html = environment_for(config).get_template("signup_snippet.html").render(
        site=config.site, organisation=config.organisation, signup_form=form_view(config), accepted=accepted)
    return Snippet(html, accepted, warning)

"""The public URLs every stage links to: the web app's root and the generic unsubscribe page.

A leaf module (it imports only the config) so that publishing, mail and the signup use cases can all
link to the web app without importing each other.
"""

from __future__ import annotations

from urllib.parse import urljoin

from .config import Config


def unsubscribe_base(config: Config) -> str:
    """The unsubscribe page a token is appended to: ``digest.unsubscribe_url``, else the site's."""
    return config.digest.unsubscribe_url or config.site.url("unsubscribe")


def web_url(config: Config) -> str:
    """Where the web app answers: signup.web_url, else the folder of the unsubscribe URL."""
    if config.signup.web_url:
        return config.signup.web_url if config.signup.web_url.endswith("/") else config.signup.web_url + "/"
    return urljoin(unsubscribe_base(config), ".")

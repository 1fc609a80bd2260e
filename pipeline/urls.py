"""The public URLs every stage links to: the web app's root, the generic unsubscribe page, a story's page.

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


STORIES_FOLDER = "stories/"


def story_path(slug: str) -> str:
    """Where a story's page is, relative to the output folder: ``stories/<slug>/index.html``.

    Under one folder so that no slug can take the name of another output (``archive``, ``tags``,
    ``images``); a folder with an index so that the URL is ``.../stories/<slug>/``."""
    return f"{STORIES_FOLDER}{slug}/index.html"


def story_url(config: Config, slug: str) -> str:
    """The address of a story's page: the default link of a story whose file gives none."""
    return config.site.url(f"{STORIES_FOLDER}{slug}/")

"""The sign-up form's view model: what the form shows, the same on the site's static pages, in the web
app and in the snippet pasted into another website."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..urls import web_url


@dataclass(frozen=True)
class FormView:
    """What the signup form shows; the same include renders it on the site and in the app."""

    action: str
    consent: str
    topics: list[tuple[str, str, str]]  # name, label, description
    stamp: str = ""
    email: str = ""
    name: str = ""
    chosen: tuple[str, ...] = ()
    error: str = ""
    notice: str = ""


def form_view(config: Config, **values) -> FormView:
    topics = [(name, topic.label or name.replace("-", " ").capitalize(), topic.description)
              for name, topic in config.topics.items()]
    return FormView(web_url(config) + "subscribe", config.consent_line(), topics, **values)


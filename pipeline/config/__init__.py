"""Typed configuration loaded from ``config.yaml``.

Everything the templates show about the organisation lives here, not in template
text, so another organisation can use the pipeline by editing one file.
Relative paths are resolved against the folder holding the config file.  The
settings models are grouped by what they configure (``site``, ``delivery``,
``sources``, ``bounces``, ``web``, over ``base``); this module holds the whole
``Config`` and ``load_config``, and is where every caller imports them from.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ..branding import Branding
from ..errors import ConfigError
from ..yaml_keys import repeated_key
from .base import DEFAULT_CONFIG, Logging, Strict
from .bounces import (
    BouncePolicy,
    Bounces,
    Mailbox,
    MailgunWebhook,
    PostmarkWebhook,
    Receiver,
    SendgridWebhook,
    SesWebhook,
    Webhooks,
)
from .delivery import Delivery, Dkim, Smtp
from .site import (
    RETIRED_ORGANISATION_KEYS,
    AboutParagraph,
    DigestSettings,
    Feeds,
    Logo,
    Organisation,
    Paths,
    Site,
    Social,
    Topic,
    Topics,
)
from .sources import Fetch, Job, RemoteSource, Schedule
from .web import Desk, Signup, Web


class Config(Strict):
    site: Site
    """The site: title, where it is published, language, logo."""
    organisation: Organisation
    """Who publishes: the facts the footer and the home page show."""
    paths: Paths = Paths()
    """Folders, relative to the config file."""
    feeds: Feeds = Feeds()
    """What the RSS, Atom and JSON feeds carry."""
    digest: DigestSettings = DigestSettings()
    """The email digest: size, subject, intro, links, date shown."""
    delivery: Delivery | None = None
    """Sending the digest: sender, headers, transport, ledger (null: nothing is sent)."""
    schedule: Schedule = Schedule()
    """Scheduled jobs for `pipeline serve`, cron and systemd timers."""
    sources: list[RemoteSource] = Field(default_factory=list)
    """Remote feeds merged with the local content."""
    fetch: Fetch = Fetch()
    """How the remote sources are fetched."""
    logging: Logging = Logging()
    """Log level, format and file."""
    signup: Signup = Signup()
    """The signup form, double opt-in and its bot protection."""
    topics: dict[str, Topic] = Field(default_factory=dict, description="Topics readers choose; name -> tags.")
    bounces: Bounces = Bounces()
    """Bounces, complaints and the suppression list: VERP, mailbox, receiver, webhooks."""
    desk: Desk = Desk()
    """The editor's desk at /desk/ of the web app (docs/how-to/desk.md)."""
    web: Web = Web()
    """The public web app's server: connection limits, deadlines, trusted proxies."""
    branding: Branding = Branding()
    """Colours and fonts of the digest and the pages (docs/how-to/make-it-yours.md)."""

    # Set by load_config, not by the file.
    root: Path = Path(".")
    """Set when loading: the folder holding the config file (not a setting)."""
    source_file: Path = Path(DEFAULT_CONFIG)
    """Set when loading: the config file's path (not a setting)."""

    def path(self, which: Literal["content", "templates", "output", "state"]) -> Path:
        path = self.root / getattr(self.paths, which)
        if which == "output" and path.name not in ("", ".", ".."):  # a link to its live version: named, not followed
            return path.parent.resolve() / path.name
        return path.resolve()

    @model_validator(mode="after")
    def _unique_source_names(self) -> Config:
        names = [source.name for source in self.sources]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"sources: duplicate name {duplicates[0]!r}")
        return self

    @field_validator("topics")
    @classmethod
    def _topic_names(cls, value: dict[str, Topic]) -> dict[str, Topic]:
        for name in value:
            if not re.match(r"^[a-z0-9][a-z0-9_-]*$", name):
                raise ValueError(f"topic name {name!r}: use lower-case letters, digits, - and _")
        return value

    def resolve(self, path: Path) -> Path:
        return (self.root / path).resolve()

    def consent_line(self) -> str:
        """The consent wording the form shows and the consent record keeps, with the site's title."""
        return self.signup.consent_text.format(site_title=self.site.title)

    def require_delivery(self) -> Delivery:
        if self.delivery is None:
            raise ConfigError(f"{self.source_file}: delivery: field required to send email")
        return self.delivery



def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "missing":
        message = "field required"
    elif kind == "extra_forbidden":
        message = "unknown field"
    else:
        message = error["msg"]
        message = message.removeprefix("Value error, ")
        message = message[0].lower() + message[1:] if message else message
    return f"{where}: {message}" if where else message



def load_config(path: str | Path = DEFAULT_CONFIG) -> Config:
    """Read and validate the config; any problem raises ConfigError naming file and key."""
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such file (use --config PATH)") from None
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{shown}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    repeated = repeated_key(node)
    if repeated:
        raise ConfigError(f"{shown}:{repeated[1] + 1}: {repeated[0]}: given twice; keep one (the last would win "
                          "silently)")
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}: must be a mapping of settings")
    for reserved in ("root", "source_file"):
        if reserved in data:
            raise ConfigError(f"{shown}: {reserved}: unknown field")
    organisation = data.get("organisation")
    retired = [key for key in RETIRED_ORGANISATION_KEYS if isinstance(organisation, dict) and key in organisation]
    if retired:
        raise ConfigError(f"{shown}: organisation.{retired[0]}: no longer a setting; "
                          f"{RETIRED_ORGANISATION_KEYS[retired[0]]}")
    try:
        return Config(**data, root=path.resolve().parent, source_file=path)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"{shown}: {problems}") from None


__all__ = [
    "AboutParagraph",
    "BouncePolicy",
    "Bounces",
    "Config",
    "DEFAULT_CONFIG",
    "Delivery",
    "Desk",
    "DigestSettings",
    "Dkim",
    "Feeds",
    "Fetch",
    "Job",
    "Logging",
    "Logo",
    "Mailbox",
    "MailgunWebhook",
    "Organisation",
    "Paths",
    "PostmarkWebhook",
    "RETIRED_ORGANISATION_KEYS",
    "Receiver",
    "RemoteSource",
    "Schedule",
    "SendgridWebhook",
    "SesWebhook",
    "Signup",
    "Site",
    "Smtp",
    "Social",
    "Strict",
    "Topic",
    "Topics",
    "Web",
    "Webhooks",
    "load_config",
]

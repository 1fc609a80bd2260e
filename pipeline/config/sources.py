"""Remote sources, how they are fetched, and the schedule."""

from __future__ import annotations

import hashlib
import re
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from pydantic import Field, field_validator, model_validator

from .base import Strict, absolute_url, iana_timezone


class RemoteSource(Strict):
    name: str = Field(default="", description="Short name, shown in logs and `pipeline sources`; keep it stable "
                                              "(default: made from the URL's host and path).")
    url: str
    """The feed's URL: RSS 0.9x/1.0/2.0, Atom 0.3/1.0 or JSON Feed 1.x."""
    tags: list[str] = Field(default_factory=list, description="Keep only items with one of these tags.")
    max_items: int = Field(default=20, ge=1, le=1000)
    """Keep only the newest this many items of this source."""
    author: str | None = Field(default=None, description="Author for items that name none.")
    credit: str | None = Field(default=None,
                               description="How the outputs credit the source (default: the feed's title).")

    _url = field_validator("url")(absolute_url)

    @field_validator("name")
    @classmethod
    def _slug_name(cls, value: str) -> str:
        if value and not re.match(r"^[a-z0-9][a-z0-9_-]*$", value):
            raise ValueError("use lower-case letters, digits, - and _")
        return value

    @model_validator(mode="after")
    def _default_name(self) -> RemoteSource:
        if not self.name:
            parts = urlsplit(self.url)
            slug = re.sub(r"[^a-z0-9]+", "-", f"{parts.hostname or ''}{parts.path}".lower()).strip("-")
            if len(slug) > 60:  # cut, but keep names of similar long URLs apart
                digest = hashlib.sha1(self.url.encode("utf-8")).hexdigest()[:8]
                slug = f"{slug[:51].rstrip('-')}-{digest}"
            object.__setattr__(self, "name", slug or "source")
        return self



class Fetch(Strict):
    timeout: float = Field(default=15.0, gt=0, description="Seconds for the whole fetch of one source.")
    max_bytes: int = Field(default=5_000_000, gt=0, description="Largest (decompressed) feed accepted.")
    concurrency: int = Field(default=4, ge=1, le=32)
    """Sources fetched at once."""
    user_agent: str = "newsletter-pipeline/0.1 (+https://pypi.org/project/newsletter-pipeline/)"
    """User-Agent header sent with every fetch; name a contact URL."""






class Job(Strict):
    cron: str = Field(description='Five-field crontab expression, e.g. "0 9 * * mon".')
    timezone: str = Field(default="UTC", description="IANA timezone the expression is read in.")
    action: Literal["run", "feeds", "send", "retry", "bounces"] = Field(
        default="run", description="run: feeds, digest and sending; feeds: feeds and digest only, no email; "
                                   "send: a new edition if there is one, then whatever is due; retry: only "
                                   "messages already queued and due (deferred ones, interrupted sends); "
                                   "bounces: read the bounce mailbox.")
    misfire_grace_time: int | None = Field(default=None, ge=1, description="Overrides schedule.misfire_grace_time.")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return iana_timezone(value)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        """Checked on its own (the zone cannot make an expression valid), so the error names
        ``schedule.jobs.<name>.cron``."""
        try:
            CronTrigger.from_crontab(value, timezone=ZoneInfo("UTC"))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid crontab expression ({exc})") from None
        return value

    def trigger(self):
        try:
            return CronTrigger.from_crontab(self.cron, timezone=ZoneInfo(self.timezone))
        except ValueError as exc:
            raise ValueError(f"cron: {self.cron!r} is not a valid crontab expression ({exc})") from None



class Schedule(Strict):
    misfire_grace_time: int = Field(
        default=3600, ge=1, description="Seconds after a missed time within which one catch-up run still happens.")
    jobs: dict[str, Job] = Field(default_factory=dict)
    """Scheduled jobs by name, for `pipeline serve` and `pipeline run --job NAME`."""

    @field_validator("jobs")
    @classmethod
    def _job_names(cls, value: dict[str, Job]) -> dict[str, Job]:
        for name in value:
            if not re.match(r"^[a-z0-9][a-z0-9_-]*$", name):
                raise ValueError(f"job name {name!r}: use lower-case letters, digits, - and _")
        return value

"""What every use case shares: the state database, the items of a run, a run's context and its outcome."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..clock import utcnow
from ..config import Config
from ..delivery.editions import EditionPlan, items_of, newest_items
from ..environment import database_url
from ..errors import PipelineError
from ..items import Item
from ..publish.digest import Digest, PlannedDigest, render_digest
from ..sources import read_content
from ..sources.remote import read_remote, stored_remote
from ..state.storage import (
    Edition,
    Storage,
    StoredDigest,
)

if TYPE_CHECKING:  # imported where used: a run that finds nothing changed needs none of them
    from ..delivery.engine import SendReport


log = logging.getLogger(__name__)

MANUAL_JOB = "manual"
Action = Literal["run", "feeds", "send", "retry", "bounces"]


# -- the parts every use case shares ------------------------------------------------------------

def open_storage(config: Config) -> Storage:
    """The state database: SQLite in the state folder, or $PIPELINE_DATABASE_URL."""
    return Storage.for_state(config.path("state"), database_url())


def withhold_scheduled(local: list[Item], now: datetime) -> tuple[list[Item], datetime | None]:
    """The content stories that are out by ``now``, and when the next scheduled one is due (None:
    none is).  A story dated in the future is scheduled (the desk lists it so): no feed, page or
    digest shows it before its date, and the first run from then on publishes it."""
    due = [item for item in local if item.published <= now]
    later = [item.published for item in local if item.published > now]
    if later:
        log.info("%d scheduled stories withheld until their dates (the next on %s)", len(later),
                 min(later).isoformat())
    return due, (min(later) if later else None)


def read_items(config: Config, storage: Storage | None, *, fetch: bool = True,
               at: datetime | None = None) -> tuple[list[Item], list[Item]]:
    """Local content that is out by ``at`` (default now: scheduled stories are withheld) and remote items.
    Without ``fetch``, remote items are what the sources gave last time, and nothing is written: for
    looks that promise to change nothing."""
    local, _release_at = withhold_scheduled(read_content(config), at or utcnow())
    if not config.sources or storage is None:
        return local, []
    remote = read_remote(config, storage)[0] if fetch else stored_remote(config, storage)
    return local, remote


@dataclass
class RunContext:
    """Everything one run knows, built before anything is written; digests are rendered once each."""

    config: Config
    storage: Storage
    items: list[Item]
    origins: dict[str, str] = field(default_factory=dict)  # what local items were made from, by id
    release_at: datetime | None = None  # when the next scheduled story is due (the outputs change then)
    renders: int = 0
    _digests: dict[tuple[str | None, tuple[str, ...]], Digest] = field(default_factory=dict)

    def digest(self, items: list[Item], edition_id: str | None = None) -> Digest:
        key = (edition_id, tuple(sorted(item.id for item in items)))
        if key not in self._digests:
            self._digests[key] = render_digest(items, self.config, edition_id,
                                               edition_date=self.edition_date(edition_id))
            self.renders += 1
        return self._digests[key]

    def edition_date(self, edition_id: str | None) -> datetime | None:
        """An edition's date: when it was created, or now for the one this run is about to create;
        None (the newest item's date) for a digest that is no edition."""
        if edition_id is None:
            return None
        edition = self.storage.get_edition(edition_id)
        return edition.created_at if edition is not None else datetime.now(timezone.utc)

    def stored(self, edition_id: str, items: list[Item]) -> StoredDigest:
        digest = self.digest(items, edition_id)
        return StoredDigest(digest.subject, digest.html, digest.text)

    def web_digest(self, editions: list[Edition]) -> PlannedDigest | None:
        """What the site shows: the latest edition, else the newest items; rendered only when the
        outputs need it (``plan_outputs``)."""
        if editions:
            edition = editions[0]
            chosen = items_of(edition, self.items)
            if not chosen:
                return None
            return PlannedDigest(tuple(chosen), edition.id, self.edition_date(edition.id),
                                 lambda: self.digest(chosen, edition.id))
        newest = newest_items(self.items, self.config)
        return PlannedDigest(tuple(newest), None, None, lambda: self.digest(newest)) if newest else None


@dataclass
class RunOutcome:
    """What a run did; the CLI prints it and the runs table keeps its summary."""

    action: str
    items: list[Item] = field(default_factory=list)
    files: dict[Path, bytes] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)  # outputs the last run made and this one no longer does
    edition: EditionPlan | None = None
    reports: list[SendReport] = field(default_factory=list)
    unchanged: bool = False  # nothing changed since the last run: nothing was parsed, rendered or written
    renders: int = 0
    notes: dict[str, Any] = field(default_factory=dict)  # what a non-sending action did (e.g. bounces read)

    @property
    def status(self) -> str:
        """ok, partial (some messages failed or were deferred) or failed (none could be delivered)."""
        if not any(report.troubled for report in self.reports):
            return "ok"
        return "partial" if any(report.sent for report in self.reports) else "failed"

    def summary(self, duration: float) -> dict[str, Any]:
        return {
            "action": self.action, "unchanged": self.unchanged,
            "items": None if self.unchanged else len(self.items),
            "files_written": len(self.written), "files_removed": len(self.removed),
            "edition": self.edition.edition_id if self.edition else None,
            "edition_note": self.edition.reason if self.edition else None,
            "sent": sum(r.sent for r in self.reports), "failed": sum(r.failed for r in self.reports),
            "deferred": sum(r.deferred for r in self.reports), "retried": sum(r.retried for r in self.reports),
            "unreachable": next((r.unreachable for r in self.reports if r.unreachable), None),
            "stopped": any(r.stopped for r in self.reports), "duration_s": round(duration, 3),
            **self.notes,
        }


def action_for(config: Config, job: str | None) -> Action:
    """The action of a scheduled job (the one place a job name is resolved); manual runs are 'run'."""
    if job is None or job == MANUAL_JOB:
        return "run"
    if job not in config.schedule.jobs:
        raise PipelineError(f"{config.source_file}: schedule.jobs: no job named {job!r}")
    return config.schedule.jobs[job].action


# -- run: the whole pipeline, as one locked and recorded run --------------------------------------



def summary_line(summary: dict[str, Any]) -> str:
    if summary.get("unchanged"):
        return f"nothing changed since the last run, {summary.get('duration_s', 0):.2f}s"
    if summary.get("nothing_due"):
        return f"no queued message is due, {summary.get('duration_s', 0):.2f}s"
    written = summary.get("files_written", 0)
    return (f"{summary.get('items', 0)} items, {written} file{'' if written == 1 else 's'} written, "
            f"edition {summary.get('edition') or '-'}, sent {summary.get('sent', 0)}, "
            f"failed {summary.get('failed', 0)}, deferred {summary.get('deferred', 0)}, "
            f"{summary.get('duration_s', 0):.2f}s" + (" (stopped early)" if summary.get("stopped") else ""))


# -- looks that change nothing --------------------------------------------------------------------

@contextmanager
def storage_for(config: Config) -> Iterator[Storage]:
    """The state database for the subscriber commands and the web app."""
    with open_storage(config) as storage:
        yield storage


# -- bounces, complaints and the suppression list ---------------------------------------------------

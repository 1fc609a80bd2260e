"""What the operator asks about, changing nothing: status, the pre-send checks, config validation,
the sources.

Imports inside functions: the sending, linting, DKIM, bounce and feed modules load only in
the use case that needs them, so a cron run that finds nothing changed loads none of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Protocol

from ..config import Config
from ..delivery.editions import items_to_look_at
from ..environment import database_url, lint_secret
from ..items import Item
from ..reports import (
    EditionRow,
    FailureReason,
    Feedback,
    JobRow,
    RunRow,
    StatusReport,
    SubscriberCounts,
    WorkerRow,
)
from ..sources import read_content
from ..sources.merge import merge_items
from ..sources.remote import read_remote
from ..state.runs import is_interrupted
from ..state.storage import (
    DEFERRED,
    FAILED,
    PENDING,
    SENDING,
    SENT,
    SKIPPED,
    SUBSCRIBED,
    UNSUBSCRIBED,
    Edition,
    RunRecord,
    SourceState,
    WorkerRecord,
)
from .common import RunContext, open_storage, read_items

if TYPE_CHECKING:  # imported where used: a run that finds nothing changed needs none of them
    from ..mail.lint import Finding


log = logging.getLogger(__name__)

class StatusSource(Protocol):
    """What ``status`` reads from the state database, and nothing else (after listmonk's narrow stores)."""

    def recent_runs(self, limit: int = 10) -> list[RunRecord]: ...
    def latest_edition(self) -> Edition | None: ...
    def editions_unsettled(self) -> list[str]: ...
    def get_edition(self, edition_id: str) -> Edition | None: ...
    def ledger_counts(self, edition_id: str) -> dict[str, int]: ...
    def next_retry(self, edition_id: str) -> datetime | None: ...
    def failure_reasons(self, edition_id: str, limit: int = 5) -> list[tuple[str, int]]: ...
    def live_workers(self, since: datetime) -> list[WorkerRecord]: ...
    def count_subscribers(self, status: str | None = ...) -> int: ...
    def suppression_counts(self) -> dict[str, int]: ...
    def bounce_counts_since(self, since: datetime) -> dict[str, int]: ...
    def sent_since(self, since: datetime) -> int: ...
    def notice_counts(self) -> dict[str, int]: ...


def lint(config: Config) -> tuple[list[Item], list[Finding]]:
    """Pre-send checks of what the next send would carry (or the latest edition), and of the feeds."""
    from ..delivery.editions import edition_id_for
    from ..mail.edition import EditionMail
    from ..mail.lint import lint_outgoing
    from ..publish.feeds import ATOM_FILE, RSS_FILE, build_feeds

    delivery = config.require_delivery()
    state_permission_warnings(config)
    with open_storage(config) as storage:
        local, remote = read_items(config, storage, fetch=False)
        ctx = RunContext(config, storage, merge_items(local, remote))
        chosen = items_to_look_at(ctx.items, storage, config)
    edition_id = edition_id_for([item.id for item in chosen])
    secret = lint_secret(delivery.secret_env, config.path("state"))
    mail = EditionMail(ctx.digest(chosen, edition_id), edition_id, datetime.now(timezone.utc), config, secret)
    feeds = build_feeds(ctx.items, config).files()
    checked_feeds = {RSS_FILE: feeds[RSS_FILE], ATOM_FILE: feeds[ATOM_FILE]}
    return chosen, lint_outgoing(mail.sample(), chosen, checked_feeds, config)


def validate(config: Config) -> int:
    """Check every content file; returns how many items there are."""
    return len(read_content(config))


# -- status and sources ---------------------------------------------------------------------------

def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _run_row(record: RunRecord) -> RunRow:
    return RunRow(record.id, record.job, _iso(record.started_at), _iso(record.finished_at),
                  # a run whose process is gone is interrupted, not running
                  "interrupted" if is_interrupted(record) else record.status, record.summary)


def status(config: Config, runs: int = 10) -> StatusReport:
    """Recent runs, next scheduled runs, every edition with unsettled messages, and the list's size."""
    from ..state.jobs import stored_next_run_times

    loose = state_permission_warnings(config)  # looked at before opening the state tightens it
    with open_storage(config) as storage:
        stored = stored_next_run_times(config.path("state"), database_url())
        return status_report(storage, config, runs, stored, loose, datetime.now(timezone.utc))


def status_report(storage: StatusSource, config: Config, runs: int, stored: dict[str, datetime | None],
                  loose: list[str], now: datetime) -> StatusReport:
    """The report from what the state says; ``stored`` is the service's job store (next run times)."""
    lease = config.delivery.lease_seconds if config.delivery else 60.0
    latest = storage.latest_edition()
    unsettled = storage.editions_unsettled()
    others = [storage.get_edition(edition_id) for edition_id in unsettled]
    return StatusReport(
        runs=[_run_row(record) for record in storage.recent_runs(runs)],
        # The service's own record wins: it knows about pauses and catch-up runs.
        jobs=[JobRow(name, job.cron, job.timezone, job.action,
                     _iso(stored.get(name) or job.trigger().get_next_fire_time(None, now)),
                     "service" if stored.get(name) else "config")
              for name, job in config.schedule.jobs.items()],
        last_edition=_edition_row(storage, latest) if latest else None,
        editions_with_unsent=[_edition_row(storage, edition) for edition in others
                              if edition is not None and (latest is None or edition.id != latest.id)],
        workers=[WorkerRow(w.id, w.host, w.pid, round((now - w.heartbeat_at).total_seconds(), 1), w.held,
                           round((now - w.oldest_claim).total_seconds(), 1) if w.oldest_claim else None)
                 for w in storage.live_workers(since=now - timedelta(seconds=lease * 10))],
        subscribers=SubscriberCounts(storage.count_subscribers(SUBSCRIBED),
                                     storage.count_subscribers(UNSUBSCRIBED), storage.count_subscribers("pending")),
        suppressed=storage.suppression_counts(),
        feedback_30d=_feedback(storage, now),
        state_permissions=loose,
        signup_mail=storage.notice_counts(),
    )


def state_permission_warnings(config: Config) -> list[str]:
    """Entries of the state folder others could read (an older version made them 0644), each logged
    as a warning; opening the state tightens the folder and the databases."""
    from ..state.files import loose_permissions

    loose = loose_permissions(config.path("state"))
    for line in loose:
        log.warning("state folder: %s", line)
    return loose


def _feedback(storage: StatusSource, now: datetime) -> Feedback:
    """Bounces and complaints of the last 30 days against messages sent: the rates mailbox providers judge."""
    from datetime import timedelta

    since = now - timedelta(days=30)
    counts = storage.bounce_counts_since(since)
    sent = storage.sent_since(since)
    complaints = counts.get("complaint", 0)
    return Feedback(sent, counts.get("hard", 0), counts.get("soft", 0), complaints, counts.get("unsubscribe", 0),
                    round(complaints / sent, 5) if sent else None)


def _edition_row(storage: StatusSource, edition: Edition) -> EditionRow:
    counts = storage.ledger_counts(edition.id)
    return EditionRow(edition.id, _iso(edition.created_at), edition.subject, len(edition.item_ids),
                      counts[PENDING], counts[SENDING], counts[SENT], counts[FAILED], counts[DEFERRED], counts[SKIPPED],
                      _iso(storage.next_retry(edition.id)),
                      [FailureReason(reply, count) for reply, count in storage.failure_reasons(edition.id)])


@dataclass
class SourceRow:
    name: str
    url: str
    fetched_at: datetime | None
    status: str
    item_count: int


def sources(config: Config, *, fetch: bool = False) -> tuple[int, list[SourceRow]]:
    """How many local items there are, and each remote source's last fetch; ``fetch`` fetches first."""
    with open_storage(config) as storage:
        if fetch and config.sources:
            read_remote(config, storage)
        states = {state.name: state for state in storage.all_source_states()}
    rows = []
    for source in config.sources:
        state = states.get(source.name) or SourceState(source.name)
        rows.append(SourceRow(source.name, state.url or source.url, state.fetched_at, state.status or "-",
                              state.item_count))
    return len(read_content(config)), rows

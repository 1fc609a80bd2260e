"""What ``pipeline status`` (and the desk's health page) reports, typed.

The use case builds a ``StatusReport``; the CLI formats it for people, ``--json`` prints
``to_dict()`` for monitoring (the keys are a published interface: changing one breaks
somebody's check), and the desk's templates read the same dictionary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunRow:
    id: int
    job: str
    started_at: str | None
    finished_at: str | None
    status: str  # running, ok, partial, failed, error, interrupted (its process is gone)
    summary: dict[str, Any]  # the run's one-line summary fields, as recorded


@dataclass(frozen=True)
class JobRow:
    name: str
    cron: str
    timezone: str
    action: str
    next_run: str | None
    source: str  # "service" (the scheduler's own record) or "config"


@dataclass(frozen=True)
class FailureReason:
    reply: str
    count: int


@dataclass(frozen=True)
class EditionRow:
    id: str
    created_at: str | None
    subject: str
    items: int
    pending: int
    sending: int
    sent: int
    failed: int
    deferred: int
    skipped: int
    next_retry: str | None
    top_failures: list[FailureReason]


@dataclass(frozen=True)
class WorkerRow:
    id: str
    host: str
    pid: int
    heartbeat_age_s: float
    holds: int
    oldest_claim_age_s: float | None


@dataclass(frozen=True)
class SubscriberCounts:
    subscribed: int
    unsubscribed: int
    pending: int  # signed up, not yet confirmed


@dataclass(frozen=True)
class Feedback:
    """Bounces and complaints of the last 30 days against messages sent: what mailbox providers judge."""

    sent: int
    hard: int
    soft: int
    complaints: int
    unsubscribe_requests: int
    complaint_rate: float | None


@dataclass(frozen=True)
class StatusReport:
    runs: list[RunRow]
    jobs: list[JobRow]
    last_edition: EditionRow | None
    editions_with_unsent: list[EditionRow]
    workers: list[WorkerRow]
    subscribers: SubscriberCounts
    suppressed: dict[str, int]  # suppression reason -> addresses
    feedback_30d: Feedback
    state_permissions: list[str] = field(default_factory=list)  # entries of .state/ others could read
    signup_mail: dict[str, int] = field(default_factory=dict)  # the notice queue: status -> notices

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

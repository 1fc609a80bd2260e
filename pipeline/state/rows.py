"""The typed rows the stores return: what crosses from ``state/`` to the rest of the pipeline.

Plain frozen dataclasses, no SQL: any module may import them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Profile:
    """A subscriber as signup and the preferences page see them."""

    id: int
    email: str
    name: str | None
    status: str
    topics: tuple[str, ...]  # empty: everything
    paused_until: datetime | None
    confirmed_at: datetime | None
    confirm_sent_at: datetime | None
    subscribed_at: datetime | None
    unsubscribed_at: datetime | None


@dataclass(frozen=True)
class QueuedNotice:
    """A sign-up mail waiting in the notice queue, as a drainer claimed it."""

    id: int
    subscriber_id: int
    kind: str  # confirm, subscribed
    attempts: int  # this claim included
    created_at: datetime


@dataclass(frozen=True)
class ConsentEvent:
    at: datetime
    action: str
    method: str
    consent_text: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class EditionVariants:
    """Per-topic digests of one edition: each subscribers' topic choice (``topics_key``) gets a variant
    ("" the whole edition) or None (none of their topics has news: no message)."""

    routes: dict[str, str | None]
    digests: dict[str, StoredDigest]


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str | None
    attributes: dict[str, Any]
    status: str
    subscribed_at: datetime | None
    unsubscribed_at: datetime | None


@dataclass(frozen=True)
class Edition:
    id: str
    created_at: datetime
    subject: str
    item_ids: list[str]
    recipients: int


@dataclass(frozen=True)
class StoredDigest:
    """An edition's digest as it was rendered when the edition was made (placeholder for the unsubscribe URL)."""

    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class Claim:
    """A ledger row a worker holds while it sends that one message."""

    edition_id: str
    subscriber_id: int
    email: str
    attempts: int
    worker: str = ""
    first_attempt_at: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of one claimed message; recorded before the connection sends the next."""

    claim: Claim
    status: str  # SENT, FAILED, DEFERRED or PENDING (handed back unsent)
    reply: str | None
    attempts: int
    retry_at: datetime | None = None


@dataclass(frozen=True)
class SourceState:
    """What the pipeline remembers about one remote source between fetches."""

    name: str
    configured_url: str = ""  # as in config.yaml when this state was saved
    url: str | None = None  # where it is fetched from now, after permanent redirects
    etag: str | None = None
    last_modified: str | None = None
    fetched_at: datetime | None = None
    status: str | None = None
    item_count: int = 0


@dataclass(frozen=True)
class StoredEntry:
    """One entry a source delivered, as stored: first seen, content hash, JSON-ready fields."""

    item_id: str
    first_seen: datetime
    data: dict[str, Any]
    updated: datetime | None = None
    content_hash: str = ""


@dataclass(frozen=True)
class WorkerRecord:
    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    held: int  # rows it holds in 'sending'
    oldest_claim: datetime | None


@dataclass(frozen=True)
class SendFailure:
    """A message the relay refused while sending, to be looked at as a bounce; ``at``: when it was refused."""

    subscriber_id: int
    email: str
    reply: str
    at: datetime


@dataclass(frozen=True)
class BounceEvent:
    """One bounce, complaint or mailto unsubscribe that named a subscriber, and what it caused."""

    id: int
    subscriber_id: int
    kind: str
    reason: str
    source: str
    edition_id: str | None
    outcome: str
    created_at: datetime  # when it happened (the refusal, the relay's event time), else when it was recorded


@dataclass(frozen=True)
class Suppression:
    id: int
    subscriber_id: int
    reason: str
    detail: str
    created_at: datetime
    lifted_at: datetime | None
    lifted_reason: str | None


@dataclass(frozen=True)
class RunRecord:
    id: int
    job: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    summary: dict[str, Any]

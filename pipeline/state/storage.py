"""All state, behind one small module: subscribers, editions, the send ledger, runs, source cache.

SQLAlchemy Core on SQLite by default (a file in the state folder); the same code
runs on PostgreSQL, where several send workers claim ledger rows with
``FOR UPDATE SKIP LOCKED``.  No other module writes SQL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    and_,
    create_engine,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine

from ..errors import PipelineError
from .ledger import LedgerStore, _due, claim_statement
from .rows import (
    BounceEvent,
    Claim,
    ConsentEvent,
    Edition,
    EditionVariants,
    Outcome,
    Profile,
    RunRecord,
    SourceState,
    StoredDigest,
    StoredEntry,
    Subscriber,
    Suppression,
    WorkerRecord,
)
from .schema import (
    DATABASE_FILE,
    DEFERRED,
    FAILED,
    LEADER_LOCK_KEY,
    LEDGER_STATUSES,
    MIGRATION_LOCK_KEY,
    MIGRATIONS,
    PENDING,
    PENDING_CONFIRMATION,
    RATE_MEMORY,
    RUN_LOCK_KEY,
    SCHEMA_VERSION,
    SENDING,
    SENT,
    SKIPPED,
    SUBSCRIBED,
    UNSUBSCRIBED,
    UTCDateTime,
    _not_paused,
    _suppressed,
    bounce_events,
    consent_events,
    deliveries,
    edition_digests,
    edition_items,
    editions,
    metadata,
    processed_messages,
    rate_events,
    runs,
    schema_info,
    signup_tokens,
    source_items,
    sources,
    subscribers,
    suppressions,
    topics_key,
    utcnow,
)

# What the rest of the pipeline imports from here (the rows and the status words live in rows.py and schema.py).
__all__ = [
    "BounceEvent",
    "Claim",
    "ConsentEvent",
    "DEFERRED",
    "Edition",
    "EditionVariants",
    "FAILED",
    "LEADER_LOCK_KEY",
    "LEDGER_STATUSES",
    "Outcome",
    "PENDING",
    "PENDING_CONFIRMATION",
    "Profile",
    "RUN_LOCK_KEY",
    "RunRecord",
    "SCHEMA_VERSION",
    "SENDING",
    "SENT",
    "SKIPPED",
    "SUBSCRIBED",
    "SourceState",
    "Storage",
    "StoredDigest",
    "StoredEntry",
    "Subscriber",
    "Suppression",
    "UNSUBSCRIBED",
    "UTCDateTime",
    "WorkerRecord",
    "claim_statement",
    "consent_events",
    "database_url",
    "deliveries",
    "editions",
    "runs",
    "schema_info",
    "subscribers",
    "topics_key",
    "utcnow",
]

log = logging.getLogger(__name__)



def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the sender
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def database_url(state_folder: Path, override: str | None = None) -> str:
    if override:
        return override
    state_folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state_folder / DATABASE_FILE}"


class Storage(LedgerStore):
    def __init__(self, url: str):
        self.url = url
        # Statement parameters (subscriber addresses) never reach a log, even at -vv.
        kwargs: dict[str, Any] = {"future": True, "hide_parameters": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        self.engine: Engine = create_engine(url, **kwargs)
        self._ledger_writes = None
        # SQLite lets one connection write at a time and makes the others sleep and retry (in
        # steps of milliseconds); the send threads of this process queue here instead, so the
        # next writer starts the moment the last one commits.  PostgreSQL needs no such thing.
        self._writes: Any = threading.Lock() if url.startswith("sqlite") else nullcontext()
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.migrate()

    @classmethod
    def for_state(cls, state_folder: Path, override: str | None = None) -> Storage:
        return cls(database_url(state_folder, override))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- schema -------------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            if not self.engine.dialect.has_table(conn, "schema_info"):
                return 0
            return conn.execute(select(schema_info.c.version)).scalar_one_or_none() or 0

    def migrate(self) -> None:
        """Bring the schema up to date, once, even when several processes start together: on
        PostgreSQL under a transaction-level advisory lock; SQLite serialises writers itself."""
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            metadata.create_all(conn, tables=[schema_info])
            current = conn.execute(select(schema_info.c.version)).scalar_one_or_none()
            if current is None:
                conn.execute(insert(schema_info).values(version=0))
                current = 0
            if current > SCHEMA_VERSION:
                raise PipelineError(f"state database has schema {current}, newer than this program "
                                    f"({SCHEMA_VERSION}); upgrade newsletter-pipeline")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                log.info("migrating state database to schema %d", version)
                MIGRATIONS[version](conn)
                conn.execute(update(schema_info).values(version=version))

    # -- subscribers --------------------------------------------------------------------------

    def get_subscriber(self, email: str) -> Subscriber | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(subscribers).where(subscribers.c.email == email)).first()
        return self._subscriber(row) if row else None

    def add_subscriber(self, email: str, name: str | None = None, attributes: dict[str, Any] | None = None,
                       *, resubscribe: bool = False) -> str:
        """Insert or merge one subscriber; returns 'added', 'updated', 'resubscribed' or 'unsubscribed'.

        An unsubscribed address stays unsubscribed unless ``resubscribe`` is given
        (an explicit, single-address request), so a re-import never resubscribes anyone.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(select(subscribers).where(subscribers.c.email == email)).first()
            if row is None:
                conn.execute(insert(subscribers).values(
                    email=email, name=name, attributes=attributes or {}, status=SUBSCRIBED,
                    subscribed_at=now, updated_at=now))
                return "added"
            values: dict[str, Any] = {"updated_at": now}
            if name:
                values["name"] = name
            if attributes:
                values["attributes"] = {**(row.attributes or {}), **attributes}
            outcome = "updated"
            if row.status == UNSUBSCRIBED:
                if resubscribe:
                    values.update(status=SUBSCRIBED, subscribed_at=now, unsubscribed_at=None)
                    outcome = "resubscribed"
                else:
                    outcome = "unsubscribed"
            conn.execute(update(subscribers).where(subscribers.c.id == row.id).values(**values))
            return outcome

    def merge_subscribers(self, rows: list[tuple[str, str | None, dict[str, Any]]], *,
                          status: str = SUBSCRIBED) -> dict[str, int]:
        """Merge a batch of (email, name, attributes) in one transaction: new ones are added
        (with ``status``: pending when the import asks them to confirm), known ones updated where
        a name or attribute differs (else counted unchanged), unsubscribed ones left unsubscribed.
        One round trip per batch, not per subscriber, so large imports stay fast."""
        now = utcnow()
        counts = {"added": 0, "updated": 0, "unchanged": 0, "unsubscribed": 0}
        if not rows:
            return counts
        with self.engine.begin() as conn:
            known = {row.email: row for row in conn.execute(
                select(subscribers.c.id, subscribers.c.email, subscribers.c.status, subscribers.c.name,
                       subscribers.c.attributes)
                .where(subscribers.c.email.in_([email for email, _, _ in rows])))}
            new = [{"email": email, "name": name, "attributes": attributes, "status": status,
                    "subscribed_at": now if status == SUBSCRIBED else None, "updated_at": now}
                   for email, name, attributes in rows if email not in known]
            if new:
                conn.execute(insert(subscribers), new)
            counts["added"] = len(new)
            for email, name, attributes in rows:
                row = known.get(email)
                if row is None:
                    continue
                values: dict[str, Any] = {}
                if name and name != row.name:
                    values["name"] = name
                merged = {**(row.attributes or {}), **attributes}
                if merged != (row.attributes or {}):
                    values["attributes"] = merged
                if values:
                    conn.execute(update(subscribers).where(subscribers.c.id == row.id)
                                 .values(updated_at=now, **values))
                counts["unsubscribed" if row.status == UNSUBSCRIBED else "updated" if values else "unchanged"] += 1
        return counts

    def unsubscribe(self, email: str) -> bool:
        """Mark unsubscribed; True if the address was subscribed.  Idempotent."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(subscribers)
                .where(subscribers.c.email == email, subscribers.c.status == SUBSCRIBED)
                .values(status=UNSUBSCRIBED, unsubscribed_at=now, updated_at=now))
            if result.rowcount:
                # Not yet sent editions must not reach this address either.
                ids = select(subscribers.c.id).where(subscribers.c.email == email).scalar_subquery()
                conn.execute(
                    update(deliveries)
                    .where(deliveries.c.subscriber_id == ids,
                           deliveries.c.status.in_([PENDING, SENDING, DEFERRED]))
                    .values(status=SKIPPED, reply="unsubscribed before sending", updated_at=now))
            return bool(result.rowcount)

    def iter_subscribers(self, status: str | None = None, batch: int = 1000) -> Iterator[Subscriber]:
        """Stream subscribers in id order, a batch at a time, so memory stays flat."""
        last = 0
        while True:
            query = select(subscribers).where(subscribers.c.id > last).order_by(subscribers.c.id).limit(batch)
            if status:
                query = query.where(subscribers.c.status == status)
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            for row in rows:
                yield self._subscriber(row)
            last = rows[-1].id

    def count_subscribers(self, status: str | None = SUBSCRIBED) -> int:
        query = select(func.count()).select_from(subscribers)
        if status:
            query = query.where(subscribers.c.status == status)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    # -- editions -----------------------------------------------------------------------------

    def sent_item_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(edition_items.c.item_id)).scalars())

    def get_edition(self, edition_id: str) -> Edition | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(editions).where(editions.c.id == edition_id)).first()
        return Edition(row.id, row.created_at, row.subject, list(row.item_ids), row.recipients) if row else None

    def latest_edition(self) -> Edition | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(editions).order_by(editions.c.created_at.desc(), editions.c.id.desc())
                               .limit(1)).first()
        return Edition(row.id, row.created_at, row.subject, list(row.item_ids), row.recipients) if row else None

    def list_editions(self) -> list[Edition]:
        """Every edition, newest first (one row each; the archive index needs them all)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(editions).order_by(editions.c.created_at.desc(), editions.c.id.desc())).all()
        return [Edition(row.id, row.created_at, row.subject, list(row.item_ids), row.recipients) for row in rows]

    def create_edition(self, edition_id: str, item_ids: list[str], digest: StoredDigest, *,
                       record_items: bool = True, variants: EditionVariants | None = None) -> bool:
        """Record an edition, its rendered digest, and one ledger row per current subscriber, in one transaction.

        Returns False when the edition exists already (a rerun, or another process won the race),
        changing nothing.  The queue is filled with INSERT ... SELECT, so no subscriber list
        passes through Python.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            created = conn.execute(self._insert_ignoring_conflicts(editions, ["id"]).values(
                id=edition_id, created_at=now, subject=digest.subject, item_ids=item_ids, recipients=0)
                .returning(editions.c.id)).first()
            if created is None:
                return False
            conn.execute(insert(edition_digests).values(edition_id=edition_id, variant="", subject=digest.subject,
                                                        html=digest.html, text=digest.text))
            if record_items:
                conn.execute(insert(edition_items), [{"item_id": i, "edition_id": edition_id} for i in item_ids])
            count: int | None = None
            if variants is not None and variants.routes:  # per-topic digests: see "signup, consent, topics"
                self._queue_variants(conn, edition_id, now, variants)
            else:
                queued = conn.execute(insert(deliveries).from_select(
                    ["edition_id", "subscriber_id", "status", "attempts", "updated_at"],
                    select(literal(edition_id, String), subscribers.c.id, literal(PENDING, String),
                           literal(0, Integer), literal(now, UTCDateTime))
                    .where(subscribers.c.status == SUBSCRIBED, _not_paused(now), ~_suppressed(subscribers.c.id)),
                ))
                count = queued.rowcount if queued.rowcount is not None and queued.rowcount >= 0 else None
            if count is None:
                count = conn.execute(select(func.count()).select_from(deliveries)
                                     .where(deliveries.c.edition_id == edition_id)).scalar_one()
            conn.execute(update(editions).where(editions.c.id == edition_id).values(recipients=count))
        return True

    def edition_digest(self, edition_id: str, variant: str = "") -> StoredDigest | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(edition_digests).where(edition_digests.c.edition_id == edition_id,
                                                             edition_digests.c.variant == variant)).first()
        return StoredDigest(row.subject, row.html, row.text) if row else None

    def editions_with_work(self, now: datetime | None = None, stale_before: datetime | None = None) -> list[str]:
        """Editions with messages to send now, oldest first: pending, deferred and due, or left in
        flight by a sender that is gone (claimed before ``stale_before``, by default: any)."""
        now = now or utcnow()
        stale = deliveries.c.status == SENDING
        if stale_before is not None:
            stale = and_(stale, deliveries.c.claimed_at <= stale_before)
        query = (select(editions.c.id)
                 .where(select(deliveries.c.subscriber_id)
                        .where(deliveries.c.edition_id == editions.c.id, or_(stale, _due(now))).exists())
                 .order_by(editions.c.created_at, editions.c.id))
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def editions_unsettled(self) -> list[str]:
        """Editions with any message not yet sent, failed or skipped (due now or deferred), oldest first."""
        query = (select(editions.c.id)
                 .where(select(deliveries.c.subscriber_id)
                        .where(deliveries.c.edition_id == editions.c.id,
                               deliveries.c.status.in_([PENDING, SENDING, DEFERRED])).exists())
                 .order_by(editions.c.created_at, editions.c.id))
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    # -- ledger -------------------------------------------------------------------------------

    def requeue_failed(self, edition_id: str) -> int:
        """Put an edition's failed rows back in the queue, on purpose (``send --retry-failed``)."""
        with self.engine.begin() as conn:
            return conn.execute(update(deliveries)
                                .where(deliveries.c.edition_id == edition_id, deliveries.c.status == FAILED,
                                       ~_suppressed(deliveries.c.subscriber_id))  # issue 14: never a suppressed one
                                .values(status=PENDING, retry_at=None, first_attempt_at=None,
                                        reply=None, updated_at=utcnow())).rowcount

    def failure_reasons(self, edition_id: str, limit: int = 5) -> list[tuple[str, int]]:
        """The most common replies of failed and deferred rows, most frequent first."""
        query = (select(deliveries.c.reply, func.count().label("n"))
                 .where(deliveries.c.edition_id == edition_id, deliveries.c.status.in_([FAILED, DEFERRED]))
                 .group_by(deliveries.c.reply).order_by(func.count().desc(), deliveries.c.reply).limit(limit))
        with self.engine.connect() as conn:
            return [(row.reply or "", row.n) for row in conn.execute(query)]

    def next_retry(self, edition_id: str) -> datetime | None:
        """When the earliest deferred message of an edition is due."""
        query = (select(func.min(deliveries.c.retry_at))
                 .where(deliveries.c.edition_id == edition_id, deliveries.c.status == DEFERRED))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one_or_none()

    def ledger_counts(self, edition_id: str) -> dict[str, int]:
        query = (select(deliveries.c.status, func.count()).where(deliveries.c.edition_id == edition_id)
                 .group_by(deliveries.c.status))
        with self.engine.connect() as conn:
            counts = {status: count for status, count in conn.execute(query)}
        return {status: counts.get(status, 0) for status in LEDGER_STATUSES}

    def failures(self, edition_id: str, limit: int = 50) -> list[tuple[str, str]]:
        query = (select(subscribers.c.email, deliveries.c.reply)
                 .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                 .where(deliveries.c.edition_id == edition_id, deliveries.c.status == FAILED)
                 .order_by(subscribers.c.email).limit(limit))
        with self.engine.connect() as conn:
            return [(row.email, row.reply or "") for row in conn.execute(query)]

    # -- remote sources -----------------------------------------------------------------------

    @staticmethod
    def _source_state(row: Any) -> SourceState:
        return SourceState(row.name, row.configured_url, row.url, row.etag, row.last_modified, row.fetched_at,
                           row.status, row.item_count or 0)

    def source_state(self, name: str) -> SourceState | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sources).where(sources.c.name == name)).first()
        return self._source_state(row) if row else None

    def all_source_states(self) -> list[SourceState]:
        with self.engine.connect() as conn:
            return [self._source_state(row) for row in conn.execute(select(sources).order_by(sources.c.name))]

    def save_source_state(self, name: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(select(sources.c.name).where(sources.c.name == name)).first()
            if exists:
                conn.execute(update(sources).where(sources.c.name == name).values(**values))
            else:
                conn.execute(insert(sources).values(name=name, **{"item_count": 0, **values}))

    def stored_source_items(self, name: str) -> list[StoredEntry]:
        """What a source delivered before: used when it fails or answers 304."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(source_items).where(source_items.c.source == name)).all()
        return [StoredEntry(row.item_id, row.first_seen, dict(row.data), row.updated, row.content_hash)
                for row in rows]

    def merge_source_items(self, name: str, entries: list[tuple[str, str, dict[str, Any]]], now: datetime) -> None:
        """Store (item_id, content_hash, data) rows: new ones are first seen now; a row whose hash changed
        gets the new data and an updated time; an unchanged one keeps what it had."""
        with self.engine.begin() as conn:
            known = dict(conn.execute(
                select(source_items.c.item_id, source_items.c.content_hash)
                .where(source_items.c.source == name,
                       source_items.c.item_id.in_([i for i, _, _ in entries]))).all())
            for item_id, content_hash, data in entries:
                if item_id not in known:
                    conn.execute(insert(source_items).values(source=name, item_id=item_id, first_seen=now,
                                                             content_hash=content_hash, updated=None, data=data))
                    known[item_id] = content_hash
                elif known[item_id] != content_hash:
                    conn.execute(update(source_items)
                                 .where(source_items.c.source == name, source_items.c.item_id == item_id)
                                 .values(content_hash=content_hash, updated=now, data=data))
                    known[item_id] = content_hash

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, job: str) -> int:
        with self.engine.begin() as conn:
            return conn.execute(insert(runs).values(job=job, started_at=utcnow(), status="running", summary={})
                                .returning(runs.c.id)).scalar_one()

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id)
                         .values(finished_at=utcnow(), status=status, summary=summary))

    def recent_runs(self, limit: int = 10) -> list[RunRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(limit)).all()
        return [RunRecord(r.id, r.job, r.started_at, r.finished_at, r.status, dict(r.summary or {})) for r in rows]

    # -- signup, consent, topics ----------------------------------------------------------------

    def profile(self, email: str | None = None, subscriber_id: int | None = None) -> Profile | None:
        where = subscribers.c.email == email if email is not None else subscribers.c.id == subscriber_id
        with self.engine.connect() as conn:
            row = conn.execute(select(subscribers).where(where)).first()
        return self._profile(row) if row else None

    def start_signup(self, email: str, name: str | None, topics: str, now: datetime) -> tuple[str, Profile]:
        """Record a signup: 'new' (a new or unsubscribed address, now pending), 'pending' (still
        unconfirmed) or 'active' (already subscribed: nothing changes, so the form reveals nothing)."""
        with self.engine.begin() as conn:
            row = conn.execute(select(subscribers).where(subscribers.c.email == email)).first()
            if row is None:
                conn.execute(insert(subscribers).values(
                    email=email, name=name, attributes={}, status=PENDING_CONFIRMATION, topics_key=topics,
                    updated_at=now))
                state = "new"
            elif row.status == SUBSCRIBED:
                state = "active"
            else:
                values: dict[str, Any] = {"status": PENDING_CONFIRMATION, "topics_key": topics, "updated_at": now}
                if name:
                    values["name"] = name
                if row.status == UNSUBSCRIBED:
                    values["confirm_sent_at"] = None  # a fresh opt-in: not throttled by an old confirmation
                conn.execute(update(subscribers).where(subscribers.c.id == row.id).values(**values))
                state = "pending" if row.status == PENDING_CONFIRMATION else "new"
            row = conn.execute(select(subscribers).where(subscribers.c.email == email)).one()
        return state, self._profile(row)

    def operator_add(self, email: str, name: str | None, topics: str | None, *, confirmed: bool,
                     now: datetime) -> tuple[str, Profile]:
        """An operator's single add: 'added', 'updated', 'already subscribed' (nothing changed),
        'resubscribed' (confirmed) or 'pending' (waits for the subscriber's own confirmation)."""
        with self.engine.begin() as conn:
            row = conn.execute(select(subscribers).where(subscribers.c.email == email)).first()
            values: dict[str, Any] = {"updated_at": now}
            if name:
                values["name"] = name
            if topics is not None:
                values["topics_key"] = topics
            if confirmed and (row is None or row.status != SUBSCRIBED):
                values.update(status=SUBSCRIBED, subscribed_at=now, unsubscribed_at=None, confirmed_at=now)
            elif not confirmed and (row is None or row.status != SUBSCRIBED):
                values.update(status=PENDING_CONFIRMATION)
            if row is None:
                conn.execute(insert(subscribers).values(email=email, attributes={}, **values))
                outcome = "added" if confirmed else "pending"
            elif row.status == SUBSCRIBED and (not name or name == row.name) and \
                    (topics is None or topics == row.topics_key):
                outcome = "already subscribed"  # nothing to change: say so, touch nothing
            else:
                conn.execute(update(subscribers).where(subscribers.c.id == row.id).values(**values))
                outcome = ("updated" if row.status == SUBSCRIBED else
                           "resubscribed" if confirmed and row.status == UNSUBSCRIBED else
                           "added" if confirmed else "pending")
            row = conn.execute(select(subscribers).where(subscribers.c.email == email)).one()
        return outcome, self._profile(row)

    def known_emails(self, emails: list[str]) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(subscribers.c.email).where(subscribers.c.email.in_(emails))).scalars())

    def ids_for(self, emails: list[str]) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {row.email: row.id for row in conn.execute(
                select(subscribers.c.email, subscribers.c.id).where(subscribers.c.email.in_(emails)))}

    def issue_token(self, subscriber_id: int, token_hash: str, purpose: str, now: datetime,
                    expires_at: datetime) -> None:
        """Store a confirmation token (its hash only) and note when the confirmation went out."""
        with self.engine.begin() as conn:
            conn.execute(insert(signup_tokens).values(token_hash=token_hash, subscriber_id=subscriber_id,
                                                      purpose=purpose, created_at=now, expires_at=expires_at))
            conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                         .values(confirm_sent_at=now, updated_at=now))

    def token_state(self, token_hash: str, purpose: str, now: datetime) -> tuple[str, Profile | None]:
        """'valid', 'used', 'expired' or 'unknown', and whose token it is; changes nothing (for GETs)."""
        with self.engine.connect() as conn:
            token = conn.execute(select(signup_tokens).where(signup_tokens.c.token_hash == token_hash,
                                                             signup_tokens.c.purpose == purpose)).first()
            if token is None:
                return "unknown", None
            row = conn.execute(select(subscribers).where(subscribers.c.id == token.subscriber_id)).one()
        state = "used" if token.used_at is not None else "expired" if token.expires_at <= now else "valid"
        return state, self._profile(row)

    def use_confirmation(self, token_hash: str, now: datetime) -> tuple[str, Profile | None]:
        """Spend a confirmation token: 'confirmed' makes the subscriber active and spends every other
        confirmation token of theirs; 'used', 'expired' and 'unknown' change nothing."""
        with self.engine.begin() as conn:
            token = conn.execute(select(signup_tokens).where(signup_tokens.c.token_hash == token_hash,
                                                             signup_tokens.c.purpose == "confirm")).first()
            if token is None:
                return "unknown", None
            if token.used_at is None and token.expires_at > now:
                spent = conn.execute(update(signup_tokens)
                                     .where(signup_tokens.c.token_hash == token_hash, signup_tokens.c.used_at.is_(None))
                                     .values(used_at=now))
                if spent.rowcount:
                    conn.execute(update(signup_tokens)
                                 .where(signup_tokens.c.subscriber_id == token.subscriber_id,
                                        signup_tokens.c.purpose == "confirm", signup_tokens.c.used_at.is_(None))
                                 .values(used_at=now))
                    conn.execute(update(subscribers)
                                 .where(subscribers.c.id == token.subscriber_id,
                                        subscribers.c.status == PENDING_CONFIRMATION)
                                 .values(status=SUBSCRIBED, subscribed_at=now, unsubscribed_at=None,
                                         confirmed_at=now, updated_at=now))
                    row = conn.execute(select(subscribers).where(subscribers.c.id == token.subscriber_id)).one()
                    return "confirmed", self._profile(row)
            row = conn.execute(select(subscribers).where(subscribers.c.id == token.subscriber_id)).one()
        return ("used" if token.used_at is not None or token.expires_at > now else "expired"), self._profile(row)

    def set_preferences(self, subscriber_id: int, topics: str, paused_until: datetime | None, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                         .values(topics_key=topics, paused_until=paused_until, updated_at=now))

    def record_consent(self, subscriber_id: int, action: str, method: str, consent_text: str | None,
                       detail: dict[str, Any] | None = None, now: datetime | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(consent_events).values(subscriber_id=subscriber_id, at=now or utcnow(), action=action,
                                                       method=method, consent_text=consent_text,
                                                       detail=detail or {}))

    def record_consents(self, rows: list[dict[str, Any]]) -> None:
        """Many consent events in one transaction (an import's batch)."""
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(consent_events), [{"detail": {}, **row} for row in rows])

    def consent_histories(self, subscriber_ids: list[int]) -> dict[int, list[ConsentEvent]]:
        """Each subscriber's consent events, oldest first."""
        found: dict[int, list[ConsentEvent]] = {i: [] for i in subscriber_ids}
        if not subscriber_ids:
            return found
        query = (select(consent_events).where(consent_events.c.subscriber_id.in_(subscriber_ids))
                 .order_by(consent_events.c.subscriber_id, consent_events.c.id))
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                found[row.subscriber_id].append(ConsentEvent(row.at, row.action, row.method, row.consent_text,
                                                             dict(row.detail or {})))
        return found

    def hit_rate(self, key: str, limit: int, window_start: datetime, now: datetime) -> bool:
        """Count one hit against ``key`` if fewer than ``limit`` happened since ``window_start``;
        False (and nothing counted) when the limit is reached.  Hits older than a day are dropped.
        Hits on one key are serialised (SQLite: one writer; PostgreSQL: a transaction advisory lock),
        so concurrent requests never let more than ``limit`` through."""
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": "rate:" + key})
            conn.execute(rate_events.delete().where(rate_events.c.at < min(window_start, now - RATE_MEMORY)))
            used = conn.execute(select(func.count()).select_from(rate_events)
                                .where(rate_events.c.key == key, rate_events.c.at >= window_start)).scalar_one()
            if used >= limit:
                return False
            conn.execute(insert(rate_events).values(key=key, at=now))
            return True

    def topic_keys_in_use(self, now: datetime) -> list[str]:
        """The distinct topic choices of subscribers who would get an edition now ("" for everything)."""
        query = (select(func.coalesce(subscribers.c.topics_key, "")).distinct()
                 .where(subscribers.c.status == SUBSCRIBED, _not_paused(now)))
        with self.engine.connect() as conn:
            return sorted(conn.execute(query).scalars())

    def _queue_variants(self, conn: Connection, edition_id: str, now: datetime, variants: EditionVariants) -> None:
        """Queue one ledger row per receiving subscriber, naming the variant their topics get."""
        for variant, digest in variants.digests.items():
            if variant:
                conn.execute(insert(edition_digests).values(edition_id=edition_id, variant=variant,
                                                            subject=digest.subject, html=digest.html,
                                                            text=digest.text))
        key = func.coalesce(subscribers.c.topics_key, "")
        for topics, routed in sorted(variants.routes.items()):
            if routed is None:
                continue
            conn.execute(insert(deliveries).from_select(
                ["edition_id", "subscriber_id", "status", "attempts", "updated_at", "variant"],
                select(literal(edition_id, String), subscribers.c.id, literal(PENDING, String),
                       literal(0, Integer), literal(now, UTCDateTime), literal(routed, String))
                .where(subscribers.c.status == SUBSCRIBED, _not_paused(now), key == topics,
                       ~_suppressed(subscribers.c.id))))
        unrouted = list(variants.routes)  # choices made after planning get the whole edition
        conn.execute(insert(deliveries).from_select(
            ["edition_id", "subscriber_id", "status", "attempts", "updated_at", "variant"],
            select(literal(edition_id, String), subscribers.c.id, literal(PENDING, String),
                   literal(0, Integer), literal(now, UTCDateTime), literal("", String))
            .where(subscribers.c.status == SUBSCRIBED, _not_paused(now), key.not_in(unrouted),
                   ~_suppressed(subscribers.c.id))))

    def edition_variants(self, edition_id: str) -> dict[str, StoredDigest]:
        """An edition's per-topic digests (not the whole-edition one)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(edition_digests).where(edition_digests.c.edition_id == edition_id,
                                                              edition_digests.c.variant != "")).all()
        return {row.variant: StoredDigest(row.subject, row.html, row.text) for row in rows}

    def claimed_variants(self, edition_id: str, from_subscriber: int, limit: int) -> dict[int, str]:
        """The variants of claimed rows from this subscriber on (a sender's batch), in one query."""
        query = (select(deliveries.c.subscriber_id, deliveries.c.variant)
                 .where(deliveries.c.edition_id == edition_id, deliveries.c.subscriber_id >= from_subscriber,
                        deliveries.c.status == SENDING)
                 .order_by(deliveries.c.subscriber_id).limit(limit))
        with self.engine.connect() as conn:
            return {row.subscriber_id: row.variant or "" for row in conn.execute(query)}

    def delivery_variant(self, edition_id: str, subscriber_id: int) -> str:
        with self.engine.connect() as conn:
            value = conn.execute(select(deliveries.c.variant).where(
                deliveries.c.edition_id == edition_id, deliveries.c.subscriber_id == subscriber_id)).scalar()
        return value or ""

    def withdraw_pending(self, subscriber_id: int, now: datetime) -> bool:
        """A pending signup withdrawn: unsubscribed, and its confirmation links spent."""
        with self.engine.begin() as conn:
            changed = conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id,
                                                             subscribers.c.status == PENDING_CONFIRMATION)
                                   .values(status=UNSUBSCRIBED, unsubscribed_at=now, updated_at=now)).rowcount
            conn.execute(update(signup_tokens).where(signup_tokens.c.subscriber_id == subscriber_id,
                                                     signup_tokens.c.used_at.is_(None)).values(used_at=now))
        return bool(changed)

    def profiles(self, subscriber_ids: list[int]) -> dict[int, Profile]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(subscribers).where(subscribers.c.id.in_(subscriber_ids))).all()
        return {row.id: self._profile(row) for row in rows}

    # -- bounces and suppression --------------------------------------------------------------

    def get_subscriber_by_id(self, subscriber_id: int) -> Subscriber | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
        return self._subscriber(row) if row else None

    def soft_bounces_since(self, subscriber_id: int, since: datetime) -> int:
        """Soft bounces counted since ``since``; several for one edition (delay warnings) count once."""
        query = (select(bounce_events.c.id, bounce_events.c.edition_id)
                 .where(bounce_events.c.subscriber_id == subscriber_id, bounce_events.c.kind == "soft",
                        bounce_events.c.created_at >= since))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return len({row.edition_id or f"event-{row.id}" for row in rows})

    def last_lifted(self, subscriber_id: int) -> datetime | None:
        with self.engine.connect() as conn:
            return conn.execute(select(func.max(suppressions.c.lifted_at))
                                .where(suppressions.c.subscriber_id == subscriber_id)).scalar_one_or_none()

    def record_bounce_event(self, subscriber_id: int, kind: str, reason: str, source: str, edition_id: str | None,
                            *, suppress: str | None = None, unsubscribe: bool = False) -> str:
        """Record one event and, in the same transaction, what the policy decided: suppress (with a reason)
        and/or unsubscribe.  Queued, deferred and claimed rows of the address are skipped at once, as for an
        unsubscribe, so a sender that claimed the row before finds it withdrawn.  Returns the outcome."""
        now = utcnow()
        outcome = "not counted" if kind == "not counted" else "counted"
        with self.engine.begin() as conn:
            if unsubscribe:
                changed = conn.execute(
                    update(subscribers).where(subscribers.c.id == subscriber_id, subscribers.c.status == SUBSCRIBED)
                    .values(status=UNSUBSCRIBED, unsubscribed_at=now, updated_at=now)).rowcount
                outcome = "unsubscribed" if changed else "already unsubscribed"
            if suppress:
                active = conn.execute(select(suppressions.c.id).where(
                    suppressions.c.subscriber_id == subscriber_id, suppressions.c.lifted_at.is_(None))).first()
                if active is None:
                    conn.execute(insert(suppressions).values(subscriber_id=subscriber_id, reason=suppress,
                                                             detail=reason[:2000], created_at=now))
                    outcome = "suppressed" if not unsubscribe else f"{outcome}, suppressed"
                elif not unsubscribe:
                    outcome = "already suppressed"
            if unsubscribe or suppress:
                why = "unsubscribed before sending" if unsubscribe and not suppress else f"suppressed: {suppress}"
                conn.execute(update(deliveries)
                             .where(deliveries.c.subscriber_id == subscriber_id,
                                    deliveries.c.status.in_([PENDING, SENDING, DEFERRED]))
                             .values(status=SKIPPED, reply=why, updated_at=now))
            conn.execute(insert(bounce_events).values(
                subscriber_id=subscriber_id, kind=kind, reason=reason[:2000], source=source, edition_id=edition_id,
                outcome=outcome, created_at=now))
        return outcome

    def active_suppression(self, subscriber_id: int) -> Suppression | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(suppressions).where(suppressions.c.subscriber_id == subscriber_id,
                                                          suppressions.c.lifted_at.is_(None))).first()
        return Suppression(**row._mapping) if row else None

    def lift_suppression(self, subscriber_id: int, reason: str) -> bool:
        """An operator's decision, kept with its reason; False when nothing was suppressed."""
        with self.engine.begin() as conn:
            return bool(conn.execute(update(suppressions)
                                     .where(suppressions.c.subscriber_id == subscriber_id,
                                            suppressions.c.lifted_at.is_(None))
                                     .values(lifted_at=utcnow(), lifted_reason=reason)).rowcount)

    def suppression_counts(self) -> dict[str, int]:
        """Active suppressions by reason."""
        query = (select(suppressions.c.reason, func.count()).where(suppressions.c.lifted_at.is_(None))
                 .group_by(suppressions.c.reason))
        with self.engine.connect() as conn:
            return {reason: count for reason, count in conn.execute(query)}

    def count_mailable(self) -> int:
        """Subscribed and not suppressed: who a new edition would be queued for."""
        query = (select(func.count()).select_from(subscribers)
                 .where(subscribers.c.status == SUBSCRIBED, ~_suppressed(subscribers.c.id)))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def bounce_counts_since(self, since: datetime) -> dict[str, int]:
        """Events by kind since a moment (for the complaint and bounce rates in status)."""
        query = (select(bounce_events.c.kind, func.count()).where(bounce_events.c.created_at >= since)
                 .group_by(bounce_events.c.kind))
        with self.engine.connect() as conn:
            return {kind: count for kind, count in conn.execute(query)}

    def sent_since(self, since: datetime) -> int:
        query = (select(func.count()).select_from(deliveries)
                 .where(deliveries.c.status == SENT, deliveries.c.updated_at >= since))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def iter_suppressed(self) -> Iterator[tuple[str, Suppression]]:
        """Every active suppression with its address, oldest first."""
        query = (select(subscribers.c.email, suppressions)
                 .join(subscribers, subscribers.c.id == suppressions.c.subscriber_id)
                 .where(suppressions.c.lifted_at.is_(None)).order_by(suppressions.c.id))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        for row in rows:
            values = row._mapping
            yield values["email"], Suppression(values["id"], values["subscriber_id"], values["reason"],
                                               values["detail"], values["created_at"], values["lifted_at"],
                                               values["lifted_reason"])

    def suppressed_among(self, emails: list[str]) -> set[str]:
        if not emails:
            return set()
        query = (select(subscribers.c.email).where(subscribers.c.email.in_(emails), _suppressed(subscribers.c.id)))
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def bounce_history(self, subscriber_id: int) -> tuple[list[BounceEvent], list[Suppression]]:
        """A subscriber's events and suppressions, oldest first."""
        with self.engine.connect() as conn:
            events = conn.execute(select(bounce_events).where(bounce_events.c.subscriber_id == subscriber_id)
                                  .order_by(bounce_events.c.id)).all()
            held = conn.execute(select(suppressions).where(suppressions.c.subscriber_id == subscriber_id)
                                .order_by(suppressions.c.id)).all()
        return [BounceEvent(**row._mapping) for row in events], [Suppression(**row._mapping) for row in held]

    def unrecorded_send_failures(self, edition_id: str) -> list[tuple[int, str, str]]:
        """(subscriber id, email, reply) of an edition's failed rows not yet looked at as bounces."""
        seen = (select(bounce_events.c.id)
                .where(bounce_events.c.subscriber_id == deliveries.c.subscriber_id,
                       bounce_events.c.edition_id == edition_id, bounce_events.c.source == "smtp").exists())
        query = (select(deliveries.c.subscriber_id, subscribers.c.email, deliveries.c.reply)
                 .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                 .where(deliveries.c.edition_id == edition_id, deliveries.c.status == FAILED, ~seen)
                 .order_by(deliveries.c.subscriber_id))
        with self.engine.connect() as conn:
            return [(row.subscriber_id, row.email, row.reply or "") for row in conn.execute(query)]

    def suppressed_failures(self, edition_id: str) -> int:
        """Failed rows of an edition whose address is suppressed (``send --retry-failed`` leaves them)."""
        query = (select(func.count()).select_from(deliveries)
                 .where(deliveries.c.edition_id == edition_id, deliveries.c.status == FAILED,
                        _suppressed(deliveries.c.subscriber_id)))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def mark_processed(self, source: str, key: str) -> bool:
        """True the first time a (source, key) is marked; False when it was handled before."""
        with self.engine.begin() as conn:
            result = conn.execute(self._insert_ignoring_conflicts(processed_messages, ["source", "key"])
                                  .values(source=source[:300], key=key[:300], processed_at=utcnow()))
        return bool(result.rowcount)

    @contextmanager
    def processing(self, source: str, key: str) -> Iterator[bool]:
        """Claim (source, key) for the block: True when this caller is the first (a concurrent copy gets
        False and must skip it); if the block fails, the claim is given back so a retry handles it."""
        claimed = self.mark_processed(source, key)
        try:
            yield claimed
        except BaseException:
            if claimed:
                self.release_processed(source, key)
            raise

    def release_processed(self, source: str, key: str) -> None:
        """Undo ``mark_processed`` when handling the message failed, so a retry handles it."""
        with self.engine.begin() as conn:
            conn.execute(processed_messages.delete().where(processed_messages.c.source == source[:300],
                                                           processed_messages.c.key == key[:300]))

    def is_processed(self, source: str, key: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(processed_messages.c.key).where(
                processed_messages.c.source == source[:300], processed_messages.c.key == key[:300])).first() is not None

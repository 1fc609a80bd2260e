"""Editions: their items, stored digests and per-topic variants, the ledger rows they queue, and
what status reads of them."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import (
    Integer,
    String,
    and_,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

from ..clock import utcnow
from .ledger import _due
from .rows import (
    Edition,
    EditionVariants,
    StoredDigest,
)
from .schema import (
    DEFERRED,
    FAILED,
    LEDGER_STATUSES,
    PENDING,
    SENDING,
    SUBSCRIBED,
    UTCDateTime,
    _not_paused,
    _suppressed,
    deliveries,
    edition_digests,
    edition_items,
    editions,
    subscribers,
)
from .store_base import StoreBase

log = logging.getLogger(__name__)


class EditionStore(StoreBase):
    """Editions as the run plans them and status reports them (the engine's per-message writes are in ledger.py)."""

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

    def requeue_failed(self, edition_id: str) -> int:
        """Put an edition's failed rows back in the queue, on purpose (``send --retry-failed``)."""
        with self.engine.begin() as conn:
            return conn.execute(update(deliveries)
                                .where(deliveries.c.edition_id == edition_id, deliveries.c.status == FAILED,
                                       ~_suppressed(deliveries.c.subscriber_id))  # bounces: never a suppressed one
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

    def in_flight(self, edition_id: str) -> list[str]:
        """The addresses of rows still 'sending': after a sender died, the messages the next run sends
        again (a server may have accepted one per connection in the instant before it died)."""
        query = (select(subscribers.c.email).join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                 .where(deliveries.c.edition_id == edition_id, deliveries.c.status == SENDING)
                 .order_by(subscribers.c.email))
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def failures(self, edition_id: str, limit: int = 50) -> list[tuple[str, str]]:
        query = (select(subscribers.c.email, deliveries.c.reply)
                 .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                 .where(deliveries.c.edition_id == edition_id, deliveries.c.status == FAILED)
                 .order_by(subscribers.c.email).limit(limit))
        with self.engine.connect() as conn:
            return [(row.email, row.reply or "") for row in conn.execute(query)]

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

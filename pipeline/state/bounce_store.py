"""Bounces, complaints and the suppression list; the processed markers that count each received message once."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import (
    func,
    insert,
    select,
    update,
)

from ..clock import utcnow
from .rows import (
    BounceEvent,
    SendFailure,
    Suppression,
)
from .schema import (
    DEFERRED,
    FAILED,
    PENDING,
    SENDING,
    SENT,
    SKIPPED,
    SUBSCRIBED,
    UNSUBSCRIBED,
    _suppressed,
    bounce_events,
    consent_events,
    deliveries,
    processed_messages,
    subscribers,
    suppressions,
)
from .store_base import StoreBase

log = logging.getLogger(__name__)

BEFORE_THE_LIFT = "before the lift: not suppressed"  # a bounce older than the operator's lift (fits outcome's 32)


class BounceStore(StoreBase):
    """What bounces/policy.py, the receivers and the status report read and write about bounces."""

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
                            *, suppress: str | None = None, unsubscribe_via: str | None = None,
                            at: datetime | None = None) -> str:
        """Record one event and, in the same transaction, what the policy decided: suppress (with a reason)
        and/or unsubscribe (``unsubscribe_via`` names how in the consent history: a complaint, a mailto).
        An unsubscribe is a withdrawal of consent, so it is recorded there like every other way out.
        Queued, deferred and claimed rows of the address are skipped at once, as for an unsubscribe, so a
        sender that claimed the row before finds it withdrawn.  ``at`` is when the event happened (default
        now; kept as its time): one from before an operator lifted the address's suppression suppresses
        nothing, checked in this transaction, since the operator decided after it.  Returns the outcome."""
        now = utcnow()
        at = at or now
        outcome = "not counted" if kind == "not counted" else "counted"
        unsubscribe = unsubscribe_via is not None
        with self.engine.begin() as conn:
            if unsubscribe_via is not None:
                changed = conn.execute(
                    update(subscribers).where(subscribers.c.id == subscriber_id, subscribers.c.status == SUBSCRIBED)
                    .values(status=UNSUBSCRIBED, unsubscribed_at=now, updated_at=now)).rowcount
                outcome = "unsubscribed" if changed else "already unsubscribed"
                if changed:
                    conn.execute(insert(consent_events).values(
                        subscriber_id=subscriber_id, at=now, action="unsubscribe", method=unsubscribe_via,
                        consent_text=None, detail={"source": source, "reason": reason[:300],
                                                   **({"edition": edition_id} if edition_id else {})}))
            if suppress and conn.execute(select(suppressions.c.id).where(
                    suppressions.c.subscriber_id == subscriber_id, suppressions.c.lifted_at >= at)).first():
                suppress = None  # lifted after it happened: the operator's word stands
                if not unsubscribe:
                    outcome = BEFORE_THE_LIFT
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
                outcome=outcome, created_at=at))
        return outcome

    def active_suppression(self, subscriber_id: int) -> Suppression | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(suppressions).where(suppressions.c.subscriber_id == subscriber_id,
                                                          suppressions.c.lifted_at.is_(None))).first()
        return Suppression(**row._mapping) if row else None

    def lift_suppression(self, subscriber_id: int, reason: str, now: datetime | None = None) -> bool:
        """An operator's decision, kept with its reason and time (bounces from before it no longer suppress);
        False when nothing was suppressed."""
        with self.engine.begin() as conn:
            return bool(conn.execute(update(suppressions)
                                     .where(suppressions.c.subscriber_id == subscriber_id,
                                            suppressions.c.lifted_at.is_(None))
                                     .values(lifted_at=now or utcnow(), lifted_reason=reason)).rowcount)

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

    def unrecorded_send_failures(self, edition_id: str) -> list[SendFailure]:
        """An edition's failed rows not yet looked at as bounces, each with when it failed."""
        seen = (select(bounce_events.c.id)
                .where(bounce_events.c.subscriber_id == deliveries.c.subscriber_id,
                       bounce_events.c.edition_id == edition_id, bounce_events.c.source == "smtp").exists())
        query = (select(deliveries.c.subscriber_id, subscribers.c.email, deliveries.c.reply, deliveries.c.updated_at)
                 .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                 .where(deliveries.c.edition_id == edition_id, deliveries.c.status == FAILED, ~seen)
                 .order_by(deliveries.c.subscriber_id))
        with self.engine.connect() as conn:
            return [SendFailure(row.subscriber_id, row.email, row.reply or "", row.updated_at)
                    for row in conn.execute(query)]

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
            # RETURNING, not rowcount: on PostgreSQL the driver may report -1 rows for a skipped insert.
            inserted = conn.execute(self._insert_ignoring_conflicts(processed_messages, ["source", "key"])
                                    .values(source=source[:300], key=key[:300], processed_at=utcnow())
                                    .returning(processed_messages.c.key)).first()
        return inserted is not None

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

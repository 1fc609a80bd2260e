"""Subscribers: add, import (merge), unsubscribe (with its consent event), look up, stream in batches, count."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import (
    func,
    insert,
    select,
    update,
)

from ..clock import utcnow
from .rows import (
    Profile,
    Subscriber,
)
from .schema import (
    DEFERRED,
    PENDING,
    PENDING_CONFIRMATION,
    SENDING,
    SKIPPED,
    SUBSCRIBED,
    UNSUBSCRIBED,
    _suppressed,
    consent_events,
    deliveries,
    signup_tokens,
    subscribers,
)
from .store_base import StoreBase

log = logging.getLogger(__name__)


class SubscriberStore(StoreBase):
    """The subscriber list as imports, exports, the desk and the edition planner read it."""

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
        a name or attribute differs (else counted unchanged).  Unsubscribed and suppressed ones are
        left exactly as they are (an import refuses them; it must not rewrite their name either).
        One round trip per batch, not per subscriber, so large imports stay fast."""
        now = utcnow()
        counts = {"added": 0, "updated": 0, "unchanged": 0, "unsubscribed": 0, "suppressed": 0}
        if not rows:
            return counts
        with self.engine.begin() as conn:
            known = {row.email: row for row in conn.execute(
                select(subscribers.c.id, subscribers.c.email, subscribers.c.status, subscribers.c.name,
                       subscribers.c.attributes, _suppressed(subscribers.c.id).label("suppressed"))
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
                if row.suppressed or row.status == UNSUBSCRIBED:
                    counts["suppressed" if row.suppressed else "unsubscribed"] += 1
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
                counts["updated" if values else "unchanged"] += 1
        return counts

    def subscribers_among(self, emails: list[str]) -> dict[str, tuple[Subscriber, bool]]:
        """The known ones of ``emails``, each with whether it is suppressed, in one query (an import's plan)."""
        if not emails:
            return {}
        query = select(subscribers, _suppressed(subscribers.c.id).label("suppressed")) \
            .where(subscribers.c.email.in_(emails))
        with self.engine.connect() as conn:
            return {row.email: (self._subscriber(row), bool(row.suppressed)) for row in conn.execute(query)}

    def unsubscribe(self, email: str, method: str = "operator", *, now: datetime | None = None,
                    detail: dict[str, Any] | None = None) -> bool:
        """Stop mailing an address, and record the withdrawal in its consent history (how: ``method``), in one
        transaction: a subscribed address is unsubscribed and its unsent deliveries skipped; a pending one is
        withdrawn and its confirmation links spent.  True when it was subscribed or pending.  Idempotent."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(select(subscribers.c.id, subscribers.c.status)
                               .where(subscribers.c.email == email)).first()
            if row is None or row.status not in (SUBSCRIBED, PENDING_CONFIRMATION):
                return False
            changed = conn.execute(
                update(subscribers).where(subscribers.c.id == row.id, subscribers.c.status == row.status)
                .values(status=UNSUBSCRIBED, unsubscribed_at=now, updated_at=now)).rowcount
            if not changed:
                return False  # another transaction changed it first, and recorded it
            if row.status == SUBSCRIBED:  # not yet sent editions must not reach this address either
                conn.execute(update(deliveries)
                             .where(deliveries.c.subscriber_id == row.id,
                                    deliveries.c.status.in_([PENDING, SENDING, DEFERRED]))
                             .values(status=SKIPPED, reply="unsubscribed before sending", updated_at=now))
            else:  # a pending address asked to be left alone: its confirmation links no longer work
                conn.execute(update(signup_tokens).where(signup_tokens.c.subscriber_id == row.id,
                                                         signup_tokens.c.used_at.is_(None)).values(used_at=now))
            conn.execute(insert(consent_events).values(subscriber_id=row.id, at=now, action="unsubscribe",
                                                       method=method, consent_text=None, detail=detail or {}))
        return True

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

    def profile(self, email: str | None = None, subscriber_id: int | None = None) -> Profile | None:
        where = subscribers.c.email == email if email is not None else subscribers.c.id == subscriber_id
        with self.engine.connect() as conn:
            row = conn.execute(select(subscribers).where(where)).first()
        return self._profile(row) if row else None

    def known_emails(self, emails: list[str]) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(subscribers.c.email).where(subscribers.c.email.in_(emails))).scalars())

    def ids_for(self, emails: list[str]) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {row.email: row.id for row in conn.execute(
                select(subscribers.c.email, subscribers.c.id).where(subscribers.c.email.in_(emails)))}

    def profiles(self, subscriber_ids: list[int]) -> dict[int, Profile]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(subscribers).where(subscribers.c.id.in_(subscriber_ids))).all()
        return {row.id: self._profile(row) for row in rows}

    def get_subscriber_by_id(self, subscriber_id: int) -> Subscriber | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
        return self._subscriber(row) if row else None

"""Sign-up's SQL: pending subscribers, confirmation tokens, preferences, the consent record, rate limits."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import (
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from ..clock import utcnow
from .rows import (
    ConsentEvent,
    Profile,
)
from .schema import (
    NOTICE_DROPPED,
    NOTICE_QUEUED,
    PENDING_CONFIRMATION,
    RATE_MEMORY,
    SUBSCRIBED,
    UNSUBSCRIBED,
    _not_paused,
    consent_events,
    notice_queue,
    rate_events,
    signup_tokens,
    subscribers,
)
from .store_base import StoreBase

log = logging.getLogger(__name__)


class SignupStore(StoreBase):
    """What pipeline/usecases/signup.py needs: double opt-in, preferences, consent, rate limits."""

    def start_signup(self, email: str, name: str | None, topics: str, now: datetime) -> tuple[str, Profile]:
        """Record a signup: 'new' (a new or unsubscribed address, now pending), 'pending' (still
        unconfirmed) or 'active' (already subscribed: nothing changes, so the form reveals nothing)."""
        with self.engine.begin() as conn:
            return _record_signup(conn, email, name, topics, now)

    def queue_signup(self, email: str, name: str | None, topics: str, now: datetime, *, consent_text: str,
                     consent_detail: dict[str, Any], resend_after: datetime) -> tuple[str, Profile, bool]:
        """A form's signup and its mail, in one transaction (one commit, whatever the address's state):
        the signup as ``start_signup`` records it, its consent event, and a notice queued for the drainer -
        a confirmation, or for an address already subscribed a note saying so - unless one was queued or
        a confirmation sent after ``resend_after``.  Returns the state, the profile and whether it queued."""
        # The same statements in every state, so the time of the answer tells nothing: the subscriber row
        # written (an already subscribed one unchanged), a consent event (the form was sent, with its
        # wording), and a queue row - one that is recorded as dropped when the address was mailed lately.
        with self.engine.begin() as conn:
            state, profile = _record_signup(conn, email, name, topics, now)
            conn.execute(insert(consent_events).values(subscriber_id=profile.id, at=now, action="subscribe",
                                                       method="form", consent_text=consent_text,
                                                       detail={**consent_detail, "state": state}))
            recent = conn.execute(select(notice_queue.c.id).where(
                notice_queue.c.subscriber_id == profile.id, notice_queue.c.created_at > resend_after,
                notice_queue.c.status != NOTICE_DROPPED).limit(1)).first()
            confirmed_recently = state == "pending" and profile.confirm_sent_at is not None \
                and profile.confirm_sent_at > resend_after
            queued = not (recent or confirmed_recently)
            conn.execute(insert(notice_queue).values(
                subscriber_id=profile.id, kind="subscribed" if state == "active" else "confirm",
                status=NOTICE_QUEUED if queued else NOTICE_DROPPED, attempts=0, created_at=now, due_at=now,
                finished_at=None if queued else now, last_error=None if queued else "mailed lately"))
        return state, profile, queued

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

    def issue_token(self, subscriber_id: int, token_hash: str, purpose: str, now: datetime,
                    expires_at: datetime) -> None:
        """Store a confirmation token (its hash only), before its mail goes out."""
        with self.engine.begin() as conn:
            conn.execute(insert(signup_tokens).values(token_hash=token_hash, subscriber_id=subscriber_id,
                                                      purpose=purpose, created_at=now, expires_at=expires_at))

    def confirmation_sent(self, subscriber_id: int, now: datetime) -> None:
        """Note that a confirmation reached the relay (a refused one is not noted, so it is tried again)."""
        with self.engine.begin() as conn:
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


def _record_signup(conn: Connection, email: str, name: str | None, topics: str, now: datetime) -> tuple[str, Profile]:
    """The signup's change to the subscriber row (see ``SignupStore.start_signup``), in the caller's transaction."""
    row = conn.execute(select(subscribers).where(subscribers.c.email == email)).first()
    if row is None:
        conn.execute(insert(subscribers).values(
            email=email, name=name, attributes={}, status=PENDING_CONFIRMATION, topics_key=topics,
            updated_at=now))
        state = "new"
    elif row.status == SUBSCRIBED:
        conn.execute(update(subscribers).where(subscribers.c.id == row.id).values(updated_at=row.updated_at))
        state = "active"  # the row written unchanged: this state costs what the others do
    else:
        values: dict[str, Any] = {"status": PENDING_CONFIRMATION, "topics_key": topics, "updated_at": now}
        if name:
            values["name"] = name
        if row.status == UNSUBSCRIBED:
            values["confirm_sent_at"] = None  # a fresh opt-in: not throttled by an old confirmation
        conn.execute(update(subscribers).where(subscribers.c.id == row.id).values(**values))
        state = "pending" if row.status == PENDING_CONFIRMATION else "new"
    row = conn.execute(select(subscribers).where(subscribers.c.email == email)).one()
    return state, StoreBase._profile(row)

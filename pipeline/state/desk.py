"""The editor's desk's state: its people, their server-side sessions, sign-in attempts and the audit log.

Its tables are schema 8 of ``schema.py``; like the rest of ``state/``, the only SQL the desk runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from .schema import (
    bounce_events,
    desk_audit,
    desk_login_attempts,
    desk_scheduled,
    desk_sessions,
    desk_users,
)
from .storage import Storage, consent_events, deliveries, editions, subscribers


@dataclass(frozen=True)
class DeskUser:
    id: int
    email: str
    role: str
    password_hash: str | None


@dataclass(frozen=True)
class DeskSession:
    id: str
    user_id: int | None
    data: dict[str, Any]
    created_at: datetime
    last_seen: datetime


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    who: str
    address: str
    action: str
    detail: str


@dataclass(frozen=True)
class ScheduledSend:
    id: int
    edition_id: str
    at: datetime
    created_by: str
    state: str
    note: str


@dataclass(frozen=True)
class RecipientDelivery:
    """One ledger row of one subscriber: what happened to one edition's message to them."""

    edition_id: str
    subject: str
    created_at: datetime
    status: str
    attempts: int
    reply: str | None
    updated_at: datetime


class DeskStore:
    """The desk's reads and writes over the state database's engine."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.engine = storage.engine

    # -- users ------------------------------------------------------------------------------------

    @staticmethod
    def _user(row: Any) -> DeskUser:
        return DeskUser(row.id, row.email, row.role, row.password_hash)

    def put_user(self, email: str, role: str, password_hash: str | None, now: datetime,
                 set_token_hash: str | None = None, set_token_expires: datetime | None = None) -> str:
        """Create the account or change its role and password; 'added' or 'updated'."""
        values = {"role": role, "password_hash": password_hash, "set_token_hash": set_token_hash,
                  "set_token_expires": set_token_expires}
        with self.engine.begin() as conn:
            found = conn.execute(select(desk_users.c.id).where(desk_users.c.email == email)).first()
            if found is None:
                conn.execute(insert(desk_users).values(email=email, created_at=now, **values))
                return "added"
            conn.execute(update(desk_users).where(desk_users.c.id == found.id).values(**values))
            return "updated"

    def user(self, *, email: str | None = None, user_id: int | None = None) -> DeskUser | None:
        where = desk_users.c.email == email if email is not None else desk_users.c.id == user_id
        with self.engine.connect() as conn:
            row = conn.execute(select(desk_users).where(where)).first()
        return self._user(row) if row else None

    def users(self) -> list[DeskUser]:
        with self.engine.connect() as conn:
            return [self._user(row) for row in conn.execute(select(desk_users).order_by(desk_users.c.email))]

    def set_password(self, user_id: int, password_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(desk_users).where(desk_users.c.id == user_id).values(
                password_hash=password_hash, set_token_hash=None, set_token_expires=None))

    def user_by_set_token(self, token_hash: str, now: datetime) -> DeskUser | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(desk_users).where(desk_users.c.set_token_hash == token_hash,
                                                        desk_users.c.set_token_expires > now)).first()
        return self._user(row) if row else None

    # -- sessions -----------------------------------------------------------------------------------

    def create_session(self, session_id: str, user_id: int | None, data: dict[str, Any], now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(desk_sessions).values(id=session_id, user_id=user_id, data=data, created_at=now,
                                                      last_seen=now))

    def session(self, session_id: str) -> DeskSession | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(desk_sessions).where(desk_sessions.c.id == session_id)).first()
        return DeskSession(row.id, row.user_id, dict(row.data or {}), row.created_at, row.last_seen) if row else None

    def save_session(self, session_id: str, data: dict[str, Any], now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(desk_sessions).where(desk_sessions.c.id == session_id).values(data=data,
                                                                                              last_seen=now))

    def touch_session(self, session_id: str, now: datetime) -> None:
        """The session was used: only its idle clock restarts (its data is saved by the request that changed it)."""
        with self.engine.begin() as conn:
            conn.execute(update(desk_sessions).where(desk_sessions.c.id == session_id).values(last_seen=now))

    def delete_session(self, session_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(desk_sessions).where(desk_sessions.c.id == session_id))

    def delete_sessions_of(self, user_id: int) -> int:
        """Logout everywhere: every session of this person ends."""
        with self.engine.begin() as conn:
            return conn.execute(delete(desk_sessions).where(desk_sessions.c.user_id == user_id)).rowcount

    def prune_sessions(self, idle_before: datetime, created_before: datetime) -> int:
        with self.engine.begin() as conn:
            return conn.execute(delete(desk_sessions).where(or_(desk_sessions.c.last_seen < idle_before,
                                                                desk_sessions.c.created_at < created_before))).rowcount

    # -- sign-in attempts ---------------------------------------------------------------------------

    def record_attempt(self, account: str, address: str, ok: bool, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(desk_login_attempts).values(account=account, address=address, ok=ok, at=now))

    def failures(self, since: datetime, *, account: str | None = None, address: str | None = None
                 ) -> tuple[int, datetime | None]:
        """Failed attempts since ``since`` (for an account: since its last success too), and the latest one."""
        t = desk_login_attempts
        where = [t.c.at >= since, t.c.ok.is_(False)]
        with self.engine.connect() as conn:
            if account is not None:
                where.append(t.c.account == account)
                last_ok = conn.execute(select(func.max(t.c.at)).where(t.c.account == account,
                                                                      t.c.ok.is_(True))).scalar()
                if last_ok is not None:
                    where.append(t.c.at > last_ok)
            if address is not None:
                where.append(t.c.address == address)
            count, latest = conn.execute(select(func.count(), func.max(t.c.at)).where(*where)).one()
        return int(count), latest

    # -- audit log ------------------------------------------------------------------------------------

    def audit(self, who: str, address: str, action: str, detail: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(desk_audit).values(at=now, who=who, address=address, action=action, detail=detail))

    def audit_log(self, limit: int = 200) -> list[AuditEntry]:
        query = select(desk_audit).order_by(desk_audit.c.id.desc()).limit(limit)  # as recorded
        with self.engine.connect() as conn:
            return [AuditEntry(row.at, row.who, row.address, row.action, row.detail) for row in conn.execute(query)]

    # -- scheduled sends ---------------------------------------------------------------------------------

    def schedule(self, edition_id: str, at: datetime, by: str) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(insert(desk_scheduled).values(edition_id=edition_id, at=at, created_by=by,
                                                                state="waiting", note=""))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def scheduled(self, state: str | None = "waiting") -> list[ScheduledSend]:
        query = select(desk_scheduled).order_by(desk_scheduled.c.at)
        if state is not None:
            query = query.where(desk_scheduled.c.state == state)
        with self.engine.connect() as conn:
            return [ScheduledSend(r.id, r.edition_id, r.at, r.created_by, r.state, r.note) for r in conn.execute(query)]

    def settle_scheduled(self, schedule_id: int, state: str, note: str = "") -> bool:
        """Move a waiting schedule to ``state``; False when it was not waiting (another thread took it)."""
        with self.engine.begin() as conn:
            return conn.execute(update(desk_scheduled).where(desk_scheduled.c.id == schedule_id,
                                                             desk_scheduled.c.state == "waiting")
                                .values(state=state, note=note)).rowcount == 1

    # -- the ledger, seen from one recipient ------------------------------------------------------

    def deliveries_to(self, email: str, edition_id: str | None = None) -> list[RecipientDelivery]:
        """Every ledger row of this address (or its row of one edition), newest edition first."""
        query = (select(deliveries.c.edition_id, editions.c.subject, editions.c.created_at, deliveries.c.status,
                        deliveries.c.attempts, deliveries.c.reply, deliveries.c.updated_at)
                 .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                 .join(editions, editions.c.id == deliveries.c.edition_id)
                 .where(subscribers.c.email == email)
                 .order_by(editions.c.created_at.desc()))
        if edition_id is not None:
            query = query.where(deliveries.c.edition_id == edition_id)
        with self.engine.connect() as conn:
            return [RecipientDelivery(*row) for row in conn.execute(query)]

    def unsubscribed_since(self, edition_id: str, since: datetime) -> int:
        """Recipients of the edition who withdrew since it was made: every way out writes an unsubscribe consent
        event (one-click, preferences, mailto, complaint, desk, command line), so all are counted."""
        query = (select(func.count(func.distinct(consent_events.c.subscriber_id)))
                 .select_from(consent_events.join(deliveries,
                                                  deliveries.c.subscriber_id == consent_events.c.subscriber_id))
                 .where(deliveries.c.edition_id == edition_id, consent_events.c.action == "unsubscribe",
                        consent_events.c.at >= since))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def feedback_since(self, edition_id: str, since: datetime) -> dict[str, int]:
        """Bounce events by kind (hard, soft, complaint, unsubscribe) of the edition's own recipients since
        it was made: someone the edition never went to is not its feedback."""
        query = (select(bounce_events.c.kind, func.count())
                 .select_from(bounce_events.join(deliveries,
                                                 deliveries.c.subscriber_id == bounce_events.c.subscriber_id))
                 .where(deliveries.c.edition_id == edition_id, bounce_events.c.created_at >= since)
                 .group_by(bounce_events.c.kind))
        with self.engine.connect() as conn:
            return {kind: int(count) for kind, count in conn.execute(query)}

    def search_subscribers(self, text: str, limit: int = 50) -> list[tuple[str, str | None, str]]:
        """Subscribers whose address or name contains ``text``: (email, name, status)."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").lower() + "%"
        query = (select(subscribers.c.email, subscribers.c.name, subscribers.c.status)
                 .where(or_(subscribers.c.email.like(pattern, escape="\\"),
                            func.lower(subscribers.c.name).like(pattern, escape="\\")))
                 .order_by(subscribers.c.email).limit(limit))
        with self.engine.connect() as conn:
            return [(row.email, row.name, row.status) for row in conn.execute(query)]

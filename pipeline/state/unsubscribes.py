"""Unsubscribes committed in groups: the web app's one-click POSTs at the server's pace.

A one-click unsubscribe is four statements (find the address, unsubscribe it, skip its unsent
deliveries, record the consent event).  Done one request at a time that is four transactions
and, on SQLite, four waits for the single writer.  Here every request that arrives while a
commit is running joins the next one: the first waiting request commits the whole group in
one transaction, and every request answers only after the transaction holding its unsubscribe
has committed (nothing is acknowledged that is not stored).  The statements are compiled once
(``Prepared``) and run on a driver cursor, as the send ledger's writes are.

Same rules as ``Storage.unsubscribe`` + ``Storage.withdraw_pending`` + ``record_consent``:
a subscribed address becomes unsubscribed and its pending/sending/deferred deliveries are
skipped; a pending one is withdrawn and its confirmation links spent; an event is recorded
only when something changed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, literal_column, or_, select, update

from .ledger import Prepared
from .schema import (
    DEFERRED,
    PENDING,
    PENDING_CONFIRMATION,
    SENDING,
    SKIPPED,
    SUBSCRIBED,
    UNSUBSCRIBED,
    consent_events,
    deliveries,
    signup_tokens,
    subscribers,
)
from .storage import Storage

_FIND = select(subscribers.c.id, subscribers.c.status).where(subscribers.c.email == bindparam("e"))
_LEAVE = (update(subscribers).where(subscribers.c.id == bindparam("i"), subscribers.c.status == bindparam("was"))
          .values(status=UNSUBSCRIBED, unsubscribed_at=bindparam("now"), updated_at=bindparam("now")))
_SKIP = (update(deliveries).where(deliveries.c.subscriber_id == bindparam("i"),
                                  or_(*(deliveries.c.status == unsent for unsent in (PENDING, SENDING, DEFERRED))))
         .values(status=SKIPPED, reply="unsubscribed before sending", updated_at=bindparam("now")))
_SPEND = (update(signup_tokens)
          .where(signup_tokens.c.subscriber_id == bindparam("i"), signup_tokens.c.used_at.is_(None))
          .values(used_at=bindparam("now")))
_EVENT = insert(consent_events).values(subscriber_id=bindparam("i"), at=bindparam("now"), action="unsubscribe",
                                       method=bindparam("method"), consent_text=None, detail=literal_column("'{}'"))


@dataclass
class _Request:
    email: str
    method: str
    now: datetime
    done: bool = False
    changed: bool = False
    error: BaseException | None = None


class UnsubscribeGroups:
    """``unsubscribe(email, method, now)`` from many threads; commits whatever is waiting together."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._waiting: list[_Request] = []
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        dialect = storage.engine.dialect
        self._find, self._leave, self._skip, self._spend, self._event = (
            Prepared(statement, dialect) for statement in (_FIND, _LEAVE, _SKIP, _SPEND, _EVENT))

    def unsubscribe(self, email: str, method: str, now: datetime) -> bool:
        """True when the address was subscribed or pending (and now is not); returns once committed."""
        request = _Request(email, method, now)
        with self._queue_lock:
            self._waiting.append(request)
        with self._commit_lock:  # the holder commits everything queued so far, ours included or not
            if not request.done:
                with self._queue_lock:
                    group, self._waiting = self._waiting, []
                self._commit(group)
        if request.error is not None:
            raise request.error
        return request.changed

    def _commit(self, group: list[_Request]) -> None:
        try:
            with self.storage._ledger_cursor() as cursor:  # one transaction on a driver cursor
                for request in group:
                    self._find.run(cursor, {"e": request.email})
                    row = cursor.fetchone()
                    if row is None or row[1] not in (SUBSCRIBED, PENDING_CONFIRMATION):
                        continue
                    subscriber_id, status = row
                    values = {"i": subscriber_id, "was": status, "now": request.now}
                    if not self._leave.run(cursor, values):
                        continue
                    (self._skip if status == SUBSCRIBED else self._spend).run(cursor, values)
                    self._event.run(cursor, {**values, "method": request.method})
                    request.changed = True
        except BaseException as exc:  # every request of the group learns the transaction failed
            for request in group:
                request.changed, request.error = False, exc
        for request in group:
            request.done = True

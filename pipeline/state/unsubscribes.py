"""Unsubscribes committed in groups: the web app's one-click POSTs at the server's pace.

A one-click unsubscribe is four statements (find the address, unsubscribe it, skip its unsent
deliveries, record the consent event).  Done one request at a time that is four transactions
and, on SQLite, four waits for the single writer.  Here every request that arrives while a
commit is running joins the next one: the first waiting request commits the whole group in
one transaction, and every request answers only after the transaction holding its unsubscribe
has committed (nothing is acknowledged that is not stored).  Each statement covers the whole
group (``IN`` over its addresses), so a group is six round trips however large; they are compiled
once per group size (``Prepared``) and run on a driver cursor, as the send ledger's writes are.

Same rules as ``Storage.unsubscribe``:
a subscribed address becomes unsubscribed and its pending/sending/deferred deliveries are
skipped; a pending one is withdrawn and its confirmation links spent; an event is recorded
only when something changed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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


def _ids(n: int) -> list:
    return [bindparam(f"i{k}") for k in range(n)]


def _statements(n: int) -> dict[str, Any]:
    """The group's statements for ``n`` addresses: each touches the whole group at once, so a group
    costs six round trips to the database however many requests it holds."""
    unsent = or_(*(deliveries.c.status == status for status in (PENDING, SENDING, DEFERRED)))
    leave = {was: (update(subscribers).where(subscribers.c.id.in_(_ids(n)), subscribers.c.status == was)
                   .values(status=UNSUBSCRIBED, unsubscribed_at=bindparam("now"), updated_at=bindparam("now"))
                   .returning(subscribers.c.id)) for was in (SUBSCRIBED, PENDING_CONFIRMATION)}
    return {
        "find": select(subscribers.c.id, subscribers.c.status, subscribers.c.email)
        .where(subscribers.c.email.in_([bindparam(f"e{k}") for k in range(n)])),
        "leave": leave[SUBSCRIBED], "withdraw": leave[PENDING_CONFIRMATION],
        "skip": (update(deliveries).where(deliveries.c.subscriber_id.in_(_ids(n)), unsent)
                 .values(status=SKIPPED, reply="unsubscribed before sending", updated_at=bindparam("now"))),
        "spend": (update(signup_tokens).where(signup_tokens.c.subscriber_id.in_(_ids(n)),
                                              signup_tokens.c.used_at.is_(None)).values(used_at=bindparam("now"))),
    }


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
        self._turn = threading.Condition()  # guards _waiting and _committing
        self._committing = False
        self._dialect = storage.engine.dialect
        self._by_size: dict[tuple[str, int], Prepared] = {}  # compiled once per statement and group size
        self._event = Prepared(_EVENT, self._dialect)

    def _prepared(self, name: str, n: int) -> Prepared:
        key = (name, n)
        if key not in self._by_size:
            self._by_size[key] = Prepared(_statements(n)[name], self._dialect)
        return self._by_size[key]

    def unsubscribe(self, email: str, method: str, now: datetime) -> bool:
        """True when the address was subscribed or pending (and now is not); returns once committed.

        Whoever finds no commit running leads the next one, for everything waiting; the others sleep
        until a commit ends and leave as soon as theirs is in (they never queue on a lock behind it)."""
        request = _Request(email, method, now)
        with self._turn:
            self._waiting.append(request)
            while self._committing and not request.done:
                self._turn.wait()
            if request.done:
                return self._result(request)
            self._committing = True
            group, self._waiting = self._waiting, []
        try:
            self._commit(group)
        finally:
            with self._turn:
                self._committing = False
                self._turn.notify_all()
        return self._result(request)

    @staticmethod
    def _result(request: _Request) -> bool:
        if request.error is not None:
            raise request.error
        return request.changed

    def _commit(self, group: list[_Request]) -> None:
        now = max(request.now for request in group)
        try:
            with self.storage._ledger_cursor() as cursor:  # one transaction on a driver cursor
                emails = sorted({request.email for request in group})
                self._prepared("find", len(emails)).run(cursor, {f"e{k}": e for k, e in enumerate(emails)})
                found = {email: (subscriber_id, status) for subscriber_id, status, email in cursor.fetchall()}
                changed: set[int] = set()
                for was, leave, follow in ((SUBSCRIBED, "leave", "skip"), (PENDING_CONFIRMATION, "withdraw", "spend")):
                    ids = sorted({i for i, status in found.values() if status == was})
                    if not ids:
                        continue
                    values = {"now": now, **{f"i{k}": i for k, i in enumerate(ids)}}
                    self._prepared(leave, len(ids)).run(cursor, values)
                    left = sorted(row[0] for row in cursor.fetchall())
                    if left:
                        self._prepared(follow, len(left)).run(cursor, {"now": now, **{f"i{k}": i
                                                                                    for k, i in enumerate(left)}})
                        changed.update(left)
                events = []
                for request in group:  # the first request for an address changed it; a second one in the group did not
                    subscriber_id = found.get(request.email, (None, None))[0]
                    if subscriber_id in changed:
                        changed.discard(subscriber_id)
                        request.changed = True
                        events.append(self._event.arguments({"i": subscriber_id, "now": request.now,
                                                             "method": request.method}))
                if events:
                    cursor.executemany(self._event.sql, events)
        except BaseException as exc:  # every request of the group learns the transaction failed
            for request in group:
                request.changed, request.error = False, exc
        for request in group:
            request.done = True

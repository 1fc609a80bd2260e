"""The send ledger as the engine uses it: claims, attempts, outcomes, leases, workers and their heartbeats.

The two writes made for every message are prepared once (``Prepared``) and run on a driver cursor."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    and_,
    any_,
    bindparam,
    func,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from ..clock import utcnow
from .rows import (
    Claim,
    Outcome,
    WorkerRecord,
)
from .schema import (
    _UNSETTLED,
    DEFERRED,
    LIVENESS_SPACE,
    PENDING,
    SENDING,
    WORK_CHANNEL,
    UTCDateTime,
    deliveries,
    subscribers,
    workers,
)
from .store_base import StoreBase

log = logging.getLogger(__name__)


class ArrayOf(ColumnElement[Any]):
    """PostgreSQL's ``ARRAY(subquery)``: the subquery runs once, before the outer statement."""

    inherit_cache = True
    _traverse_internals = [("query", InternalTraversal.dp_clauseelement)]

    def __init__(self, query: Select[Any]):
        self.query = query
        self.type = ARRAY(Integer)


@compiles(ArrayOf)
def _compile_array_of(element: ArrayOf, compiler: Any, **kw: Any) -> str:
    return f"ARRAY({compiler.process(element.query, **kw)})"


def claim_statement(edition_id: str, limit: int, worker: str, now: datetime, dialect: str = "sqlite"):
    """One statement that takes due rows for a worker.  On PostgreSQL the inner SELECT is
    FOR UPDATE SKIP LOCKED, so concurrent workers each get different rows without waiting,
    and it is written ``= ANY(ARRAY(...))`` so the planner runs it once even right after an
    edition was made, before the table has statistics (``IN (...)`` became a nested loop
    that took every row).  SQLite serialises writers, which gives the same guarantee."""
    candidates = (select(deliveries.c.subscriber_id)
                  .where(deliveries.c.edition_id == edition_id, _UNSETTLED, _due(now))
                  .order_by(deliveries.c.subscriber_id).limit(limit)
                  .with_for_update(skip_locked=True))
    chosen = (deliveries.c.subscriber_id == any_(ArrayOf(candidates)) if dialect == "postgresql"
              else deliveries.c.subscriber_id.in_(candidates.scalar_subquery()))
    return (update(deliveries)
            .where(deliveries.c.edition_id == edition_id, _due(now), chosen)
            .values(status=SENDING, claimed_by=worker, claimed_at=now, updated_at=now)
            .returning(deliveries.c.subscriber_id, deliveries.c.attempts, deliveries.c.first_attempt_at))


def _due(now: datetime):
    """Rows to send now: pending ones, and deferred ones whose retry time has come."""
    return or_(deliveries.c.status == PENDING,
               and_(deliveries.c.status == DEFERRED, deliveries.c.retry_at <= now))


# The two writes made for every message, as statements built once.
_OWN_ROW = and_(deliveries.c.edition_id == bindparam("b_edition"),
                deliveries.c.subscriber_id == bindparam("b_subscriber"),
                deliveries.c.status == SENDING, deliveries.c.claimed_by == bindparam("b_worker"))


RECORD_OUTCOME = (update(deliveries).where(_OWN_ROW)
                  .values(status=bindparam("b_status"), reply=bindparam("b_reply"), attempts=bindparam("b_attempts"),
                          retry_at=bindparam("b_retry_at", type_=UTCDateTime()),
                          updated_at=bindparam("b_now", type_=UTCDateTime()), claimed_by=None, claimed_at=None))


BEGIN_ATTEMPT = (update(deliveries).where(_OWN_ROW)
                 .values(claimed_at=bindparam("b_now", type_=UTCDateTime()),
                         first_attempt_at=func.coalesce(deliveries.c.first_attempt_at,
                                                        bindparam("b_now", type_=UTCDateTime()))))


class Prepared:
    """A statement compiled once for a dialect and run with ``exec_driver_sql``: its parameters go
    through the column types' own bind processors, so the SQL and the stored values are exactly what
    SQLAlchemy would send, without its per-execution compile-cache work (which cost more than the
    database itself for the two small writes each message makes)."""

    def __init__(self, statement: Any, dialect: Any):
        compiled = statement.compile(dialect=dialect)
        self.compiled = compiled
        self.sql = compiled.string
        self.order = list(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        self.processors = {name: processor for name, bind in compiled.binds.items()
                           if (processor := bind.type.bind_processor(dialect)) is not None}

    def arguments(self, params: dict[str, Any]) -> Any:
        values = self.compiled.construct_params(params)
        for name, processor in self.processors.items():
            if name in values:
                values[name] = processor(values[name])
        return tuple(values[name] for name in self.order) if self.order is not None else values

    def execute(self, conn: Connection, params: dict[str, Any]) -> int:
        """Run it; the number of rows changed."""
        return conn.exec_driver_sql(self.sql, self.arguments(params)).rowcount

    def run(self, cursor: Any, params: dict[str, Any]) -> int:
        """Run it on a driver cursor (``Storage._ledger_cursor``); the number of rows changed."""
        cursor.execute(self.sql, self.arguments(params))
        return cursor.rowcount


class WorkListener:
    def __init__(self, connection: Any):
        self.connection = connection

    def wait(self, timeout: float) -> bool:
        """True when work was announced within ``timeout`` seconds; False otherwise (or on SQLite)."""
        if self.connection is None:
            return False
        for _notice in self.connection.notifies(timeout=timeout, stop_after=1):
            return True
        return False


class LedgerStore(StoreBase):
    """Claim, begin, record: the per-message writes of the delivery engine (its ``Ledger``
    protocol), and the workers."""

    _ledger_writes: tuple[Prepared, Prepared] | None

    def release_stale(self, edition_id: str, claimed_before: datetime) -> int:
        """Give back rows whose sender is gone; they go out again with the same Message-ID.

        Gone means: claimed before ``claimed_before`` (a lease that ran out), or, on PostgreSQL,
        claimed by a worker whose liveness lock is free, which happens the moment its process
        dies, on any machine (see ``liveness``)."""
        with self.engine.begin() as conn:
            gone = deliveries.c.claimed_at <= claimed_before
            if self.dialect == "postgresql":
                holders = conn.execute(select(deliveries.c.claimed_by).distinct().where(
                    deliveries.c.edition_id == edition_id, deliveries.c.status == SENDING)).scalars().all()
                dead = [worker for worker in holders if worker and not self._alive(conn, worker)]
                if dead:
                    gone = or_(gone, deliveries.c.claimed_by.in_(dead))
            # Only rows nobody holds a lock on: a row being recorded by its (slow but live) sender is left
            # for the next beat, so two workers taking back rows at once, or one recording while another
            # takes back, never wait on each other (PostgreSQL would break such a cycle with an error).
            stale = (select(deliveries.c.subscriber_id)
                     .where(deliveries.c.edition_id == edition_id, deliveries.c.status == SENDING, gone)
                     .with_for_update(skip_locked=True))
            result = conn.execute(
                update(deliveries)
                .where(deliveries.c.edition_id == edition_id, deliveries.c.status == SENDING,
                       deliveries.c.subscriber_id.in_(stale.scalar_subquery()))
                .values(status=PENDING, claimed_by=None, claimed_at=None))
        return result.rowcount

    @staticmethod
    def _liveness_key(worker: str) -> int:
        return int.from_bytes(hashlib.sha256(worker.encode()).digest()[:4], "big", signed=True)

    def _alive(self, conn: Connection, worker: str) -> bool:
        """True while the worker's process holds its liveness lock."""
        key = {"space": LIVENESS_SPACE, "key": self._liveness_key(worker)}
        # Taking it means nobody holds it: that worker is gone (the lock ends with this transaction).
        return not conn.execute(text("SELECT pg_try_advisory_xact_lock(:space, :key)"), key).scalar_one()

    @contextmanager
    def liveness(self, worker: str) -> Iterator[None]:
        """Hold this worker's liveness lock while it sends (PostgreSQL; nothing on SQLite, where the run
        lock makes every leftover claim a dead sender's)."""
        if self.dialect != "postgresql":
            yield
            return
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:space, :key)"),
                         {"space": LIVENESS_SPACE, "key": self._liveness_key(worker)})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:space, :key)"),
                             {"space": LIVENESS_SPACE, "key": self._liveness_key(worker)})
                conn.commit()

    def claim(self, edition_id: str, limit: int, worker: str) -> list[Claim]:
        """Atomically move up to ``limit`` due rows to 'sending' for this worker."""
        with self._writes, self.engine.begin() as conn:
            claimed = conn.execute(claim_statement(edition_id, limit, worker, utcnow(), self.dialect)).all()
            if not claimed:
                return []
            rows = {row.subscriber_id: row for row in claimed}
            emails = conn.execute(select(subscribers.c.id, subscribers.c.email)
                                  .where(subscribers.c.id.in_(list(rows))).order_by(subscribers.c.id)).all()
        return [Claim(edition_id, row.id, row.email, rows[row.id].attempts, worker, rows[row.id].first_attempt_at)
                for row in emails]

    def _prepared(self) -> tuple[Prepared, Prepared]:
        if self._ledger_writes is None:
            dialect = self.engine.dialect
            self._ledger_writes = (Prepared(RECORD_OUTCOME, dialect), Prepared(BEGIN_ATTEMPT, dialect))
        return self._ledger_writes

    @staticmethod
    def _begin_params(claim: Claim, now: datetime) -> dict[str, Any]:
        return {"b_edition": claim.edition_id, "b_subscriber": claim.subscriber_id, "b_worker": claim.worker,
                "b_now": now}

    @staticmethod
    def _record_params(o: Outcome, now: datetime) -> dict[str, Any]:
        return {"b_edition": o.claim.edition_id, "b_subscriber": o.claim.subscriber_id, "b_worker": o.claim.worker,
                "b_status": o.status, "b_reply": o.reply, "b_attempts": o.attempts, "b_retry_at": o.retry_at,
                "b_now": now}

    @contextmanager
    def _ledger_cursor(self) -> Iterator[Any]:
        """One transaction on a driver cursor, for the writes made for every message: the same
        statements and values as through SQLAlchemy (``Prepared``), without its per-execution work
        (two thirds of the 130 us each message's ledger write took).  Committed on success, rolled
        back on any error, which reaches the caller as the driver raised it."""
        with self._writes:
            connection = self.engine.raw_connection()
            try:
                cursor = connection.cursor()
                try:
                    yield cursor
                    connection.commit()
                except BaseException as exc:
                    if isinstance(exc, self.engine.dialect.loaded_dbapi.Error) and \
                            self.engine.dialect.is_disconnect(exc, connection.dbapi_connection, cursor):
                        # As SQLAlchemy does on a lost connection (a restarted server): drop this one
                        # and every pooled one, so the next write opens a fresh connection.
                        connection.invalidate(exc)
                        self.engine.dispose()
                        raise
                    connection.rollback()
                    raise
                finally:
                    cursor.close()
            finally:
                connection.close()  # back to the pool (an invalidated one is discarded)

    def begin_attempt(self, claim: Claim) -> bool:
        """Mark the start of one send attempt; False when the row is no longer this worker's to send
        (the subscriber unsubscribed after the claim, or the claim was taken back)."""
        begin = self._prepared()[1]
        with self._ledger_cursor() as cursor:
            return bool(begin.run(cursor, self._begin_params(claim, utcnow())))

    def record_results(self, results: list[Outcome]) -> None:
        """Record outcomes in one transaction; a row is only changed by the worker that holds it."""
        if not results:
            return
        record = self._prepared()[0]
        now = utcnow()
        with self._ledger_cursor() as cursor:
            for outcome in results:
                record.run(cursor, self._record_params(outcome, now))

    def record_and_begin(self, outcome: Outcome, claim: Claim) -> bool:
        """A connection's last outcome and its next attempt in one transaction (one commit per
        message): the outcome is stored before the next message goes out, and the next row is
        still checked to be this worker's (an unsubscribe since the claim withdraws it)."""
        record, begin = self._prepared()
        now = utcnow()
        with self._ledger_cursor() as cursor:
            record.run(cursor, self._record_params(outcome, now))
            return bool(begin.run(cursor, self._begin_params(claim, now)))

    def renew_leases(self, worker: str) -> int:
        """Extend the lease on every row this worker holds: it is alive and still sending them.

        Rows another transaction holds are skipped (PostgreSQL): those are this worker's own sends,
        recording one row and beginning the next, whose claimed_at they set anyway.  Waiting on them
        instead could deadlock against such a send (it locks row a then row b; this update, scanning
        in another order, holds b and waits for a): seen as a worker stopping with an error under load."""
        own = deliveries.c.status == SENDING, deliveries.c.claimed_by == worker
        free = select(deliveries.c.edition_id, deliveries.c.subscriber_id).where(*own).with_for_update(skip_locked=True)
        with self._writes, self.engine.begin() as conn:
            return conn.execute(update(deliveries)
                                .where(*own, tuple_(deliveries.c.edition_id, deliveries.c.subscriber_id).in_(free))
                                .values(claimed_at=utcnow())).rowcount

    def heartbeat(self, worker: str, host: str, pid: int) -> None:
        """Record that a send worker is alive (its row is made on the first beat)."""
        now = utcnow()
        with self.engine.begin() as conn:
            beat = conn.execute(update(workers).where(workers.c.id == worker).values(heartbeat_at=now))
            if not beat.rowcount:
                conn.execute(self._insert_ignoring_conflicts(workers, ["id"]).values(
                    id=worker, host=host, pid=pid, started_at=now, heartbeat_at=now))

    def forget_worker(self, worker: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(workers.delete().where(workers.c.id == worker))

    def live_workers(self, since: datetime) -> list[WorkerRecord]:
        """Workers whose last heartbeat is newer than ``since``, with how many rows each holds."""
        held = (select(deliveries.c.claimed_by, func.count().label("held"), func.min(deliveries.c.claimed_at)
                       .label("oldest")).where(deliveries.c.status == SENDING).group_by(deliveries.c.claimed_by)
                .subquery())
        query = (select(workers, held.c.held, held.c.oldest).outerjoin(held, held.c.claimed_by == workers.c.id)
                 .where(workers.c.heartbeat_at >= since).order_by(workers.c.started_at))
        with self.engine.connect() as conn:
            return [WorkerRecord(r.id, r.host, r.pid, r.started_at, r.heartbeat_at, r.held or 0,
                                 UTCDateTime().process_result_value(r.oldest, self.engine.dialect)
                                 if isinstance(r.oldest, datetime) else None)
                    for r in conn.execute(query)]

    @contextmanager
    def work_listener(self) -> Iterator[WorkListener]:
        """Something idle workers wait on: PostgreSQL notifications (LISTEN before looking for work,
        so no notification falls in between), or nothing on SQLite (the caller polls with backoff)."""
        if self.dialect != "postgresql":
            yield WorkListener(None)
            return
        raw = self.engine.raw_connection()
        try:
            driver: Any = raw.driver_connection  # psycopg's own connection: LISTEN needs autocommit
            driver.autocommit = True
            driver.execute(f"LISTEN {WORK_CHANNEL}")
            yield WorkListener(driver)
        finally:
            raw.close()

    def notify_work(self) -> None:
        """Wake idle workers (PostgreSQL LISTEN/NOTIFY); SQLite workers poll."""
        if self.dialect == "postgresql":
            with self.engine.begin() as conn:
                conn.execute(text(f"NOTIFY {WORK_CHANNEL}"))

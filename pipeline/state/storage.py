"""All state, behind one small module: subscribers, editions, the send ledger, runs, source cache.

SQLAlchemy Core on SQLite by default (a file in the state folder); the same code
runs on PostgreSQL, where several send workers claim ledger rows with
``FOR UPDATE SKIP LOCKED``.  No other module writes SQL.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    TypeDecorator,
    and_,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from ..errors import PipelineError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 7
# Advisory lock keys (PostgreSQL): one per thing that must happen in one process at a time.
MIGRATION_LOCK_KEY = 0x5049_5045_0001
RUN_LOCK_KEY = 0x5049_5045_0002
LEADER_LOCK_KEY = 0x5049_5045_0003
WORK_CHANNEL = "pipeline_work"
LIVENESS_SPACE = 0x5049  # the first key of the two-key advisory locks that say a worker is alive
DATABASE_FILE = "pipeline.db"

SUBSCRIBED = "subscribed"
UNSUBSCRIBED = "unsubscribed"
# A ledger row: pending -> sending -> sent | failed | deferred (due again at retry_at) | skipped (unsubscribed).
PENDING, SENDING, SENT, FAILED, DEFERRED, SKIPPED = "pending", "sending", "sent", "failed", "deferred", "skipped"
LEDGER_STATUSES = (PENDING, SENDING, SENT, FAILED, DEFERRED, SKIPPED)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = MetaData()

schema_info = Table("schema_info", metadata, Column("version", Integer, nullable=False))

subscribers = Table(
    "subscribers", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(300)),
    Column("attributes", JSON, nullable=False, default=dict),
    Column("status", String(16), nullable=False),
    Column("subscribed_at", UTCDateTime),
    Column("unsubscribed_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)

editions = Table(
    "editions", metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("subject", Text, nullable=False),
    Column("item_ids", JSON, nullable=False),
    Column("recipients", Integer, nullable=False, default=0),
)

edition_items = Table(
    "edition_items", metadata,
    Column("item_id", String(1000), primary_key=True),  # an item goes out in one edition only
    Column("edition_id", String(64), ForeignKey("editions.id"), nullable=False),
)

edition_digests = Table(  # schema 4: the rendered digest, so any worker sends the same bytes without content
    "edition_digests", metadata,
    Column("edition_id", String(64), ForeignKey("editions.id"), primary_key=True),
    Column("variant", String(200), primary_key=True, default=""),  # "" is the whole edition
    Column("subject", Text, nullable=False),
    Column("html", Text, nullable=False),
    Column("text", Text, nullable=False),
)

workers = Table(  # schema 4: send workers and their heartbeats, for leases, the shared rate and status
    "workers", metadata,
    Column("id", String(100), primary_key=True),
    Column("host", String(300), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
)

deliveries = Table(
    "deliveries", metadata,
    Column("edition_id", String(64), ForeignKey("editions.id"), primary_key=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id"), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("reply", Text),
    Column("claimed_by", String(100)),
    Column("claimed_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("retry_at", UTCDateTime),  # schema 3: when a deferred row is due again
    Column("first_attempt_at", UTCDateTime),  # schema 3: deferrals give up this long after it
    Index("deliveries_by_status", "edition_id", "status"),
)

# Schema 7: what a claim reads.  Only unsettled rows are in it (a partial index), in subscriber
# order, so taking the next batch costs the same at the start of an edition and after 100,000 rows
# were sent; the claim query repeats the index's condition word for word, which is how SQLite and
# PostgreSQL see that the index applies.
_UNSETTLED = deliveries.c.status.in_([literal_column(f"'{PENDING}'"), literal_column(f"'{DEFERRED}'")])
DUE_INDEX = Index("deliveries_unsettled", deliveries.c.edition_id, deliveries.c.subscriber_id,
                  sqlite_where=_UNSETTLED, postgresql_where=_UNSETTLED)

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(100), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("status", String(16), nullable=False),
    Column("summary", JSON, nullable=False, default=dict),
)

sources = Table(
    "sources", metadata,
    Column("name", String(200), primary_key=True),
    Column("configured_url", Text, nullable=False),  # as in config.yaml
    Column("url", Text, nullable=False),  # where it is now fetched from, after permanent redirects
    Column("etag", Text),
    Column("last_modified", Text),
    Column("fetched_at", UTCDateTime),
    Column("status", Text),
    Column("item_count", Integer, nullable=False, default=0),
)

source_items = Table(
    "source_items", metadata,
    Column("source", String(200), ForeignKey("sources.name"), primary_key=True),
    Column("item_id", String(1000), primary_key=True),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("updated", UTCDateTime),
    Column("data", JSON, nullable=False),
)


def _migrate_1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[subscribers, editions, edition_items, deliveries, runs])


def _migrate_2(conn: Connection) -> None:
    metadata.create_all(conn, tables=[sources, source_items])


def _add_column(conn: Connection, table: Table, name: str) -> None:
    column = table.c[name]
    kind = column.type.compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}"))


def _migrate_3(conn: Connection) -> None:
    from sqlalchemy import inspect

    present = {column["name"] for column in inspect(conn).get_columns("deliveries")}
    for name in ("retry_at", "first_attempt_at"):
        if name not in present:  # a new database got them from schema 1's create_all
            _add_column(conn, deliveries, name)


def _migrate_4(conn: Connection) -> None:
    metadata.create_all(conn, tables=[edition_digests, workers])


def _reserved(conn: Connection) -> None:
    """Versions 5 and 6 belong to work merged separately (signup, bounces); the merge renumbers."""


def _migrate_7(conn: Connection) -> None:
    DUE_INDEX.create(conn, checkfirst=True)  # a new database got it from schema 1's create_all


# Each entry takes the schema from version N-1 to N.  Append; never edit a released one.
MIGRATIONS = {1: _migrate_1, 2: _migrate_2, 3: _migrate_3, 4: _migrate_4, 5: _reserved, 6: _reserved,
              7: _migrate_7}


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
class WorkerRecord:
    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    held: int  # rows it holds in 'sending'
    oldest_claim: datetime | None


@dataclass(frozen=True)
class RunRecord:
    id: int
    job: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    summary: dict[str, Any]


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

    def execute(self, conn: Connection, params: dict[str, Any]) -> int:
        """Run it; the number of rows changed."""
        values = self.compiled.construct_params(params)
        for name, processor in self.processors.items():
            if name in values:
                values[name] = processor(values[name])
        args: Any = tuple(values[name] for name in self.order) if self.order is not None else values
        return conn.exec_driver_sql(self.sql, args).rowcount


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


class Storage:
    def __init__(self, url: str):
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        self.engine: Engine = create_engine(url, **kwargs)
        self._ledger_writes: tuple[Prepared, Prepared] | None = None
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

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

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

    @staticmethod
    def _subscriber(row) -> Subscriber:
        return Subscriber(row.id, row.email, row.name, dict(row.attributes or {}), row.status,
                          row.subscribed_at, row.unsubscribed_at)

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

    def merge_subscribers(self, rows: list[tuple[str, str | None, dict[str, Any]]]) -> dict[str, int]:
        """Merge a batch of (email, name, attributes) in one transaction: new ones are added,
        known ones updated, unsubscribed ones left unsubscribed.  One round trip per batch,
        not per subscriber, so large imports stay fast."""
        now = utcnow()
        counts = {"added": 0, "updated": 0, "unsubscribed": 0}
        if not rows:
            return counts
        with self.engine.begin() as conn:
            known = {row.email: row for row in conn.execute(
                select(subscribers.c.id, subscribers.c.email, subscribers.c.status, subscribers.c.attributes)
                .where(subscribers.c.email.in_([email for email, _, _ in rows])))}
            new = [{"email": email, "name": name, "attributes": attributes, "status": SUBSCRIBED,
                    "subscribed_at": now, "updated_at": now}
                   for email, name, attributes in rows if email not in known]
            if new:
                conn.execute(insert(subscribers), new)
            counts["added"] = len(new)
            for email, name, attributes in rows:
                row = known.get(email)
                if row is None:
                    continue
                values: dict[str, Any] = {"updated_at": now}
                if name:
                    values["name"] = name
                if attributes:
                    values["attributes"] = {**(row.attributes or {}), **attributes}
                conn.execute(update(subscribers).where(subscribers.c.id == row.id).values(**values))
                counts["unsubscribed" if row.status == UNSUBSCRIBED else "updated"] += 1
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
                       record_items: bool = True) -> bool:
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
            queued = conn.execute(insert(deliveries).from_select(
                ["edition_id", "subscriber_id", "status", "attempts", "updated_at"],
                select(literal(edition_id, String), subscribers.c.id, literal(PENDING, String),
                       literal(0, Integer), literal(now, UTCDateTime))
                .where(subscribers.c.status == SUBSCRIBED),
            ))
            count = queued.rowcount if queued.rowcount is not None and queued.rowcount >= 0 else None
            if count is None:
                count = conn.execute(select(func.count()).select_from(deliveries)
                                     .where(deliveries.c.edition_id == edition_id)).scalar_one()
            conn.execute(update(editions).where(editions.c.id == edition_id).values(recipients=count))
        return True

    def _insert_ignoring_conflicts(self, table: Table, keys: list[str]):
        """INSERT ... ON CONFLICT DO NOTHING: of several processes inserting the same row, one wins, none fails."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing(index_elements=keys)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=keys)

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
            result = conn.execute(
                update(deliveries)
                .where(deliveries.c.edition_id == edition_id, deliveries.c.status == SENDING, gone)
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

    def begin_attempt(self, claim: Claim) -> bool:
        """Mark the start of one send attempt; False when the row is no longer this worker's to send
        (the subscriber unsubscribed after the claim, or the claim was taken back)."""
        begin = self._prepared()[1]
        with self._writes, self.engine.begin() as conn:
            return bool(begin.execute(conn, self._begin_params(claim, utcnow())))

    def record_results(self, results: list[Outcome]) -> None:
        """Record outcomes in one transaction; a row is only changed by the worker that holds it."""
        if not results:
            return
        record = self._prepared()[0]
        now = utcnow()
        with self._writes, self.engine.begin() as conn:
            for outcome in results:
                record.execute(conn, self._record_params(outcome, now))

    def record_and_begin(self, outcome: Outcome, claim: Claim) -> bool:
        """A connection's last outcome and its next attempt in one transaction (one commit per
        message): the outcome is stored before the next message goes out, and the next row is
        still checked to be this worker's (an unsubscribe since the claim withdraws it)."""
        record, begin = self._prepared()
        now = utcnow()
        with self._writes, self.engine.begin() as conn:
            record.execute(conn, self._record_params(outcome, now))
            return bool(begin.execute(conn, self._begin_params(claim, now)))

    def renew_leases(self, worker: str) -> int:
        """Extend the lease on every row this worker holds: it is alive and still sending them."""
        with self._writes, self.engine.begin() as conn:
            return conn.execute(update(deliveries)
                                .where(deliveries.c.status == SENDING, deliveries.c.claimed_by == worker)
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

    def source_state(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sources).where(sources.c.name == name)).first()
        return dict(row._mapping) if row else None

    def all_source_states(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(select(sources).order_by(sources.c.name))]

    def save_source_state(self, name: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(select(sources.c.name).where(sources.c.name == name)).first()
            if exists:
                conn.execute(update(sources).where(sources.c.name == name).values(**values))
            else:
                conn.execute(insert(sources).values(name=name, **{"item_count": 0, **values}))

    def stored_source_items(self, name: str) -> list[dict[str, Any]]:
        """What a source delivered before, newest first: used when it fails or answers 304."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(source_items).where(source_items.c.source == name)).all()
        return [dict(row._mapping) for row in rows]

    def merge_source_items(self, name: str, entries: list[tuple[str, str, dict[str, Any]]],
                           now: datetime) -> dict[str, dict[str, Any]]:
        """Store (item_id, content_hash, data) rows; a row whose hash is unchanged keeps its stored data.

        Returns the stored row for every given id, so the caller sees first-seen times
        and whether the content changed.
        """
        with self.engine.begin() as conn:
            known = {row.item_id: dict(row._mapping) for row in conn.execute(
                select(source_items).where(source_items.c.source == name,
                                           source_items.c.item_id.in_([i for i, _, _ in entries])))}
            for item_id, content_hash, data in entries:
                row = known.get(item_id)
                if row is None:
                    values = {"source": name, "item_id": item_id, "first_seen": now, "content_hash": content_hash,
                              "updated": None, "data": data}
                    conn.execute(insert(source_items).values(**values))
                    known[item_id] = values
                elif row["content_hash"] != content_hash:
                    values = {"content_hash": content_hash, "updated": now, "data": data}
                    conn.execute(update(source_items).where(source_items.c.source == name,
                                                            source_items.c.item_id == item_id).values(**values))
                    row.update(values)
        return known

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

"""The state database's schema: every table (SQLAlchemy Core), the status words, and the migrations
from each schema version to the next.  The stores (``*_store.py``, ``ledger.py``) query these tables;
nothing outside ``state/`` imports them.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Connection

SCHEMA_VERSION = 9
# Advisory lock keys (PostgreSQL): one per thing that must happen in one process at a time.
MIGRATION_LOCK_KEY = 0x5049_5045_0001
RUN_LOCK_KEY = 0x5049_5045_0002
LEADER_LOCK_KEY = 0x5049_5045_0003
WORK_CHANNEL = "pipeline_work"
LIVENESS_SPACE = 0x5049  # the first key of the two-key advisory locks that say a worker is alive
DATABASE_FILE = "pipeline.db"

SUBSCRIBED = "subscribed"
UNSUBSCRIBED = "unsubscribed"
PENDING_CONFIRMATION = "pending"  # schema 5: signed up, not yet confirmed; never mailed an edition
# A ledger row: pending -> sending -> sent | failed | deferred (due again at retry_at) | skipped (unsubscribed).
PENDING, SENDING, SENT, FAILED, DEFERRED, SKIPPED = "pending", "sending", "sent", "failed", "deferred", "skipped"
LEDGER_STATUSES = (PENDING, SENDING, SENT, FAILED, DEFERRED, SKIPPED)



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


# -- schema 5: signup, consent, topics (double opt-in) ------------------------------------------------
# Columns added to existing tables (NULL means: the default) and the tables of their own.

subscribers.append_column(Column("topics_key", String(200)))  # sorted topic names joined by ","; "" or NULL: all
subscribers.append_column(Column("paused_until", UTCDateTime))  # no edition is queued for them before this
subscribers.append_column(Column("confirmed_at", UTCDateTime))  # when the double opt-in (or the operator) confirmed
subscribers.append_column(Column("confirm_sent_at", UTCDateTime))  # last confirmation mail: resend at most hourly
deliveries.append_column(Column("variant", String(200)))  # which edition_digests variant this row gets; NULL: ""

signup_tokens = Table(  # confirmation links: a random token, stored only as its SHA-256
    "signup_tokens", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id"), nullable=False),
    Column("purpose", String(20), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    Index("signup_tokens_by_subscriber", "subscriber_id"),
)

consent_events = Table(  # every subscribe, confirm, preference change and unsubscribe (GDPR Art. 7)
    "consent_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("action", String(20), nullable=False),  # subscribe, confirm, preferences, unsubscribe
    Column("method", String(20), nullable=False),  # form, import, operator, one-click, mailto, preferences, link
    Column("consent_text", Text),
    Column("detail", JSON, nullable=False, default=dict),
    Index("consent_events_by_subscriber", "subscriber_id", "id"),
)

rate_events = Table(  # hits counted by the signup rate limits (keys are hashed IPs, addresses, or global)
    "rate_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(100), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index("rate_events_by_key", "key", "at"),
    Index("rate_events_by_time", "at"),  # hits older than a day are dropped, whatever their key
)


RATE_MEMORY = timedelta(days=1)  # how long rate-limit hits are kept (the limits count per hour)


def _not_paused(now: datetime):
    """Subscribers who take editions now: not paused, or their pause is over."""
    return or_(subscribers.c.paused_until.is_(None), subscribers.c.paused_until <= now)


def topics_key(names: list[str] | tuple[str, ...] | set[str]) -> str:
    """The one stored form of a topic choice (and the digest variant's name): sorted, joined by ","."""
    return ",".join(sorted({name for name in names if name}))


# -- schema 7: bounces, complaints and the suppression list --------------------------------
# Every bounce, complaint and mailto unsubscribe that named a subscriber, with what it caused: the history.
bounce_events = Table(
    "bounce_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # hard, soft, complaint, unsubscribe
    Column("reason", Text, nullable=False),
    Column("source", String(100), nullable=False),  # smtp, mailbox, receiver, webhook:ses, ...
    Column("edition_id", String(64)),
    Column("outcome", String(32), nullable=False),  # counted, suppressed, unsubscribed, ...
    Column("created_at", UTCDateTime, nullable=False),  # when it happened, if known; else when recorded
    Index("bounce_events_by_subscriber", "subscriber_id", "created_at"),
)

# One row per suppression; it is active while lifted_at is NULL.  Lifting keeps the row (and its reason).
suppressions = Table(
    "suppressions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id"), nullable=False),
    Column("reason", String(32), nullable=False),  # hard-bounce, soft-bounces, complaint
    Column("detail", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("lifted_at", UTCDateTime),
    Column("lifted_reason", Text),
    Index("suppressions_by_subscriber", "subscriber_id", "lifted_at"),
)

# Messages of a bounce mailbox (or webhook deliveries) already handled: nothing is counted twice.
processed_messages = Table(
    "processed_messages", metadata,
    Column("source", String(300), primary_key=True),
    Column("key", String(300), primary_key=True),
    Column("processed_at", UTCDateTime, nullable=False),
)


# -- schema 9: the sign-up's notice queue --------------------------------------------------
# A form submission queues its mail here in the request's own transaction; the web server's
# drainer sends it after the response (``signup.Signups.deliver_queued``), so no answer waits
# on the relay and every address's answer takes the same time.
NOTICE_QUEUED, NOTICE_SENDING, NOTICE_SENT, NOTICE_FAILED, NOTICE_DROPPED = (
    "queued", "sending", "sent", "failed", "dropped")
notice_queue = Table(
    "notice_queue", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id"), nullable=False),
    Column("kind", String(20), nullable=False),  # confirm, subscribed (the address already receives it)
    Column("status", String(16), nullable=False),  # queued -> sending -> sent | failed | dropped; or queued again
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),  # a retry waits until then
    Column("claimed_at", UTCDateTime),  # when a drainer took it (a claim older than the lease is taken back)
    Column("finished_at", UTCDateTime),
    Column("last_error", Text),
    Index("notice_queue_due", "status", "due_at"),
    Index("notice_queue_by_subscriber", "subscriber_id", "created_at"),
)

# -- schema 8: the editor's desk (its store is ``desk.py``) ------------------------------------------

desk_users = Table(
    "desk_users", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # editor | admin
    Column("password_hash", Text),  # argon2id; NULL until set
    Column("set_token_hash", String(64)),  # a one-time set-password link (sha256 of the token)
    Column("set_token_expires", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
)

desk_sessions = Table(  # server-side sessions: the cookie holds a random token, the row holds its sha256
    "desk_sessions", metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("desk_users.id")),
    Column("data", JSON, nullable=False, default=dict),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
)

desk_login_attempts = Table(
    "desk_login_attempts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account", String(320), nullable=False),
    Column("address", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("ok", Boolean, nullable=False),
    Index("desk_attempts_by_account", "account", "at"),
    Index("desk_attempts_by_address", "address", "at"),
)

desk_audit = Table(
    "desk_audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("who", String(320), nullable=False),
    Column("address", String(64), nullable=False, default=""),
    Column("action", String(64), nullable=False),
    Column("detail", Text, nullable=False, default=""),
)

desk_scheduled = Table(  # editions an admin scheduled on the desk, sent by the desk's server when due
    "desk_scheduled", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("edition_id", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("created_by", String(320), nullable=False),
    Column("state", String(16), nullable=False),  # waiting | started | cancelled | skipped
    Column("note", Text, nullable=False, default=""),
)

DESK_TABLES = [desk_users, desk_sessions, desk_login_attempts, desk_audit, desk_scheduled]

def _suppressed(subscriber_id):
    """True for a subscriber with an active suppression (used where editions are queued)."""
    return (select(suppressions.c.id)
            .where(suppressions.c.subscriber_id == subscriber_id, suppressions.c.lifted_at.is_(None)).exists())


def _migrate_1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[subscribers, editions, edition_items, deliveries, runs])


def _migrate_2(conn: Connection) -> None:
    metadata.create_all(conn, tables=[sources, source_items])


def _add_column(conn: Connection, table: Table, name: str) -> None:
    column = table.c[name]
    kind = column.type.compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}"))


def _migrate_3(conn: Connection) -> None:
    from sqlalchemy import inspect  # only an old database being migrated

    present = {column["name"] for column in inspect(conn).get_columns("deliveries")}
    for name in ("retry_at", "first_attempt_at"):
        if name not in present:  # a new database got them from schema 1's create_all
            _add_column(conn, deliveries, name)


def _migrate_4(conn: Connection) -> None:
    metadata.create_all(conn, tables=[edition_digests, workers])


def _migrate_5(conn: Connection) -> None:
    """Signup, consent and topics: new columns on subscribers and deliveries, three tables."""
    from sqlalchemy import inspect  # only an old database being migrated

    for table, names in ((subscribers, ("topics_key", "paused_until", "confirmed_at", "confirm_sent_at")),
                         (deliveries, ("variant",))):
        present = {column["name"] for column in inspect(conn).get_columns(table.name)}
        for name in names:
            if name not in present:  # a new database got them from schema 1's create_all
                _add_column(conn, table, name)
    metadata.create_all(conn, tables=[signup_tokens, consent_events, rate_events])


def _migrate_6(conn: Connection) -> None:
    """The partial index that keeps claims constant-time however many rows were sent."""
    DUE_INDEX.create(conn, checkfirst=True)  # a new database got it from schema 1's create_all


def _migrate_7(conn: Connection) -> None:
    """Bounces, complaints and the suppression list."""
    metadata.create_all(conn, tables=[bounce_events, suppressions, processed_messages])


def _migrate_8(conn: Connection) -> None:
    """The editor's desk: its people, sessions, sign-in attempts and audit log (tables in ``state/desk.py``)."""
    metadata.create_all(conn, tables=DESK_TABLES)


def _migrate_9(conn: Connection) -> None:
    """The sign-up's notice queue."""
    metadata.create_all(conn, tables=[notice_queue])


# Each entry takes the schema from version N-1 to N.  Append; never edit a released one.
MIGRATIONS = {1: _migrate_1, 2: _migrate_2, 3: _migrate_3, 4: _migrate_4, 5: _migrate_5, 6: _migrate_6,
              7: _migrate_7, 8: _migrate_8, 9: _migrate_9}

"""All state, behind one small module: subscribers, editions, the send ledger, runs, source cache.

SQLAlchemy Core on SQLite by default (a file in the state folder); the same code
runs on PostgreSQL, where several send workers claim ledger rows with
``FOR UPDATE SKIP LOCKED``.  No other module writes SQL.
"""

from __future__ import annotations

import logging
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import (
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine

from ..errors import PipelineError
from .bounce_store import BounceStore
from .edition_store import EditionStore
from .files import private_file, private_folder
from .ledger import LedgerStore, claim_statement
from .notice_store import NoticeStore
from .rows import (
    BounceEvent,
    Claim,
    ConsentEvent,
    Edition,
    EditionVariants,
    Outcome,
    Profile,
    QueuedNotice,
    RunRecord,
    SourceState,
    StoredDigest,
    StoredEntry,
    Subscriber,
    Suppression,
    WorkerRecord,
)
from .schema import (
    DATABASE_FILE,
    DEFERRED,
    FAILED,
    LEADER_LOCK_KEY,
    LEDGER_STATUSES,
    MIGRATION_LOCK_KEY,
    MIGRATIONS,
    NOTICE_DROPPED,
    NOTICE_FAILED,
    NOTICE_QUEUED,
    NOTICE_SENDING,
    NOTICE_SENT,
    PENDING,
    PENDING_CONFIRMATION,
    RUN_LOCK_KEY,
    SCHEMA_VERSION,
    SENDING,
    SENT,
    SKIPPED,
    SUBSCRIBED,
    UNSUBSCRIBED,
    UTCDateTime,
    consent_events,
    deliveries,
    editions,
    metadata,
    runs,
    schema_info,
    subscribers,
    topics_key,
)
from .signup_store import SignupStore
from .source_store import SourceStore
from .subscriber_store import SubscriberStore

# What the rest of the pipeline imports from here (the rows and the status words live in rows.py and schema.py).
__all__ = [
    "BounceEvent",
    "Claim",
    "ConsentEvent",
    "DEFERRED",
    "Edition",
    "EditionVariants",
    "FAILED",
    "LEADER_LOCK_KEY",
    "LEDGER_STATUSES",
    "NOTICE_DROPPED",
    "NOTICE_FAILED",
    "NOTICE_QUEUED",
    "NOTICE_SENDING",
    "NOTICE_SENT",
    "Outcome",
    "PENDING",
    "PENDING_CONFIRMATION",
    "Profile",
    "QueuedNotice",
    "RUN_LOCK_KEY",
    "RunRecord",
    "SCHEMA_VERSION",
    "SENDING",
    "SENT",
    "SKIPPED",
    "SUBSCRIBED",
    "SourceState",
    "Storage",
    "StoredDigest",
    "StoredEntry",
    "Subscriber",
    "Suppression",
    "UNSUBSCRIBED",
    "UTCDateTime",
    "WorkerRecord",
    "claim_statement",
    "consent_events",
    "state_database_url",
    "deliveries",
    "editions",
    "runs",
    "schema_info",
    "subscribers",
    "topics_key",

]

log = logging.getLogger(__name__)



def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the sender
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def state_database_url(state_folder: Path, override: str | None = None) -> str:
    if override:
        return override
    return f"sqlite:///{private_file(private_folder(state_folder) / DATABASE_FILE)}"


class Storage(SubscriberStore, SignupStore, NoticeStore, EditionStore, LedgerStore, BounceStore, SourceStore):
    """The state database: one facade over the stores of each domain (mixins, so every call site keeps
    ``storage.method``); a consumer names the few methods it uses in its own ``Protocol``."""

    def __init__(self, url: str):
        self.url = url
        # Statement parameters (subscriber addresses) never reach a log, even at -vv.
        kwargs: dict[str, Any] = {"future": True, "hide_parameters": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        self.engine: Engine = create_engine(url, **kwargs)
        self._ledger_writes = None
        # SQLite lets one connection write at a time and makes the others sleep and retry (in
        # steps of milliseconds); the send threads of this process queue here instead, so the
        # next writer starts the moment the last one commits.  PostgreSQL needs no such thing.
        self._writes: Any = threading.Lock() if url.startswith("sqlite") else nullcontext()
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.migrate()

    @classmethod
    def for_state(cls, state_folder: Path, override: str | None = None) -> Storage:
        return cls(state_database_url(state_folder, override))

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

    # -- editions -----------------------------------------------------------------------------

    # -- ledger -------------------------------------------------------------------------------

    # -- remote sources -----------------------------------------------------------------------

    # -- runs ---------------------------------------------------------------------------------

    # -- signup, consent, topics ----------------------------------------------------------------

    # -- bounces and suppression --------------------------------------------------------------


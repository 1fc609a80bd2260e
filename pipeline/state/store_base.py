"""What every store of the state database shares: the engine, the write lock, the row readers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from .rows import Profile, Subscriber


class StoreBase:
    """The connection and helpers each store (``*_store.py``, ``ledger.py``) builds on; ``Storage`` sets them."""

    url: str
    engine: Engine
    _writes: Any  # a lock on SQLite (one writer at a time), nothing on PostgreSQL

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @staticmethod
    def _subscriber(row) -> Subscriber:
        return Subscriber(row.id, row.email, row.name, dict(row.attributes or {}), row.status,
                          row.subscribed_at, row.unsubscribed_at)

    def _insert_ignoring_conflicts(self, table: Table, keys: list[str]):
        """INSERT ... ON CONFLICT DO NOTHING: of several processes inserting the same row, one wins, none fails."""
        if self.engine.dialect.name == "postgresql":

            return pg_insert(table).on_conflict_do_nothing(index_elements=keys)

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=keys)

    @staticmethod
    def _profile(row) -> Profile:
        return Profile(row.id, row.email, row.name, row.status,
                       tuple(t for t in (row.topics_key or "").split(",") if t), row.paused_until,
                       row.confirmed_at, row.confirm_sent_at, row.subscribed_at, row.unsubscribed_at)

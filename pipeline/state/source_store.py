"""Remote sources between fetches (conditional GET state) and the entries each delivered; the run log."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import (
    insert,
    select,
    update,
)

from ..clock import utcnow
from .rows import (
    RunRecord,
    SourceState,
    StoredEntry,
)
from .schema import (
    runs,
    source_items,
    sources,
)
from .store_base import StoreBase

log = logging.getLogger(__name__)


class SourceStore(StoreBase):
    """What sources/remote.py remembers per source, and the runs status reports."""

    @staticmethod
    def _source_state(row: Any) -> SourceState:
        return SourceState(row.name, row.configured_url, row.url, row.etag, row.last_modified, row.fetched_at,
                           row.status, row.item_count or 0)

    def source_state(self, name: str) -> SourceState | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sources).where(sources.c.name == name)).first()
        return self._source_state(row) if row else None

    def all_source_states(self) -> list[SourceState]:
        with self.engine.connect() as conn:
            return [self._source_state(row) for row in conn.execute(select(sources).order_by(sources.c.name))]

    def save_source_state(self, name: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(select(sources.c.name).where(sources.c.name == name)).first()
            if exists:
                conn.execute(update(sources).where(sources.c.name == name).values(**values))
            else:
                conn.execute(insert(sources).values(name=name, **{"item_count": 0, **values}))

    def stored_source_items(self, name: str) -> list[StoredEntry]:
        """What a source delivered before: used when it fails or answers 304."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(source_items).where(source_items.c.source == name)).all()
        return [StoredEntry(row.item_id, row.first_seen, dict(row.data), row.updated, row.content_hash)
                for row in rows]

    def merge_source_items(self, name: str, entries: list[tuple[str, str, dict[str, Any]]], now: datetime) -> None:
        """Store (item_id, content_hash, data) rows: new ones are first seen now; a row whose hash changed
        gets the new data and an updated time; an unchanged one keeps what it had."""
        with self.engine.begin() as conn:
            known = dict(conn.execute(
                select(source_items.c.item_id, source_items.c.content_hash)
                .where(source_items.c.source == name,
                       source_items.c.item_id.in_([i for i, _, _ in entries]))).all())
            for item_id, content_hash, data in entries:
                if item_id not in known:
                    conn.execute(insert(source_items).values(source=name, item_id=item_id, first_seen=now,
                                                             content_hash=content_hash, updated=None, data=data))
                    known[item_id] = content_hash
                elif known[item_id] != content_hash:
                    conn.execute(update(source_items)
                                 .where(source_items.c.source == name, source_items.c.item_id == item_id)
                                 .values(content_hash=content_hash, updated=now, data=data))
                    known[item_id] = content_hash

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

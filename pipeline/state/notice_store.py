"""The notice queue's SQL: sign-up mails claimed by a drainer, and what became of each."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select, update

from .rows import QueuedNotice
from .schema import NOTICE_QUEUED, NOTICE_SENDING, notice_queue
from .store_base import StoreBase


class NoticeStore(StoreBase):
    """What ``Signups.deliver_queued`` needs: claim due notices, record each outcome, count the backlog."""

    def claim_notices(self, now: datetime, lease_before: datetime, limit: int = 50) -> list[QueuedNotice]:
        """Take up to ``limit`` due notices for this drainer: queued ones whose retry time came, and ones a
        drainer claimed before ``lease_before`` and never finished (its process died mid-send).  Rows
        another transaction holds are skipped (PostgreSQL), so drainers on several machines share the queue
        and none sends a notice another is sending."""
        due = or_((notice_queue.c.status == NOTICE_QUEUED) & (notice_queue.c.due_at <= now),
                  (notice_queue.c.status == NOTICE_SENDING) & (notice_queue.c.claimed_at <= lease_before))
        # One statement: on SQLite it takes the write lock at once (a read first would go stale under a
        # second drainer); on PostgreSQL its subquery locks the rows it picks and skips those others hold.
        picked = (select(notice_queue.c.id).where(due).order_by(notice_queue.c.id).limit(limit)
                  .with_for_update(skip_locked=True))
        with self._writes, self.engine.begin() as conn:
            rows = conn.execute(update(notice_queue).where(notice_queue.c.id.in_(picked.scalar_subquery()), due)
                                .values(status=NOTICE_SENDING, claimed_at=now, attempts=notice_queue.c.attempts + 1)
                                .returning(notice_queue.c.id, notice_queue.c.subscriber_id, notice_queue.c.kind,
                                           notice_queue.c.attempts, notice_queue.c.created_at)).all()
        return sorted((QueuedNotice(row.id, row.subscriber_id, row.kind, row.attempts, row.created_at)
                       for row in rows), key=lambda notice: notice.id)

    def finish_notice(self, notice_id: int, status: str, now: datetime, *, error: str | None = None,
                      due_at: datetime | None = None) -> None:
        """Record a claimed notice's outcome: sent, failed, dropped, or queued again until ``due_at``."""
        values: dict[str, object] = {"status": status, "last_error": error, "claimed_at": None}
        values.update({"due_at": due_at} if status == NOTICE_QUEUED else {"finished_at": now})
        with self._writes, self.engine.begin() as conn:
            conn.execute(update(notice_queue).where(notice_queue.c.id == notice_id).values(**values))

    def notice_counts(self) -> dict[str, int]:
        """How many notices are in each state (for ``status``)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(notice_queue.c.status, func.count()).group_by(notice_queue.c.status))
            return {status: count for status, count in rows}

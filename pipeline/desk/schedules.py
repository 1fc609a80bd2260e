"""Editions scheduled on the desk: kept in the state database (``desk_scheduled``), started by the desk's
server when their time comes, if the next edition is still the one that was scheduled (a story added since
means an admin looks again)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from .. import usecases as use_cases
from ..config import Config
from ..state.desk import DeskStore, ScheduledSend
from ..state.storage import Storage
from .sending import sendable

log = logging.getLogger(__name__)

TICK_SECONDS = 30.0


def run_due(config: Config, storage: Storage, now: datetime,
            start: Callable[[str, str], object]) -> list[ScheduledSend]:
    """Start every waiting schedule that is due; one whose edition changed, or that the pre-send checks would
    stop, is skipped, with the reason kept."""

    store = DeskStore(storage)
    started = []
    for item in [s for s in store.scheduled() if s.at <= now]:
        plan = use_cases.send_dry_run(config, at=item.at)  # as it was planned: with the stories due by then
        if plan.edition.edition_id != item.edition_id or not sendable(plan):
            stops = plan.blocked + plan.refused
            note = (f"the next edition is {plan.edition.edition_id or 'none'} ({plan.edition.reason}), not "
                    f"{item.edition_id}" if plan.edition.edition_id != item.edition_id or not stops else
                    f"edition {item.edition_id} fails {len(stops)} pre-send check(s): "
                    + "; ".join(str(finding) for finding in stops)) + "; look at it and schedule again"
            if store.settle_scheduled(item.id, "skipped", note):
                store.audit(item.created_by, "scheduler", "scheduled send skipped", note, now)
            continue
        if store.settle_scheduled(item.id, "started"):  # the send's own outcome is audited when it is over
            store.audit(item.created_by, "scheduler", "scheduled send started", f"edition {item.edition_id}", now)
            start(item.edition_id, item.created_by)
            started.append(item)
    return started


class Ticker:
    """A thread of the desk's server that starts due schedules; it reads the database only while some wait."""

    def __init__(self, config: Config, storage: Storage, clock: Callable[[], datetime],
                 start: Callable[[str, str], object]):
        self.config, self.storage, self.clock, self.start_send = config, storage, clock, start
        self.waiting = bool(DeskStore(storage).scheduled())
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="desk schedules", daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(TICK_SECONDS):
            if not self.waiting:
                continue
            try:
                run_due(self.config, self.storage, self.clock(), self.start_send)
                self.waiting = bool(DeskStore(self.storage).scheduled())
            except Exception:  # noqa: BLE001 - the next tick tries again; the server goes on
                log.exception("desk: starting a scheduled send failed")

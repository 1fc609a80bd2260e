"""Remote feeds turned into clean Items: every configured source fetched concurrently, parsed,
normalised and stored.

Every source is isolated: whatever goes wrong is one log line naming the source,
and the items seen from it before stay in the outputs, because they live in the
state database.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ..clock import utcnow
from ..config import Config, Fetch, RemoteSource
from ..items import Item
from ..state.storage import SourceState, Storage
from .fetch import Fetched, SourceError, fetch, make_client
from .normalise import content_hash, entry_data, item_from_row, item_id_for, select_items
from .parse import parse

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)


@dataclass
class SourceReport:
    name: str
    ok: bool
    status: str
    items: list[Item]



def _current(state: SourceState | None, source: RemoteSource) -> SourceState:
    """The stored state if it belongs to the URL configured now; a changed URL starts afresh
    (no redirect target, ETag or Last-Modified carried over from the old one)."""
    return state if state and state.configured_url == source.url else SourceState(source.name)


def _fetch_and_parse(client: httpx.Client, source: RemoteSource, settings: Fetch, state: SourceState):
    fetched = fetch(client, state.url or source.url, settings, state)
    if fetched.status == 304:
        return fetched, None
    return fetched, parse(fetched)


def _store_entries(storage: Storage, source: RemoteSource, fetched: Fetched, parsed, known: bool, now: datetime) -> str:
    feed, entries = parsed
    if not known:  # source_items rows need their source's row first
        storage.save_source_state(source.name, configured_url=source.url, url=source.url, status="new")
    stored = [(item_id_for(raw), entry_data(raw, source, feed, fetched.url)) for raw in entries]
    for position, (_item_id, data) in enumerate(stored):
        # Undated entries seen in one fetch would share one first-seen second (the W3C validator warns about
        # equal atom:updated values); the feed's order, kept with the row, spaces them a second apart.
        data["seen_order"] = position
    unique = {item_id: data for item_id, data in stored}  # a feed repeating an id: the last wins
    storage.merge_source_items(source.name, [(i, content_hash(d), d) for i, d in unique.items()], now)
    return f"ok ({len(unique)} entries)"


def read_remote(config: Config, storage: Storage) -> tuple[list[Item], list[SourceReport]]:
    """Fetch every configured source concurrently; store what they give; return items from all of them."""
    if not config.sources:
        return [], []
    rows = {source.name: storage.source_state(source.name) for source in config.sources}
    states = {source.name: _current(rows[source.name], source) for source in config.sources}
    with make_client(config.fetch) as client, ThreadPoolExecutor(max_workers=config.fetch.concurrency) as pool:
        futures = {source.name: pool.submit(_fetch_and_parse, client, source, config.fetch, states[source.name])
                   for source in config.sources}
        outcomes = {}
        for name, future in futures.items():
            try:
                outcomes[name] = future.result()
            except SourceError as exc:
                outcomes[name] = exc
            except Exception as exc:  # noqa: BLE001 - one broken source must never stop the others
                outcomes[name] = SourceError(f"{type(exc).__name__}: {exc}")
    items: list[Item] = []
    reports = []
    now = utcnow()
    for source in config.sources:
        outcome, state = outcomes[source.name], states[source.name]
        url = state.url or source.url
        if isinstance(outcome, SourceError):
            ok, status = False, str(outcome)
            values = {"url": url, "etag": state.etag, "last_modified": state.last_modified,
                      "status": f"error: {outcome}"}
        else:
            fetched, parsed = outcome
            if fetched.moved_to:
                log.warning("source %s moved permanently to %s; fetching it from there from now on",
                            source.name, fetched.moved_to)
            ok = True
            status = ("not modified (304)" if parsed is None
                      else _store_entries(storage, source, fetched, parsed, rows[source.name] is not None, now))
            values = {"url": fetched.moved_to or url, "etag": fetched.etag, "last_modified": fetched.last_modified,
                      "status": status}
        kept = select_items([item_from_row(row, source) for row in storage.stored_source_items(source.name)], source)
        storage.save_source_state(source.name, configured_url=source.url, fetched_at=now, item_count=len(kept),
                                  **values)
        if ok:
            log.info("source %s: %s, %d items", source.name, status, len(kept))
        else:
            log.warning("source %s (%s): %s; keeping %d items seen before", source.name, source.url, status, len(kept))
        reports.append(SourceReport(source.name, ok, status, kept))
        items.extend(kept)
    return items, reports


def stored_remote(config: Config, storage: Storage) -> list[Item]:
    """What every source gave at its last fetch, without fetching or writing anything."""
    items: list[Item] = []
    for source in config.sources:
        items.extend(select_items([item_from_row(row, source) for row in storage.stored_source_items(source.name)],
                                  source))
    return items

"""Editions: which items go out together, and the one place that chooses them.

An edition is the set of items not sent before (or the newest N); its id is a hash
of its item ids, so running the same edition again is recognised.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config
from ..errors import PipelineError
from ..items import Item, newest_first
from ..state.storage import Edition, Storage, StoredDigest

log = logging.getLogger(__name__)


def edition_id_for(item_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(item_ids)).encode("utf-8")).hexdigest()[:16]


def newest_items(items: list[Item], config: Config) -> list[Item]:
    """What a digest shows when there is no edition: the newest ``digest.limit`` items."""
    return newest_first(items)[: config.digest.limit]


def next_items(items: list[Item], storage: Storage, config: Config) -> list[Item]:
    """The items of the next edition: new ones only, or simply the newest N."""
    newest = newest_first(items)
    if config.require_delivery().edition == "new":
        already = storage.sent_item_ids()
        newest = [item for item in newest if item.id not in already]
    return newest[: config.digest.limit]


def items_of(edition: Edition, items: list[Item]) -> list[Item]:
    """The items an edition was made of, newest first; warns about any that are gone."""
    by_id = {item.id: item for item in items}
    missing = [i for i in edition.item_ids if i not in by_id]
    if missing:
        log.warning("edition %s: %d items no longer in the sources: %s", edition.id, len(missing), ", ".join(missing))
    return newest_first([by_id[i] for i in edition.item_ids if i in by_id])


def items_to_look_at(items: list[Item], storage: Storage, config: Config) -> list[Item]:
    """What a look before sending shows: the next edition, else the latest one, else the newest items."""
    chosen = next_items(items, storage, config)
    latest = storage.latest_edition()
    if not chosen and latest is not None:
        chosen = items_of(latest, items)
    chosen = chosen or newest_items(items, config)
    if not chosen:
        raise PipelineError("no items to show")
    return chosen


@dataclass
class EditionPlan:
    """What this run does about editions: the edition (if any), its items, and why."""

    edition_id: str | None
    items: list[Item]
    created: bool = False
    reason: str = ""


def plan_edition(items: list[Item], storage: Storage, config: Config,
                 digest: Callable[[str, list[Item]], StoredDigest], *, dry_run: bool = False) -> EditionPlan:
    """Create the next edition if there is something new and someone to send it to.

    ``digest(edition_id, items)`` gives the edition's rendered digest, stored with it so
    any worker sends the same bytes; the caller renders it once and keeps it for
    everything else the run does with it.
    """
    chosen = next_items(items, storage, config)
    if not chosen:
        return EditionPlan(None, [], reason="no new items since the last edition")
    edition_id = edition_id_for([item.id for item in chosen])
    if storage.get_edition(edition_id):
        return EditionPlan(edition_id, chosen, reason="edition exists already")
    if storage.count_mailable() == 0:  # nobody subscribed, or every subscriber suppressed
        return EditionPlan(None, chosen, reason="no subscribers")
    if dry_run:
        return EditionPlan(edition_id, chosen, reason="would create the edition")
    from .topics import plan_variants  # only editions with topics: an unchanged run never renders variants

    created = storage.create_edition(edition_id, [item.id for item in chosen], digest(edition_id, chosen),
                                     record_items=config.require_delivery().edition == "new",
                                     variants=plan_variants(edition_id, chosen, storage, config, digest))
    if created:
        storage.notify_work()  # idle workers on other machines start at once
    edition = storage.get_edition(edition_id)
    log.info("edition %s: %d items, queued for %d subscribers", edition_id, len(chosen),
             edition.recipients if edition else 0)
    return EditionPlan(edition_id, chosen, created=created,
                       reason="new edition" if created else "edition made by another process")

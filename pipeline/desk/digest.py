"""What the desk shows about digests and editions: the next digest as a subscriber gets it, an edition's
counts, and the pipeline's health, each made from the use cases (``pipeline.usecases``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .. import usecases as use_cases
from ..config import Config
from ..delivery.editions import edition_id_for, items_to_look_at
from ..environment import lint_secret
from ..items import Item
from ..mail.edition import EditionMail
from ..mail.lint import Finding
from ..publish.digest import archive_url
from ..sources.merge import merge_items
from ..state.desk import DeskStore
from ..state.storage import Edition, Storage
from ..usecases import RunContext, open_storage, read_items


@dataclass(frozen=True)
class DigestPreview:
    subject: str
    html: str  # one made-up subscriber's copy, links filled in
    text: str
    items: list[Item]
    edition_id: str



def story_of(finding: Finding, items: list[Item]) -> Item | None:
    """The story a lint finding is about, when it names one (its title, link, image or file)."""
    said = f"{finding.where} {finding.detail}"
    for item in items:
        if item.title in said or item.link in said or item.slug in said or (
                item.image is not None and item.image.url in said):
            return item
    return None


def with_stories(findings: list[Finding], items: list[Item]) -> list[tuple[Finding, Item | None]]:
    """Each finding with the story to fix, for the pages that link to it."""
    return [(finding, story_of(finding, items)) for finding in findings]


def next_digest(config: Config) -> DigestPreview:
    """The next edition's digest (else the latest's, else the newest items'), as lint looks at it: the
    message one made-up subscriber would get.  Reads the last fetch of the sources; writes nothing."""

    delivery = config.require_delivery()
    with open_storage(config) as storage:
        local, remote = read_items(config, storage, fetch=False)
        ctx = RunContext(config, storage, merge_items(local, remote))
        chosen = items_to_look_at(ctx.items, storage, config)
    edition_id = edition_id_for([item.id for item in chosen])
    digest = ctx.digest(chosen, edition_id)
    mail = EditionMail(digest, edition_id, datetime.now(timezone.utc), config,
                       lint_secret(delivery.secret_env, config.path("state")))
    sample = mail.sample()
    return DigestPreview(digest.subject, sample.html, sample.text, chosen, edition_id)


@dataclass(frozen=True)
class EditionReport:
    edition: Edition
    counts: dict[str, int]
    feedback: dict[str, int]  # its recipients' bounces, complaints and unsubscribe requests since it went out
    archive_url: str
    next_retry: datetime | None
    unsubscribed: int  # recipients who withdrew since it was made, any way (complaints too; bounces not)


def edition_report(config: Config, storage: Storage, edition_id: str) -> EditionReport | None:

    edition = storage.get_edition(edition_id)
    if edition is None:
        return None
    desk = DeskStore(storage)
    return EditionReport(edition, storage.ledger_counts(edition_id),
                         desk.feedback_since(edition_id, edition.created_at),
                         archive_url(config, edition_id), storage.next_retry(edition_id),
                         desk.unsubscribed_since(edition_id, edition.created_at))


def health_report(config: Config, storage: Storage) -> dict[str, Any]:
    """Sources and their last fetch, the last runs (a run with no end was interrupted or is running), the
    next scheduled jobs, and the editions with deferred messages and their next retry."""

    local, sources = use_cases.sources(config)
    report = use_cases.status(config, runs=10)
    return {"local_items": local, "sources": sources, **report.to_dict()}

"""Per-topic digests: which items each topic choice gets, and one render per distinct item set.

A subscriber's choice is stored as a ``topics_key`` ("" = everything).  An edition is
planned as routes from each choice that has subscribers to a digest variant: "" (the
whole edition), a variant of its own (some of the items), or None (none of their
topics has news: no message).  Choices that pick the same items share one variant and
one render, so the cost grows with distinct item sets (at most 2^topics - 1), never
with recipients.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..clock import utcnow
from ..config import Config
from ..errors import PipelineError
from ..items import Item, tag_slug
from ..mail.edition import EditionMail
from ..mail.lint import Finding, lint_outgoing
from ..state.storage import Claim, EditionVariants, Storage, StoredDigest

log = logging.getLogger(__name__)


def topic_names(key: str) -> list[str]:
    return [name for name in key.split(",") if name]


def items_for_topics(items: list[Item], key: str, config: Config) -> list[Item]:
    """The items a topic choice covers, in the given order; every item for "" (or only unknown topics).
    Tags match by their slug, as the per-tag feeds do (``Stem Cells`` and ``stem cells`` are one tag)."""
    names = [name for name in topic_names(key) if name in config.topics]
    if not names:
        return list(items)
    tags = {tag_slug(tag) for name in names for tag in config.topics[name].tags}
    return [item for item in items if tags & {tag_slug(tag) for tag in item.tags}]


def plan_variants(edition_id: str, chosen: list[Item], storage: Storage, config: Config,
                  digest: Callable[[str, list[Item]], StoredDigest]) -> EditionVariants | None:
    """Routes for the topic choices subscribers have made; None when nobody chose topics."""
    keys = [key for key in storage.topic_keys_in_use(utcnow()) if key]
    if not config.topics or not keys:
        return None
    whole = [item.id for item in chosen]
    routes: dict[str, str | None] = {}
    by_items: dict[tuple[str, ...], str] = {}
    digests: dict[str, StoredDigest] = {}
    for key in keys:
        subset = items_for_topics(chosen, key, config)
        ids = tuple(item.id for item in subset)
        if not subset:
            routes[key] = None
        elif list(ids) == whole:
            routes[key] = ""
        elif ids in by_items:
            routes[key] = by_items[ids]  # another choice with the same items: same variant, no new render
        else:
            by_items[ids] = key
            routes[key] = key
            digests[key] = digest(edition_id, subset)
    log.info("edition %s: %d topic choices, %d digest variants", edition_id, len(keys), len(digests))
    return EditionVariants(routes, digests)


# -- sending: one EditionMail per variant, each message from its row's variant -------------------

def variant_mails(storage: Storage, whole: EditionMail, config: Config) -> dict[str, EditionMail]:
    """The edition's mails by variant ("" the whole edition); each serialised once."""
    mails = {"": whole}
    for variant, stored in storage.edition_variants(whole.edition_id).items():
        mails[variant] = EditionMail(stored, whole.edition_id, whole.date, config, whole.secret)
    return mails


def lint_variants(mails: dict[str, EditionMail], chosen: list[Item], config: Config) -> list[Finding]:
    """The pre-send checks of each per-topic variant, against the items it carries."""
    findings: list[Finding] = []
    for variant, mail in mails.items():
        if variant:
            findings += lint_outgoing(mail.sample(), items_for_topics(chosen, variant, config), config=config)
    return findings


def variant_renderer(storage: Storage, edition_id: str, mails: dict[str, EditionMail], *,
                     wire: bool = False) -> Callable[[Claim], bytes]:
    """The Sender's ``render``: each claimed row's own variant, looked up a claimed batch at a time;
    ``wire`` gives messages dot-stuffed and terminated, as the SMTP transport sends them."""

    def one(mail: EditionMail, claim: Claim) -> bytes:
        if wire:
            return mail.render_wire(claim.email, claim.subscriber_id)
        return mail.render(claim.email, claim.subscriber_id)

    whole = mails[""]
    if len(mails) == 1:
        return lambda claim: one(whole, claim)
    known: dict[int, str] = {}
    lock = threading.Lock()

    def render(claim: Claim) -> bytes:
        with lock:
            variant = known.pop(claim.subscriber_id, None)
            if variant is None:
                if len(known) > 50_000:
                    known.clear()
                known.update(storage.claimed_variants(edition_id, claim.subscriber_id, 1000))
                variant = known.pop(claim.subscriber_id, None)
            if variant is None:
                variant = storage.delivery_variant(edition_id, claim.subscriber_id)
        mail = mails.get(variant)
        if mail is None:
            raise PipelineError(f"edition {edition_id}: no stored digest for variant {variant!r}")
        return one(mail, claim)

    return render

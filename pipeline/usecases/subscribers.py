"""Subscriber addresses: validated, normalised, imported from and exported to CSV."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..addresses import AddressError, normalise_address
from ..errors import PipelineError
from ..state.storage import PENDING_CONFIRMATION, SUBSCRIBED, BounceEvent, Storage, Subscriber, Suppression
from .common import open_storage
from .signup import (
    SubscriberReport,
    confirm_imported,
    describe_event,
    operator_add,
    record_import,
    show,
    unsubscribe,
)

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

IMPORT_BATCH = 1000
EXPORT_COLUMNS = ["email", "name", "status", "subscribed_at", "unsubscribed_at"]
CONSENT_COLUMNS = ["topics", "confirmed_at", "consent_history"]  # schema 5: after any attribute columns


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0  # already subscribed with the same name and attributes
    kept_unsubscribed: int = 0
    kept_suppressed: int = 0  # bounced or complained: an import never puts them back on the list
    duplicates: int = 0
    invalid: list[str] = field(default_factory=list)
    confirmations: int = 0
    refused: list[str] = field(default_factory=list)  # confirmations the relay would not take, "address: why"


def import_csv(storage: Storage, handle: TextIO, source: str = "CSV", config: Config | None = None, *,
               confirmed: bool = True) -> ImportReport:
    """Merge a CSV (header row, an ``email`` column) into the subscribers.

    Other columns are kept as attributes; ``name`` becomes the name.  A bad row is
    reported with its line number and skipped; an unsubscribed address stays so.
    With a ``config``, every new row gets a consent record, and unless ``confirmed``
    (the operator's explicit word) it is pending and is sent a confirmation email.
    """
    reader = csv.DictReader(handle)
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    if "email" not in columns:
        raise PipelineError(f"{source}: the header row needs an 'email' column (found: {', '.join(columns) or 'none'})")
    report = ImportReport()
    seen: set[str] = set()
    batch: list[tuple[str, str | None, dict[str, str]]] = []

    def flush() -> None:
        report.kept_suppressed += len(storage.suppressed_among([email for email, _, _ in batch]))
        new = sorted({email for email, _, _ in batch} - storage.known_emails([e for e, _, _ in batch])) \
            if config is not None and batch else []
        counts = storage.merge_subscribers(batch, status=SUBSCRIBED if confirmed else PENDING_CONFIRMATION)
        if config is not None:
            record_import(config, storage, new, confirmed=confirmed, source=source)
            if not confirmed:  # the new rows, and any an earlier import left pending without its mail
                sent, refused = confirm_imported(config, storage, [email for email, _, _ in batch])
                report.confirmations += sent
                report.refused += refused
        report.added += counts["added"]
        report.updated += counts["updated"]
        report.unchanged += counts["unchanged"]
        report.kept_unsubscribed += counts["unsubscribed"]
        batch.clear()

    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a field over csv's 128 KiB limit: keep what came before, say where
            flush()
            line = reader.line_num + 1  # the line being read when it failed
            raise PipelineError(f"{source}:{line}: not readable as CSV ({exc}); the rows before it "
                                f"were imported ({report.added} added, {report.updated} updated)") from None
        values = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k}
        try:
            email = normalise_address(values.get("email", ""))
        except AddressError as exc:
            report.invalid.append(f"{source}:{reader.line_num}: {exc}")
            continue
        if email in seen:
            report.duplicates += 1
            continue
        seen.add(email)
        name = values.pop("name", "") or None
        attributes = {k: v for k, v in values.items() if k not in ("email", "status") and v}
        batch.append((email, name, attributes))
        if len(batch) >= IMPORT_BATCH:
            flush()
    flush()
    return report


def export_csv(storage: Storage, handle: TextIO) -> int:
    """Write every subscriber as CSV, streaming: one pass finds the extra columns, one writes.
    The last columns are the topics, the confirmation time and the consent history (one event a line)."""
    extra = sorted({key for row in _rows(storage) for key in row} - set(EXPORT_COLUMNS))
    writer = csv.DictWriter(handle, fieldnames=EXPORT_COLUMNS + extra + CONSENT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    count = 0
    for rows in _batches(_rows(storage, ids=True), IMPORT_BATCH):
        histories = storage.consent_histories([int(row["_id"]) for row in rows])
        profiles = storage.profiles([int(row["_id"]) for row in rows])
        for row in rows:
            subscriber_id = int(row.pop("_id"))
            profile = profiles.get(subscriber_id)
            writer.writerow({**row, **_consent_columns(profile, histories[subscriber_id])})
            count += 1
    return count


def _consent_columns(profile, history) -> dict[str, str]:
    return {"topics": ",".join(profile.topics) if profile else "",
            "confirmed_at": profile.confirmed_at.isoformat() if profile and profile.confirmed_at else "",
            "consent_history": "\n".join(describe_event(event) for event in history)}


def _batches(rows: Iterator[dict[str, str]], size: int) -> Iterator[list[dict[str, str]]]:
    batch: list[dict[str, str]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _rows(storage: Storage, ids: bool = False) -> Iterator[dict[str, str]]:
    for sub in storage.iter_subscribers():
        yield {
            **({"_id": str(sub.id)} if ids else {}),
            **{k: str(v) for k, v in sub.attributes.items()},
            "email": sub.email,
            "name": sub.name or "",
            "status": sub.status,
            "subscribed_at": sub.subscribed_at.isoformat() if sub.subscribed_at else "",
            "unsubscribed_at": sub.unsubscribed_at.isoformat() if sub.unsubscribed_at else "",
        }


def read_csv_file(storage: Storage, path: Path, config: Config | None = None, *,
                  confirmed: bool = True) -> ImportReport:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return import_csv(storage, handle, source=str(path), config=config, confirmed=confirmed)
@dataclass
class SubscriberDetails:
    subscriber: Subscriber
    suppression: Suppression | None
    events: list[BounceEvent]
    suppressions: list[Suppression]
    consent: SubscriberReport | None = None  # topics, confirmation, pause and the consent history


def subscriber_details(config: Config, address: str) -> SubscriberDetails:
    email = normalise_address(address)
    with open_storage(config) as storage:
        subscriber = storage.get_subscriber(email)
        if subscriber is None:
            raise PipelineError(f"{email}: not a subscriber")
        events, held = storage.bounce_history(subscriber.id)
        return SubscriberDetails(subscriber, storage.active_suppression(subscriber.id), events, held,
                                 show(storage, email))


def lift_suppression(config: Config, address: str, reason: str, *, now: datetime | None = None) -> bool:
    """An operator puts a suppressed address back on the list, with a reason that is kept; a bounce from
    before ``now`` (a send still running may report one) does not suppress it again."""
    if not reason.strip():
        raise PipelineError("say why the suppression is lifted (--reason)")
    email = normalise_address(address)
    with open_storage(config) as storage:
        subscriber = storage.get_subscriber(email)
        if subscriber is None:
            raise PipelineError(f"{email}: not a subscriber")
        lifted = storage.lift_suppression(subscriber.id, reason.strip(), now)
    if lifted:
        log.info("suppression of subscriber %d lifted by an operator", subscriber.id)
    return lifted


# -- the subscriber commands: each opens the state database for one change or one listing -------------

def add_subscriber(config: Config, address: str, name: str | None, topics: list[str] | None, *,
                   confirmed: bool) -> tuple[str, str]:
    """`subscribers add`: the normalised address and what happened (a bad address is refused before the
    state is opened)."""
    email = normalise_address(address)
    with open_storage(config) as storage:
        return operator_add(config, storage, email, name, topics, confirmed=confirmed)


def remove_subscriber(config: Config, address: str, via: str) -> tuple[str, bool]:
    """`subscribers remove`: the normalised address, and whether it was subscribed (or pending) until now."""
    email = normalise_address(address)
    with open_storage(config) as storage:
        if storage.get_subscriber(email) is None:
            raise PipelineError(f"{email}: not a subscriber")
        return email, unsubscribe(storage, email, via)


def list_subscribers(config: Config, status: str | None = None) -> Iterator[Subscriber]:
    """`subscribers list`: every subscriber (of one status), streamed in address order."""
    with open_storage(config) as storage:
        yield from storage.iter_subscribers(status)


def list_suppressed(config: Config) -> Iterator[tuple[str, Suppression]]:
    """`subscribers list --suppressed`: each suppressed address and its suppression."""
    with open_storage(config) as storage:
        yield from storage.iter_suppressed()


def import_subscribers(config: Config, path: Path, *, confirmed: bool) -> ImportReport:
    """`subscribers import`: merge a CSV file into the list."""
    with open_storage(config) as storage:
        return read_csv_file(storage, path, config, confirmed=confirmed)


def export_subscribers(config: Config, handle: TextIO) -> int:
    """`subscribers export`: every subscriber as CSV; how many."""
    with open_storage(config) as storage:
        return export_csv(storage, handle)

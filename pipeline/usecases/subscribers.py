"""Subscriber addresses: validated, normalised, imported from CSV (read and planned once, for the desk's preview
and for the import alike) and exported to CSV."""

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
from ..state.storage import (
    PENDING_CONFIRMATION,
    SUBSCRIBED,
    UNSUBSCRIBED,
    BounceEvent,
    Storage,
    Subscriber,
    Suppression,
)
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


@dataclass(frozen=True)
class ImportRow:
    """One readable row of an import: its line, the normalised address, and what it brings."""

    line: int
    email: str
    name: str | None
    attributes: dict[str, str]


@dataclass(frozen=True)
class Refusal:
    """A row an import leaves alone, and why (``kind``: invalid, duplicate, suppressed, unsubscribed)."""

    line: int
    kind: str
    message: str  # "members.csv:4: reader3@example.org: unsubscribed; stays unsubscribed"


@dataclass
class ImportPlan:
    """What an import does with each row, decided against the list as it is: the desk's preview shows it and
    the commit writes it, so they cannot disagree.  Refused rows are not written at all."""

    added: list[ImportRow] = field(default_factory=list)
    updated: list[ImportRow] = field(default_factory=list)  # known, and a name or a column differs
    unchanged: list[ImportRow] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    @property
    def refused(self) -> list[str]:
        return [r.message for r in sorted(self.refusals, key=lambda r: r.line)]

    def count(self, kind: str) -> int:
        return sum(1 for r in self.refusals if r.kind == kind)

    def extend(self, other: ImportPlan) -> None:
        self.added += other.added
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.refusals += other.refusals

    def summary(self) -> str:
        return _summary(len(self.added), len(self.updated), len(self.unchanged), len(self.refusals))


def _summary(added: int, updated: int, unchanged: int, refused: int) -> str:
    """The one wording of an import's counts: the desk's preview, its audit entry and its message."""
    return f"{added} added, {updated} updated, {unchanged} unchanged, {refused} refused"


class _UnreadableCsv(PipelineError):
    """A row the csv module cannot read (e.g. a field over its 128 KiB limit): the import stops there."""

    def __init__(self, source: str, line: int, detail: str):
        super().__init__(f"{source}:{line}: not readable as CSV ({detail})")


def _read_rows(handle: TextIO, source: str) -> Iterator[ImportRow | Refusal]:
    """The rows of an import CSV (a header row with an ``email`` column; ``name`` becomes the name, other
    columns attributes), addresses normalised; a bad address or a second copy of one is a refusal."""
    reader = csv.DictReader(handle)
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    if "email" not in columns:
        raise PipelineError(f"{source}: the header row needs an 'email' column (found: {', '.join(columns) or 'none'})")
    seen: set[str] = set()
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _UnreadableCsv(source, reader.line_num + 1, str(exc)) from None  # the line being read
        values = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k}
        try:
            email = normalise_address(values.get("email", ""))
        except AddressError as exc:
            yield Refusal(reader.line_num, "invalid", f"{source}:{reader.line_num}: {exc}")
            continue
        if email in seen:
            yield Refusal(reader.line_num, "duplicate", f"{source}:{reader.line_num}: {email}: given twice; "
                                                        "the first is kept")
            continue
        seen.add(email)
        name = values.pop("name", "") or None
        yield ImportRow(reader.line_num, email, name,
                        {k: v for k, v in values.items() if k not in ("email", "status") and v})


def _plan_batch(storage: Storage, source: str, entries: list[ImportRow | Refusal]) -> ImportPlan:
    """Each row against what the list knows (one query): new, changed, the same, or refused because the
    address is suppressed or unsubscribed (an import never puts either back, nor rewrites them)."""
    plan = ImportPlan(refusals=[e for e in entries if isinstance(e, Refusal)])
    rows = [e for e in entries if isinstance(e, ImportRow)]
    known = storage.subscribers_among([row.email for row in rows])
    for row in rows:
        subscriber, suppressed = known.get(row.email, (None, False))
        where = f"{source}:{row.line}: {row.email}"
        if subscriber is None:
            plan.added.append(row)
        elif suppressed:
            plan.refusals.append(Refusal(row.line, "suppressed", f"{where}: suppressed (bounced or complained); "
                                                                 "an import never puts it back"))
        elif subscriber.status == UNSUBSCRIBED:
            plan.refusals.append(Refusal(row.line, "unsubscribed", f"{where}: unsubscribed; stays unsubscribed"))
        elif (row.name and row.name != subscriber.name) or \
                {**subscriber.attributes, **row.attributes} != subscriber.attributes:
            plan.updated.append(row)
        else:
            plan.unchanged.append(row)
    return plan


def plan_import(storage: Storage, handle: TextIO, source: str, batch: int = IMPORT_BATCH) -> Iterator[ImportPlan]:
    """The plan of an import, a batch of rows at a time (memory stays flat); an unreadable row raises
    ``_UnreadableCsv`` after the plans of the batches before it."""
    entries: list[ImportRow | Refusal] = []
    try:
        for entry in _read_rows(handle, source):
            entries.append(entry)
            if len(entries) >= batch:
                yield _plan_batch(storage, source, entries)
                entries = []
    except _UnreadableCsv:
        if entries:  # the rows read before it are planned (and imported) first
            yield _plan_batch(storage, source, entries)
        raise
    if entries:
        yield _plan_batch(storage, source, entries)


@dataclass(frozen=True)
class ImportOrigin:
    """Where an import came from, as the consent record of every row it adds keeps it."""

    source: str  # the command line: the file's path; the desk: "desk import of members.csv"
    confirmed_by: str = "operator flag --confirmed"  # who gave their word, with ``confirmed``


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

    def summary(self) -> str:
        """Counted as the plan counts them (refused: invalid, duplicate, suppressed and unsubscribed rows)."""
        return _summary(self.added, self.updated, self.unchanged,
                              len(self.invalid) + self.duplicates + self.kept_suppressed + self.kept_unsubscribed)


def import_csv(storage: Storage, handle: TextIO, source: str = "CSV", config: Config | None = None, *,
               confirmed: bool = True, origin: ImportOrigin | None = None) -> ImportReport:
    """Merge a CSV (header row, an ``email`` column) into the subscribers, as ``plan_import`` plans it.

    Other columns are kept as attributes; ``name`` becomes the name.  A bad row is
    reported with its line number and skipped; an unsubscribed or suppressed address is left as it is.
    With a ``config``, every new row gets a consent record (``origin``: where from, who vouched), and
    unless ``confirmed`` (the operator's explicit word) it is pending and is sent a confirmation email.
    """
    report = ImportReport()
    origin = origin or ImportOrigin(source)
    try:
        for plan in plan_import(storage, handle, source):
            _apply(storage, plan, report, config, confirmed, origin)
    except _UnreadableCsv as exc:  # keep what came before, say where
        raise PipelineError(f"{exc}; the rows before it were imported ({report.added} added, "
                            f"{report.updated} updated)") from None
    return report


def _apply(storage: Storage, plan: ImportPlan, report: ImportReport, config: Config | None, confirmed: bool,
           origin: ImportOrigin) -> None:
    """Write one batch's plan: only its added and updated rows (the store skips a row that became
    unsubscribed or suppressed since it was planned)."""
    writes = plan.added + plan.updated
    counts = storage.merge_subscribers([(row.email, row.name, row.attributes) for row in writes],
                                       status=SUBSCRIBED if confirmed else PENDING_CONFIRMATION)
    if config is not None:
        record_import(config, storage, [row.email for row in plan.added], confirmed=confirmed, source=origin.source,
                      confirmed_by=origin.confirmed_by)
        if not confirmed:  # the new rows, and any an earlier import left pending without its mail
            sent, refused = confirm_imported(config, storage, [row.email for row in writes + plan.unchanged])
            report.confirmations += sent
            report.refused += refused
    report.added += counts["added"]
    report.updated += counts["updated"]
    report.unchanged += len(plan.unchanged) + counts["unchanged"]
    report.kept_unsubscribed += plan.count("unsubscribed") + counts["unsubscribed"]
    report.kept_suppressed += plan.count("suppressed") + counts["suppressed"]
    report.duplicates += plan.count("duplicate")
    report.invalid += [r.message for r in plan.refusals if r.kind == "invalid"]


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


def read_csv_file(storage: Storage, path: Path, config: Config | None = None, *, confirmed: bool = True,
                  source: str | None = None, origin: ImportOrigin | None = None) -> ImportReport:
    """Import a CSV file; ``source`` names it in messages (default: its path)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return import_csv(storage, handle, source=source or str(path), config=config, confirmed=confirmed,
                          origin=origin)
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

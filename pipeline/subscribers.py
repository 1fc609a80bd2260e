"""Subscriber addresses: validated, normalised, imported from and exported to CSV."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .errors import PipelineError
from .mail.addresses import AddressError, normalise_address
from .state.storage import Storage

log = logging.getLogger(__name__)

IMPORT_BATCH = 1000
EXPORT_COLUMNS = ["email", "name", "status", "subscribed_at", "unsubscribed_at"]


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    kept_unsubscribed: int = 0
    kept_suppressed: int = 0  # bounced or complained: an import never puts them back on the list
    duplicates: int = 0
    invalid: list[str] = field(default_factory=list)


def import_csv(storage: Storage, handle: TextIO, source: str = "CSV") -> ImportReport:
    """Merge a CSV (header row, an ``email`` column) into the subscribers.

    Other columns are kept as attributes; ``name`` becomes the name.  A bad row is
    reported with its line number and skipped; an unsubscribed address stays so.
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
        counts = storage.merge_subscribers(batch)
        report.added += counts["added"]
        report.updated += counts["updated"]
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
    """Write every subscriber as CSV, streaming: one pass finds the extra columns, one writes."""
    extra = sorted({key for row in _rows(storage) for key in row} - set(EXPORT_COLUMNS))
    writer = csv.DictWriter(handle, fieldnames=EXPORT_COLUMNS + extra, extrasaction="ignore")
    writer.writeheader()
    count = 0
    for row in _rows(storage):
        writer.writerow(row)
        count += 1
    return count


def _rows(storage: Storage) -> Iterator[dict[str, str]]:
    for sub in storage.iter_subscribers():
        yield {
            **{k: str(v) for k, v in sub.attributes.items()},
            "email": sub.email,
            "name": sub.name or "",
            "status": sub.status,
            "subscribed_at": sub.subscribed_at.isoformat() if sub.subscribed_at else "",
            "unsubscribed_at": sub.unsubscribed_at.isoformat() if sub.unsubscribed_at else "",
        }


def read_csv_file(storage: Storage, path: Path) -> ImportReport:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return import_csv(storage, handle, source=str(path))

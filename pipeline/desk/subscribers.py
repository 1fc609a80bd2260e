"""The desk's view of the list: one subscriber's record, and a CSV import shown before it is made.

The changes themselves are the existing use cases (``signup.operator_add``, ``signup.unsubscribe``,
``usecases.lift_suppression``, ``subscribers.import_csv`` and ``export_csv``); the preview reads without writing."""

from __future__ import annotations

import csv
import io
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from .. import usecases as use_cases
from ..addresses import AddressError, normalise_address
from ..config import Config
from ..errors import PipelineError
from ..state.desk import DeskStore, RecipientDelivery
from ..state.files import private_folder, write_private
from ..state.storage import UNSUBSCRIBED, BounceEvent, ConsentEvent, Profile, Storage, Suppression
from ..usecases.signup import show

IMPORTS = "desk-imports"


@dataclass(frozen=True)
class SubscriberRecord:
    profile: Profile
    history: list[ConsentEvent]
    suppression: Suppression | None
    bounces: list[BounceEvent]
    suppressions: list[Suppression]
    deliveries: list[RecipientDelivery]  # every edition's message to them, newest first


def subscriber_record(config: Config, storage: Storage, address: str) -> SubscriberRecord | None:

    report = show(storage, address)
    if report is None:
        return None
    details = use_cases.subscriber_details(config, address)
    return SubscriberRecord(report.profile, report.history, details.suppression, details.events, details.suppressions,
                            DeskStore(storage).deliveries_to(report.profile.email))


@dataclass
class ImportPreview:
    """What committing the import would do, row by row: added, updated, and refused (with why)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "line N: address: why"


def preview_import(storage: Storage, text: str, source: str) -> ImportPreview:
    """The same reading as ``import_csv`` (header with an email column, addresses normalised, duplicates
    dropped), and what the list already knows about each address; nothing is written."""
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    if "email" not in columns:
        raise PipelineError(f"{source}: the header row needs an 'email' column (found: {', '.join(columns) or 'none'})")
    preview = ImportPreview()
    rows: list[tuple[int, str]] = []
    seen: set[str] = set()
    try:
        for row in reader:
            values = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k}
            try:
                email = normalise_address(values.get("email", ""))
            except AddressError as exc:
                preview.refused.append(f"{source}:{reader.line_num}: {exc}")
                continue
            if email in seen:
                preview.refused.append(f"{source}:{reader.line_num}: {email}: given twice; the first is kept")
                continue
            seen.add(email)
            rows.append((reader.line_num, email))
    except csv.Error as exc:
        raise PipelineError(f"{source}:{reader.line_num + 1}: not readable as CSV ({exc})") from None
    emails = [email for _, email in rows]
    known, suppressed = storage.known_emails(emails), storage.suppressed_among(emails)
    for line, email in rows:
        if email in suppressed:
            preview.refused.append(f"{source}:{line}: {email}: suppressed (bounced or complained); an import "
                                   "never puts it back")
        elif email not in known:
            preview.added.append(email)
        else:
            subscriber = storage.get_subscriber(email)
            if subscriber is not None and subscriber.status == UNSUBSCRIBED:
                preview.refused.append(f"{source}:{line}: {email}: unsubscribed; stays unsubscribed")
            else:
                preview.updated.append(email)
    return preview


def keep_upload(config: Config, text: str) -> str:
    """Hold an uploaded CSV in the state folder between its preview and its commit; returns its key."""
    folder = private_folder(config.path("state") / IMPORTS)
    key = secrets.token_hex(16)
    write_private(folder / f"{key}.csv", text.encode("utf-8"))
    return key


def kept_upload(config: Config, key: str) -> Path | None:
    if not key or not all(c in "0123456789abcdef" for c in key):
        return None
    path = config.path("state") / IMPORTS / f"{key}.csv"
    return path if path.is_file() else None

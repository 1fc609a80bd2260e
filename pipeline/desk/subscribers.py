"""The desk's view of the list: one subscriber's record, and a CSV import shown before it is made.

The changes themselves are the existing use cases (``signup.operator_add``, ``signup.unsubscribe``,
``usecases.lift_suppression``, ``subscribers.import_csv`` and ``export_csv``); the import's preview is the plan
the import follows (``subscribers.plan_import``), read without writing."""

from __future__ import annotations

import io
import secrets
from dataclasses import dataclass
from pathlib import Path

from .. import usecases as use_cases
from ..config import Config
from ..state.desk import DeskStore, RecipientDelivery
from ..state.files import private_folder, write_private
from ..state.storage import BounceEvent, ConsentEvent, Profile, Storage, Suppression
from ..usecases.signup import show
from ..usecases.subscribers import ImportPlan, plan_import

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


def preview_import(storage: Storage, text: str, name: str) -> ImportPlan:
    """What committing the import would do, row by row: the plan the import itself follows (``plan_import``),
    for the whole file; nothing is written."""
    preview = ImportPlan()
    for plan in plan_import(storage, io.StringIO(text), name):
        preview.extend(plan)
    return preview


@dataclass(frozen=True)
class KeptUpload:
    """An uploaded CSV between its preview and its commit: the file in the state folder, and its own name."""

    path: Path
    name: str

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)
        self.path.with_suffix(".name").unlink(missing_ok=True)


def keep_upload(config: Config, text: str, name: str) -> str:
    """Hold an uploaded CSV (and the name it was uploaded under) in the state folder; returns its key."""
    folder = private_folder(config.path("state") / IMPORTS)
    key = secrets.token_hex(16)
    write_private(folder / f"{key}.csv", text.encode("utf-8"))
    write_private(folder / f"{key}.name", name.encode("utf-8"))
    return key


def kept_upload(config: Config, key: str) -> KeptUpload | None:
    if not key or not all(c in "0123456789abcdef" for c in key):
        return None
    path = config.path("state") / IMPORTS / f"{key}.csv"
    if not path.is_file():
        return None
    named = path.with_suffix(".name")
    return KeptUpload(path, named.read_text(encoding="utf-8") if named.is_file() else "upload.csv")

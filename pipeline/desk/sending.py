"""Sending an edition from the desk: whether what the send page shows may be sent, the send itself in a thread
of the desk's server, and what the audit log records once it is over: "edition sent" only for a send that
went, "send stopped" (with why) for one that did not."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from .. import usecases as use_cases
from ..errors import PipelineError
from .context import SendJob

if TYPE_CHECKING:
    from ..usecases.common import RunOutcome
    from ..usecases.send import SendPreview

log = logging.getLogger(__name__)


def sendable(plan: SendPreview) -> bool:
    """A new edition that nothing stops: neither the law's checks (the postal address) nor the pre-send checks,
    which a send from the desk never overrides (it is never forced)."""
    return plan.edition.reason == "would create the edition" and not plan.blocked and not plan.refused


def start_send(ext: dict[str, Any], edition_id: str, by: str, client: str = "scheduler") -> SendJob:
    """Send the edition in a thread of this server; the progress page reads the ledger as it goes, and the
    audit log gets the outcome, in ``by``'s name, when the run is over."""
    config, jobs, store, clock = ext["config"], ext["jobs"], ext["store"], ext["clock"]
    job = SendJob(edition_id, by, clock())
    jobs[edition_id] = job

    def work() -> None:
        try:
            outcome = use_cases.run(config, action="send", wait=True)
            job.summary = outcome.summary(0.0)
            action, detail = outcome_entry(edition_id, outcome)
            if action != "edition sent":
                job.error = detail
        except PipelineError as exc:
            job.error = str(exc)
            action, detail = "send stopped", f"edition {edition_id}: {exc}"
        except Exception as exc:  # noqa: BLE001 - shown on the progress page, logged in full
            log.exception("desk: sending edition %s failed", edition_id)
            job.error = f"sending stopped: {exc}"
            action, detail = "send stopped", f"edition {edition_id}: {job.error}"
        try:
            store.audit(by, client, action, detail, clock())
        finally:
            job.done.set()

    threading.Thread(target=work, name=f"desk send {edition_id}", daemon=True).start()
    return job


def outcome_entry(edition_id: str, outcome: RunOutcome) -> tuple[str, str]:
    """The audit log's action and detail for a send run that returned: sent, or why nothing (more) went."""
    report = next((report for report in outcome.reports if report.edition_id == edition_id), None)
    if report is None:
        why = outcome.edition.reason if outcome.edition is not None and outcome.edition.reason else "nothing was due"
        return "send stopped", f"edition {edition_id}: nothing was sent ({why})"
    counts = f"sent {report.sent}, failed {report.failed}, deferred {report.deferred}"
    if report.unreachable:
        return "send stopped", f"edition {edition_id}: the relay could not be reached ({report.unreachable}); {counts}"
    return "edition sent", f"edition {edition_id}: {counts}"

"""What happened and what happens next, for `pipeline status`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .build import open_storage
from .config import Config
from .service.scheduler import next_run_times, stored_next_run_times


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def collect_status(config: Config, runs: int = 10) -> dict[str, Any]:
    with open_storage(config) as storage:
        edition = storage.latest_edition()
        stored = stored_next_run_times(config)
        computed = next_run_times(config)
        report: dict[str, Any] = {
            "runs": [{**run, "started_at": _iso(run["started_at"]), "finished_at": _iso(run["finished_at"])}
                     for run in storage.recent_runs(runs)],
            "jobs": [{"name": name, "cron": job.cron, "timezone": job.timezone, "action": job.action,
                      # The service's own record wins: it knows about pauses and catch-up runs.
                      "next_run": _iso(stored.get(name) or computed[name]),
                      "source": "service" if stored.get(name) else "config"}
                     for name, job in config.schedule.jobs.items()],
            "last_edition": None,
            "subscribers": {"subscribed": storage.count_subscribers("subscribed"),
                            "unsubscribed": storage.count_subscribers("unsubscribed")},
        }
        if edition:
            report["last_edition"] = {"id": edition.id, "created_at": _iso(edition.created_at),
                                      "subject": edition.subject, "items": len(edition.item_ids),
                                      **storage.ledger_counts(edition.id)}
        return report


def format_status(report: dict[str, Any]) -> str:
    lines = ["Recent runs:"]
    if not report["runs"]:
        lines.append("  none yet")
    for run in report["runs"]:
        s = run["summary"]
        detail = (f"error: {s['error']}" if "error" in s else "nothing changed" if s.get("unchanged") else
                  f"{s.get('items', 0)} items, {s.get('files_written', 0)} files written, "
                  f"edition {s.get('edition') or '-'}, sent {s.get('sent', 0)}, failed {s.get('failed', 0)}")
        lines.append(f"  {run['started_at']}  {run['job']:<16} {run['status']:<8} {detail}")
    lines.append("Scheduled jobs:")
    if not report["jobs"]:
        lines.append("  none configured")
    for job in report["jobs"]:
        lines.append(f"  {job['name']:<16} {job['cron']!r} {job['timezone']} ({job['action']}): next {job['next_run']}")
    edition = report["last_edition"]
    if edition:
        lines.append(f"Last edition: {edition['id']} of {edition['created_at']}, {edition['items']} items: "
                     f"sent {edition['sent']}, failed {edition['failed']}, pending {edition['pending']}")
    else:
        lines.append("Last edition: none yet")
    subs = report["subscribers"]
    lines.append(f"Subscribers: {subs['subscribed']} subscribed, {subs['unsubscribed']} unsubscribed")
    return "\n".join(lines)

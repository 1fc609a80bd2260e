"""What the operator asks: sources and status.

Imports inside functions: each command imports what it calls, so ``pipeline --help`` and
``--version`` load no SQLAlchemy, pydantic, premailer or feedgen.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import click

from .base import Context, cli, pass_context

if TYPE_CHECKING:
    from ..reports import EditionRow, RunRow, StatusReport

log = logging.getLogger("pipeline")


@cli.command()
@click.option("--fetch", "do_fetch", is_flag=True,
              help="Fetch every source now (and store what it gives) before listing.")
@pass_context
def sources(ctx: Context, do_fetch: bool) -> None:
    """List the remote sources: last fetch, status and item count."""
    from .. import usecases

    local, rows = usecases.sources(ctx.config, fetch=do_fetch)
    click.echo(f"{'content':<20} {'(local files)':<48} {'-':<25} ok  {local} items")
    for row in rows:
        fetched = row.fetched_at.isoformat(timespec="seconds") if row.fetched_at else "never fetched"
        click.echo(f"{row.name:<20} {row.url:<48} {fetched:<25} {row.status}  {row.item_count} items")




@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--runs", default=10, show_default=True, help="How many recent runs to show.")
@pass_context
def status(ctx: Context, as_json: bool, runs: int) -> None:
    """Recent runs, next scheduled runs, editions with unsent messages, and the subscriber count."""

    from .. import usecases

    report = usecases.status(ctx.config, runs)
    click.echo(json.dumps(report.to_dict(), indent=2, default=str) if as_json else format_status(report))


def _edition_line(edition: EditionRow) -> str:
    line = (f"{edition.id} of {edition.created_at}, {edition.items} items: sent {edition.sent}, "
            f"failed {edition.failed}, deferred {edition.deferred}, pending {edition.pending}, "
            f"sending {edition.sending}, skipped (unsubscribed) {edition.skipped}")
    line += f"; next retry {edition.next_retry}" if edition.next_retry else ""
    for failure in edition.top_failures:
        line += f"\n    {failure.count} x {failure.reply}"
    return line


def _run_detail(run: RunRow) -> str:
    s = run.summary
    error = str(s.get("error", "")).splitlines()[0] if s.get("error") else ""
    files = f"{s.get('files_written', 0)} file{'' if s.get('files_written') == 1 else 's'} written"
    return ("stopped before it finished: its process is gone" if run.status == "interrupted" else
            "in progress" if run.status == "running" else
            f"error: {error}" if "error" in s else "nothing changed" if s.get("unchanged") else
            f"{s.get('action', 'run')}: no queued message is due" if s.get("nothing_due") else
            f"{s.get('action', 'run')}: {s.get('items') or 0} items, {files}, edition {s.get('edition') or '-'}, "
            f"sent {s.get('sent', 0)}, failed {s.get('failed', 0)}, deferred {s.get('deferred', 0)}")


def format_status(report: StatusReport) -> str:
    lines = ["Recent runs:"]
    if not report.runs:
        lines.append("  none yet")
    for run in report.runs:
        lines.append(f"  {run.started_at}  {run.job:<16} {run.status:<8} {_run_detail(run)}")
    lines.append("Scheduled jobs:")
    if not report.jobs:
        lines.append("  none configured")
    for job in report.jobs:
        lines.append(f"  {job.name:<16} {job.cron!r} {job.timezone} ({job.action}): next {job.next_run}")
    edition = report.last_edition
    lines.append(f"Last edition: {_edition_line(edition)}" if edition else "Last edition: none yet")
    for other in report.editions_with_unsent:
        lines.append(f"Unsent messages in edition {_edition_line(other)}")
    if report.workers:
        lines.append("Send workers:")
        for w in report.workers:
            lease = f", oldest claim {w.oldest_claim_age_s}s old" if w.oldest_claim_age_s is not None else ""
            lines.append(f"  {w.id} on {w.host}: heartbeat {w.heartbeat_age_s}s ago, holds {w.holds}{lease}")
    subs = report.subscribers
    lines.append(f"Subscribers: {subs.subscribed} subscribed, {subs.unsubscribed} unsubscribed"
                 + (f", {subs.pending} pending confirmation" if subs.pending else ""))
    waiting = {state: report.signup_mail.get(state, 0) for state in ("queued", "sending", "failed")}
    if any(waiting.values()):
        lines.append(f"Sign-up mail: {waiting['queued']} queued, {waiting['sending']} being sent, "
                     f"{waiting['failed']} failed (the web server's drainer sends the queue)")
    feedback, suppressed = report.feedback_30d, report.suppressed
    rate = feedback.complaint_rate
    lines.append(f"Last 30 days: {feedback.sent} sent, {feedback.hard} hard bounces, {feedback.soft} soft "
                 f"bounces, {feedback.complaints} complaints"
                 + (f" (complaint rate {rate:.2%}; Gmail and Yahoo ask for under 0.3%)" if rate is not None else ""))
    loose = report.state_permissions
    lines.append("State folder: " + (f"{len(loose)} entries readable by others (see the warnings above)" if loose
                                     else "private (folder 0700, files 0600)"))
    lines.append("Suppressed: " + (", ".join(f"{count} {reason}" for reason, count in sorted(suppressed.items()))
                                   + f" ({sum(suppressed.values())} in all)" if suppressed else "none"))
    return "\n".join(lines)

"""`pipeline subscribers ...`: the list, one use case per command.

Imports inside functions: each command imports what it calls, so ``pipeline --help`` and
``--version`` load no SQLAlchemy, pydantic, premailer or feedgen.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .base import Context, cli, pass_context

if TYPE_CHECKING:
    pass

log = logging.getLogger("pipeline")


@cli.group()
def subscribers() -> None:
    """Manage subscribers: add, remove, list, show, unsuppress, import, export."""


@subscribers.command("add")
@click.argument("address")
@click.option("--name", help="The subscriber's name.")
@click.option("--topics", help="Comma-separated topic names from config.yaml (default: everything).")
@click.option("--confirmed", is_flag=True, help="The person has already agreed: subscribe at once (recorded as the "
                                                "operator's word). Without it, they get a confirmation email.")
@pass_context
def subscribers_add(ctx: Context, address: str, name: str | None, topics: str | None, confirmed: bool) -> None:
    """Subscribe ADDRESS through double opt-in, or at once with --confirmed (also resubscribes)."""
    from .. import usecases

    chosen = [t.strip() for t in topics.split(",") if t.strip()] if topics is not None else None
    email, outcome = usecases.add_subscriber(ctx.config, address, name, chosen, confirmed=confirmed)
    click.echo(f"{email}: {outcome}")


@subscribers.command("remove")
@click.argument("address")
@click.option("--via", type=click.Choice(["operator", "mailto"]), default="operator", show_default=True,
              help="How the request came (kept in the consent history): mailto for the unsubscribe mailbox.")
@pass_context
def subscribers_remove(ctx: Context, address: str, via: str) -> None:
    """Unsubscribe ADDRESS; it is never mailed again, and no import resubscribes it."""
    from .. import usecases

    email, changed = usecases.remove_subscriber(ctx.config, address, via)
    click.echo(f"{email}: {'unsubscribed' if changed else 'was already unsubscribed'}")


@subscribers.command("list")
@click.option("--status", type=click.Choice(["subscribed", "pending", "unsubscribed"]), help="Only this status.")
@click.option("--suppressed", is_flag=True, help="Only suppressed addresses: address, reason, since, detail.")
@pass_context
def subscribers_list(ctx: Context, status: str | None, suppressed: bool) -> None:
    """List subscribers, one per line: address, status, name."""
    from .. import usecases

    if suppressed:
        for email, held in usecases.list_suppressed(ctx.config):
            click.echo(f"{email}\t{held.reason}\t{held.created_at.isoformat(timespec='seconds')}\t{held.detail}")
        return
    for sub in usecases.list_subscribers(ctx.config, status):
        click.echo(f"{sub.email}\t{sub.status}\t{sub.name or ''}")


@subscribers.command("show")
@click.argument("address")
@pass_context
def subscribers_show(ctx: Context, address: str) -> None:
    """One subscriber: status, topics, suppression, and the history: consent given or withdrawn (when, how,
    the consent text shown), every bounce, complaint and decision."""
    from .. import usecases

    details = usecases.subscriber_details(ctx.config, address)
    sub, consent = details.subscriber, details.consent
    click.echo(f"{sub.email}\t{sub.status}\t{sub.name or ''}")
    if consent is not None:
        profile = consent.profile
        click.echo(f"topics: {', '.join(profile.topics) or 'everything'}")
        for label, moment in (("confirmed", profile.confirmed_at), ("paused until", profile.paused_until)):
            if moment:
                click.echo(f"{label}: {moment.isoformat(timespec='seconds')}")
        click.echo("consent history:" if consent.history else "consent history: none recorded")
        for consent_event in consent.history:
            click.echo(f"  {usecases.describe_event(consent_event)}")
    left = sub.unsubscribed_at
    click.echo(f"subscribed at {sub.subscribed_at.isoformat(timespec='seconds') if sub.subscribed_at else '-'}"
               + (f", unsubscribed at {left.isoformat(timespec='seconds')}" if left else ""))
    held = details.suppression
    click.echo(f"suppressed: {held.reason} since {held.created_at.isoformat(timespec='seconds')} ({held.detail})"
               if held else "suppressed: no")
    if details.events or details.suppressions:
        click.echo("history:")
    for event in details.events:
        click.echo(f"  {event.created_at.isoformat(timespec='seconds')}  {event.kind:<11} via {event.source:<14} "
                   f"{event.outcome}: {event.reason}" + (f" (edition {event.edition_id})" if event.edition_id else ""))
    for lifted in details.suppressions:
        if lifted.lifted_at:
            click.echo(f"  {lifted.lifted_at.isoformat(timespec='seconds')}  lifted      {lifted.reason} "
                       f"suppression: {lifted.lifted_reason}")


@subscribers.command("unsuppress")
@click.argument("address")
@click.option("--reason", required=True, help="Why the address may be mailed again (kept in its history).")
@pass_context
def subscribers_unsuppress(ctx: Context, address: str, reason: str) -> None:
    """Lift the suppression of ADDRESS (after a bounce or complaint), with a recorded reason."""
    from .. import usecases

    lifted = usecases.lift_suppression(ctx.config, address, reason)
    click.echo(f"{address}: {'suppression lifted' if lifted else 'was not suppressed'}")


@subscribers.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--confirmed", is_flag=True, help="Every new row has already agreed: subscribe them at once (recorded "
                                                "as the operator's word). Without it, each gets a confirmation email.")
@pass_context
def subscribers_import(ctx: Context, csv_file: Path, confirmed: bool) -> None:
    """Merge CSV_FILE (header row with an 'email' column) into the subscribers."""
    from .. import usecases

    report = usecases.import_subscribers(ctx.config, csv_file, confirmed=confirmed)
    for problem in report.invalid:
        click.echo(f"skipped {problem}", err=True)
    for problem in report.refused:
        click.echo(problem, err=True)
    click.echo(f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
               f"kept unsubscribed {report.kept_unsubscribed}, "
               f"duplicates {report.duplicates}, invalid {len(report.invalid)}"
               + ("" if confirmed else f", confirmations sent {report.confirmations}")
               + (f", not sent {len(report.refused)} (run the import again once the relay takes them)"
                  if report.refused else "")
               + (f", kept suppressed {report.kept_suppressed}" if report.kept_suppressed else ""))



@subscribers.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write (default: stdout).")
@pass_context
def subscribers_export(ctx: Context, output: Path | None) -> None:
    """Write all subscribers as CSV (email, name, status, dates, other columns)."""
    from .. import usecases

    if output:
        with output.open("w", newline="", encoding="utf-8") as handle:
            count = usecases.export_subscribers(ctx.config, handle)
        click.echo(f"exported {count} subscribers to {output}", err=True)
    else:
        usecases.export_subscribers(ctx.config, sys.stdout)

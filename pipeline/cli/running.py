"""Building and sending: init, run, validate, send, worker, lint.

Imports inside functions: each command imports what it calls, so ``pipeline --help`` and
``--version`` load no SQLAlchemy, pydantic, premailer or feedgen.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .base import EXIT_PARTIAL, Context, UserError, cli, pass_context, shown_path

if TYPE_CHECKING:
    from ..delivery.editions import EditionPlan
    from ..delivery.engine import SendReport
    from ..usecases import RunOutcome

log = logging.getLogger("pipeline")


def _report_sends(reports: list[SendReport]) -> None:
    for report in reports:
        click.echo(f"edition {report.edition_id}: sent {report.sent}, failed {report.failed}, "
                   f"deferred {report.deferred}, retried {report.retried}, already done {report.done_before}"
                   + (f", withdrawn {report.withdrawn}" if report.withdrawn else "")
                   + (" (stopped early)" if report.stopped else ""))
        if report.unreachable:
            click.echo(f"  the mail server could not be reached: {report.unreachable}")
        if report.next_retry:
            click.echo(f"  deferred messages are due again from {report.next_retry.isoformat(timespec='seconds')}; "
                       "`pipeline send` (or a scheduled send job) retries them")
        for email, reply in report.failures[:20]:
            click.echo(f"  failed: {email}: {reply}")


def _edition_plan_line(plan: EditionPlan) -> str:
    """The edition line; the item count only when the plan has items (an unchanged run does not look)."""
    items = f"; {len(plan.items)} items" if plan.items else ""
    return f"edition: {plan.edition_id or '-'} ({plan.reason}{items})"


LISTED_UNCHANGED = 20  # up to this many unchanged files are listed by name; more are counted (-v lists them)


def _report_run(outcome: RunOutcome, dry_run: bool = False, verbose: bool = False) -> None:
    if outcome.action == "bounces":
        counts = outcome.notes.get("bounce_outcomes") or {}
        click.echo(f"bounce mailbox: {outcome.notes.get('bounce_messages', 0)} new messages: "
                   + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to do"))
        return
    if outcome.unchanged:
        click.echo("nothing changed since the last run: outputs are up to date")
    else:
        click.echo(f"{len(outcome.items)} items")
    written = set(outcome.written)  # a set: 15,000 files looked up in a list was a third of a cold build
    unchanged = [] if dry_run else [path for path in outcome.files if path not in written]
    # Like git status: what changed by name; the unchanged by name only on a small site or with -v
    # (after one edit of 10,000 stories, 12,000 "unchanged" lines were a quarter of the run).
    list_unchanged = verbose or len(unchanged) <= LISTED_UNCHANGED
    lines = []
    cwd = os.getcwd()
    for path in outcome.files:
        if dry_run or path in written:
            lines.append(f"{'would write' if dry_run else 'wrote':>11}  {shown_path(path, cwd)}")
        elif list_unchanged:
            lines.append(f"{'unchanged':>11}  {shown_path(path, cwd)}")
    if unchanged and not list_unchanged:
        lines.append(f"{'unchanged':>11}  {len(unchanged):,} other files (-v lists them)")
    if lines:
        click.echo("\n".join(lines))
    for path in outcome.removed:  # made by an earlier run, no longer made (a deleted story's topic feed)
        click.echo(f"{'would remove' if dry_run else 'removed':>11}  {shown_path(path)}")
    if outcome.edition is not None:
        plan = outcome.edition
        click.echo(_edition_plan_line(plan))
    _report_sends(outcome.reports)


def _exit_for(outcome: RunOutcome) -> None:
    """Non-zero when messages failed or were deferred, so cron and systemd notice."""
    if outcome.status == "failed":
        raise UserError("no message could be delivered (see above; `pipeline status` shows the ledger)", 1)
    if outcome.status == "partial":
        raise UserError("some messages failed or were deferred (see above)", EXIT_PARTIAL)


_INIT_QUESTIONS = {"name": "Organisation name", "site_url": "Address the site is published at (https://...)",
                   "sender": "Sender address of the digest", "postal_address": "Postal address (shown in every email)",
                   "timezone": "Timezone (IANA, e.g. Europe/London)"}


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="The organisation's name.")
@click.option("--site-url", help="Where public/ will be published, e.g. https://news.example.org/.")
@click.option("--from", "sender", help="Sender address of the digest, e.g. news@example.org.")
@click.option("--postal-address", help="The organisation's postal address (every bulk email must carry one).")
@click.option("--timezone", help="IANA timezone of the edition dates and the schedule, e.g. Europe/London.")
def init(folder: Path, name: str | None, site_url: str | None, sender: str | None, postal_address: str | None,
         timezone: str | None) -> None:
    """Start a new project in FOLDER: config.yaml, one example story, deploy/ files, .gitignore, pipeline.env.

    Options not given are asked for on a terminal. Then `cd FOLDER && pipeline run` builds it at once.
    """
    from ..newproject import NewProject, create

    answers = {"name": name, "site_url": site_url, "sender": sender, "postal_address": postal_address,
               "timezone": timezone}
    for key, question in _INIT_QUESTIONS.items():
        if answers[key] is None:
            if not sys.stdin.isatty():
                option = "--from" if key == "sender" else "--" + key.replace("_", "-")
                raise UserError(f"{option}: required (no terminal to ask on)", 2)
            answers[key] = click.prompt(question, default="UTC" if key == "timezone" else None)
    written = create(NewProject(folder, **{key: str(value) for key, value in answers.items()}))
    for path in written:
        click.echo(f"wrote  {shown_path(path)}")
    click.echo(f"next: cd {shown_path(folder.resolve())} && pipeline run   (then `pipeline preview` to look at it)")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Build everything and show what would be sent; write, fetch and send "
                                              "nothing (remote items are those of the last fetch).")
@click.option("--no-send", is_flag=True, help="Write the feeds and digest but send no email.")
@click.option("--job", "job_name", metavar="NAME",
              help="Run as the scheduled job NAME (its action; recorded under its name).")
@click.option("--wait", is_flag=True,
              help="If another run holds the lock, wait for it instead of exiting with status 75.")
@click.option("--force", is_flag=True, help="Send even if the pre-send checks (pipeline lint) find problems.")
@pass_context
def run(ctx: Context, dry_run: bool, no_send: bool, job_name: str | None, wait: bool, force: bool) -> None:
    """Read the content, write the feeds and the digest, and send the new edition.

    Lists each file it wrote and each it removed; the unchanged ones by name when there are at most
    20 of them (or with -v), else as a count. Safe from cron: a second run while one is going exits
    at once with status 75. Exits 2 when some messages failed or were deferred, 1 when none could be
    delivered.
    """
    from .. import usecases

    if dry_run:
        _report_run(usecases.dry_run(ctx.config, send=not no_send), dry_run=True, verbose=bool(ctx.verbose))
        return
    action: usecases.Action | None = "feeds" if no_send else None
    outcome = usecases.run(ctx.config, job=job_name or usecases.MANUAL_JOB, action=action, wait=wait, force=force)
    _report_run(outcome, verbose=bool(ctx.verbose))
    _exit_for(outcome)


@cli.command()
@pass_context
def validate(ctx: Context) -> None:
    """Check the config and every content file; write nothing."""
    from .. import usecases

    count = usecases.validate(ctx.config)
    click.echo(f"{ctx.config.source_file}: ok; {count} content items ok")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send, fetch and change nothing.")
@click.option("--to", "to_address", metavar="ADDRESS",
              help="Send a test copy of the next edition to one address, subject prefixed [TEST]; not recorded.")
@click.option("--force", is_flag=True, help="Send even if the pre-send checks (pipeline lint) find problems.")
@click.option("--wait", is_flag=True,
              help="If another run holds the lock, wait for it instead of exiting with status 75.")
@click.option("--queued-only", is_flag=True, help="Create no new edition; only send messages already queued and due "
                                                  "(deferred retries, interrupted sends).")
@click.option("--retry-failed", "retry_edition", is_flag=False, flag_value="latest", default=None, metavar="[EDITION]",
              help="First put the failed messages of EDITION (default: the latest) back in the queue.")
@pass_context
def send(ctx: Context, dry_run: bool, to_address: str | None, force: bool, wait: bool, queued_only: bool,
         retry_edition: str | None) -> None:
    """Create the edition if there are new items, then send whatever is due (deferred retries too).

    A recorded run like `pipeline run`, which also writes the archive pages the
    messages link to, but leaves the feeds and the web digest alone.
    """
    from .. import usecases

    config = ctx.config
    config.require_delivery()
    if to_address:
        copy = usecases.send_test_copy(config, to_address)
        click.echo(f"test copy sent to {to_address}: {copy.reply}")
        if copy.findings:
            click.echo(f"the real send will stop on {len(copy.findings)} pre-send check(s) "
                       "(pipeline lint; --force overrides only those not marked):", err=True)
            for finding in copy.findings:
                click.echo(f"  {finding}", err=True)
        return
    if dry_run:
        preview = usecases.send_dry_run(config)
        plan = preview.edition
        click.echo(_edition_plan_line(plan))
        for edition_id, counts in preview.due.items():
            click.echo(f"edition {edition_id}: would send {counts['pending'] + counts['sending']}, "
                       f"deferred {counts['deferred']}, already sent {counts['sent']}")
        if plan.reason == "would create the edition":
            click.echo(f"would send the new edition to {preview.subscribers} subscribers")
        for finding in preview.blocked:
            click.echo(f"but sending is blocked until this is fixed: {finding}")
        for finding in preview.refused:
            click.echo(f"but the pre-send checks stop it (unless --force): {finding}")
        return
    if retry_edition:
        edition_id, count = usecases.retry_failed(config, None if retry_edition == "latest" else retry_edition)
        click.echo(f"edition {edition_id}: {count} failed messages queued again")
    outcome = usecases.run(config, action="retry" if queued_only else "send", wait=wait, force=force)
    if outcome.notes.get("nothing_due"):
        click.echo("no queued message is due")
    if outcome.edition is not None:
        plan = outcome.edition
        click.echo(_edition_plan_line(plan))
    _report_sends(outcome.reports)
    _exit_for(outcome)


@cli.command()
@click.option("--once", is_flag=True, help="Send what is due now, then exit (instead of waiting for more).")
@pass_context
def worker(ctx: Context, once: bool) -> None:
    """Send due messages of every edition until stopped (SIGTERM or Ctrl-C); makes no editions or outputs.

    Run any number of workers, on any number of machines, against one PostgreSQL database
    ($PIPELINE_DATABASE_URL); on SQLite one sends at a time.
    """
    import signal
    import threading

    from .. import usecases

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("pipeline").info("received %s: finishing the current message, then stopping",
                                           signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        report = usecases.work(ctx.config, stop=stop, once=once)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(f"worker {report.worker}: stopped")
    _report_sends(report.reports)


@cli.command()
@pass_context
def lint(ctx: Context) -> None:
    """Check the next digest, a sample message and the feeds for what breaks email; exit 1 on problems."""
    from .. import usecases
    from ..mail.lint import LintFailed

    chosen, findings = usecases.lint(ctx.config)
    if findings:
        raise LintFailed(findings)
    click.echo(f"no problems found in the digest of {len(chosen)} items, its message and the feeds")

"""The ``pipeline`` command line.  Thin: it parses options, calls the library and reports."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import __version__
from .errors import PipelineError
from .logs import configure_logging

DEFAULT_CONFIG = "config.yaml"  # as pipeline.config has it; not imported, so --help needs no pydantic

if TYPE_CHECKING:
    from .config import Config
    from .delivery.editions import EditionPlan
    from .delivery.engine import SendReport
    from .reports import EditionRow, RunRow, StatusReport
    from .usecases import RunOutcome

# The heavy imports (SQLAlchemy, premailer, feedgen) happen inside the commands that need them,
# so `pipeline --help` and `pipeline --version` start fast.

log = logging.getLogger("pipeline")


class Context:
    """Per-invocation state: the config (loaded on first use) and the logging options."""

    def __init__(self, config_path: Path, verbose: int, log_format: str | None, log_file: Path | None):
        self.config_path = config_path
        self.verbose = verbose
        self.log_format = log_format
        self.log_file = log_file
        self._config: Config | None = None
        configure_logging(self._level(None), log_format or "text", log_file)

    def _level(self, config: Config | None) -> str | int:
        if self.verbose:
            return logging.DEBUG if self.verbose > 1 else logging.INFO
        return config.logging.level if config else logging.WARNING

    @property
    def config(self) -> Config:
        if self._config is None:
            from .config import load_config

            self._config = load_config(self.config_path)
            settings = self._config.logging
            log_file = self.log_file or (self._config.resolve(settings.file) if settings.file else None)
            configure_logging(self._level(self._config), self.log_format or settings.format, log_file)
        return self._config


pass_context = click.make_pass_decorator(Context)


class UserError(click.ClickException):
    """A ``PipelineError`` as click shows it: one ``Error: ...`` line, the error's exit status."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class; ours varies


# The group's own options, which may also be written after the command (`pipeline run --log-file x`), as
# crontab lines and habit write them.
_GLOBAL_WITH_VALUE = ("--config", "--log-format", "--log-file")


def _is_global_flag(arg: str) -> bool:
    return arg == "--verbose" or (len(arg) > 1 and arg[0] == "-" and set(arg[1:]) == {"v"})


def hoist_global_options(args: list[str]) -> list[str]:
    """Move the global options written after the command to just before it (so, as on any command line, the
    later of two wins); ``--`` ends the search."""
    before: list[str] = []
    hoisted: list[str] = []
    after: list[str] = []
    index = 0
    while index < len(args) and not after:
        arg = args[index]
        step = 2 if arg in _GLOBAL_WITH_VALUE else 1
        if arg.startswith("-"):
            before += args[index:index + step]
        else:
            after.append(arg)
        index += step
    while index < len(args):
        arg = args[index]
        if arg == "--":
            after += args[index:]
            break
        if arg in _GLOBAL_WITH_VALUE and index + 1 < len(args):
            hoisted += args[index:index + 2]
            index += 2
            continue
        if arg.split("=", 1)[0] in _GLOBAL_WITH_VALUE or _is_global_flag(arg):
            hoisted.append(arg)
        else:
            after.append(arg)
        index += 1
    return before + hoisted + after


class PipelineGroup(click.Group):
    """Turns user-fixable errors into one line and an exit status, for the console script
    and for click's ``CliRunner`` alike (so tests see exactly what an operator sees).
    Global options work before or after the command (``hoist_global_options``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PipelineError as exc:
            raise UserError(str(exc), getattr(exc, "exit_code", 1)) from None


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@click.group(cls=PipelineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_CONFIG,
              show_default=True, envvar="PIPELINE_CONFIG", help="Config file; relative paths in it are relative to it.")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug); overrides logging.level.")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Log lines as text or JSON objects.")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), help="Also write the log to this file.")
@click.version_option(__version__, prog_name="pipeline")
@click.pass_context
def cli(ctx: click.Context, config_path: Path, verbose: int, log_format: str | None, log_file: Path | None) -> None:
    """Publish news items as RSS, Atom and JSON feeds and an email digest.

    The options above may also follow the command: `pipeline run --log-file x.log`."""
    ctx.obj = Context(config_path, verbose, log_format, log_file)


EXIT_PARTIAL = 2  # some messages were delivered, some failed or were deferred


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


def _report_run(outcome: RunOutcome, dry_run: bool = False) -> None:
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
    for path in outcome.files:
        state = "would write" if dry_run else ("wrote" if path in written else "unchanged")
        click.echo(f"{state:>11}  {_shown(path)}")
    for path in outcome.removed:  # made by an earlier run, no longer made (a deleted story's topic feed)
        click.echo(f"{'would remove' if dry_run else 'removed':>11}  {_shown(path)}")
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
    from .newproject import NewProject, create

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
        click.echo(f"wrote  {_shown(path)}")
    click.echo(f"next: cd {_shown(folder.resolve())} && pipeline run   (then `pipeline preview` to look at it)")


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

    Safe from cron: a second run while one is going exits at once with status 75.
    Exits 2 when some messages failed or were deferred, 1 when none could be delivered.
    """
    from . import usecases

    if dry_run:
        _report_run(usecases.dry_run(ctx.config, send=not no_send), dry_run=True)
        return
    action: usecases.Action | None = "feeds" if no_send else None
    outcome = usecases.run(ctx.config, job=job_name or usecases.MANUAL_JOB, action=action, wait=wait, force=force)
    _report_run(outcome)
    _exit_for(outcome)


@cli.command()
@pass_context
def validate(ctx: Context) -> None:
    """Check the config and every content file; write nothing."""
    from . import usecases

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
    from . import usecases

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

    from . import usecases

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
    from . import usecases
    from .mail.lint import LintFailed

    chosen, findings = usecases.lint(ctx.config)
    if findings:
        raise LintFailed(findings)
    click.echo(f"no problems found in the digest of {len(chosen)} items, its message and the feeds")


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
    from . import usecases

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
    from . import usecases

    email, changed = usecases.remove_subscriber(ctx.config, address, via)
    click.echo(f"{email}: {'unsubscribed' if changed else 'was already unsubscribed'}")


@subscribers.command("list")
@click.option("--status", type=click.Choice(["subscribed", "pending", "unsubscribed"]), help="Only this status.")
@click.option("--suppressed", is_flag=True, help="Only suppressed addresses: address, reason, since, detail.")
@pass_context
def subscribers_list(ctx: Context, status: str | None, suppressed: bool) -> None:
    """List subscribers, one per line: address, status, name."""
    from . import usecases

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
    from . import usecases

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
    from . import usecases

    lifted = usecases.lift_suppression(ctx.config, address, reason)
    click.echo(f"{address}: {'suppression lifted' if lifted else 'was not suppressed'}")


@subscribers.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--confirmed", is_flag=True, help="Every new row has already agreed: subscribe them at once (recorded "
                                                "as the operator's word). Without it, each gets a confirmation email.")
@pass_context
def subscribers_import(ctx: Context, csv_file: Path, confirmed: bool) -> None:
    """Merge CSV_FILE (header row with an 'email' column) into the subscribers."""
    from . import usecases

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
    from . import usecases

    if output:
        with output.open("w", newline="", encoding="utf-8") as handle:
            count = usecases.export_subscribers(ctx.config, handle)
        click.echo(f"exported {count} subscribers to {output}", err=True)
    else:
        usecases.export_subscribers(ctx.config, sys.stdout)


def _serve_until_interrupted(server, url: str) -> None:
    click.echo(f"serving {url} (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.command("signup-snippet")
@click.option("--origin", metavar="URL", help="The website the form will be pasted into (e.g. https://example.org); "
                                              "warns when the web app would refuse its posts.")
@pass_context
def signup_snippet(ctx: Context, origin: str | None) -> None:
    """Print the sign-up form as HTML to paste into your own website; it posts to the web app's /subscribe."""
    from .snippet import signup_snippet as make_snippet

    snippet = make_snippet(ctx.config, origin)
    if snippet.warning:
        click.echo(f"Warning: {snippet.warning}", err=True)
    click.echo(snippet.html, nl=False)


@cli.command("serve-web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8025, show_default=True, type=int, help="Port to listen on (0: any free port).")
@pass_context
def serve_web(ctx: Context, host: str, port: int) -> None:
    """Run the web app (one-click unsubscribe, signup, confirmation, preferences) on waitress (put it
    behind your HTTPS reverse proxy)."""
    from . import usecases

    with usecases.web_server(ctx.config, host, port) as server:
        _serve_until_interrupted(server, f"http://{host}:{server.server_port}/unsubscribe")


@cli.group()
def desk() -> None:
    """The editor's desk (docs/how-to/desk.md): its accounts, and serving it alone."""


@desk.command("add-user")
@click.argument("address")
@click.option("--role", type=click.Choice(["editor", "admin"]), required=True,
              help="editor: write, preview and test-send; admin: also send editions and change subscribers.")
@click.option("--link", is_flag=True, help="Print a one-time set-password link (valid 48 hours) instead of "
                                           "asking for the password here.")
@pass_context
def desk_add_user(ctx: Context, address: str, role: str, link: bool) -> None:
    """Create the desk account ADDRESS (or change its role and password); its sessions end."""
    from . import usecases

    password = None if link else click.prompt("Password (at least 12 characters)", hide_input=True,
                                              confirmation_prompt=True)
    outcome, set_password = usecases.add_desk_user(ctx.config, address, role, password)
    click.echo(f"{address}: {outcome} as {role}")
    if set_password:
        click.echo(f"set-password link (once, within 48 hours): {set_password}")


@desk.command("serve")
@click.option("--host", default=None, help="Address to listen on (default: desk.host, else 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port to listen on (default: desk.port; 0: any free port).")
@pass_context
def desk_serve(ctx: Context, host: str | None, port: int | None) -> None:
    """Serve the desk alone, at /desk/ of its own address (e.g. loopback or an intranet)."""
    from . import usecases

    with usecases.desk_server(ctx.config, host, port) as server:
        _serve_until_interrupted(server, f"http://{host or ctx.config.desk.host or '127.0.0.1'}:"
                                         f"{server.server_port}/desk/")


@cli.group()
def bounces() -> None:
    """Bounces, complaints and mailto unsubscribes."""


@bounces.command("fetch")
@pass_context
def bounces_fetch(ctx: Context) -> None:
    """Read the bounce mailbox (bounces.mailbox) once; each message is counted once, ever."""
    from . import usecases

    fetched = usecases.fetch_bounces(ctx.config)
    counts = ", ".join(f"{outcome} {count}" for outcome, count in sorted(fetched.counts().items())) or "nothing to do"
    click.echo(f"{fetched.fetched} new messages ({fetched.already} seen before): {counts}")


@cli.command("serve-bounces")
@click.option("--host", default=None, help="Address to listen on (default bounces.receiver.host).")
@click.option("--port", default=None, type=int, help="Port to listen on (default bounces.receiver.port; 0: any).")
@pass_context
def serve_bounces(ctx: Context, host: str | None, port: int | None) -> None:
    """Receive bounces by SMTP for the bounce domain (point its MX here); Ctrl-C or SIGTERM stops it."""
    import signal
    import threading

    from . import usecases

    stop = threading.Event()
    with usecases.bounce_receiver(ctx.config, host, port) as receiver:
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        click.echo(f"receiving bounces on {receiver.hostname}:{receiver.port} (Ctrl-C to stop)", err=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)


@cli.command()
@click.option("--fetch", "do_fetch", is_flag=True,
              help="Fetch every source now (and store what it gives) before listing.")
@pass_context
def sources(ctx: Context, do_fetch: bool) -> None:
    """List the remote sources: last fetch, status and item count."""
    from . import usecases

    local, rows = usecases.sources(ctx.config, fetch=do_fetch)
    click.echo(f"{'content':<20} {'(local files)':<48} {'-':<25} ok  {local} items")
    for row in rows:
        fetched = row.fetched_at.isoformat(timespec="seconds") if row.fetched_at else "never fetched"
        click.echo(f"{row.name:<20} {row.url:<48} {fetched:<25} {row.status}  {row.item_count} items")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port (0: any free port).")
@click.option("--screenshots", type=click.Path(file_okay=False, path_type=Path),
              help="Instead of serving: rebuild, write screenshots of the digest (phone, desktop, dark) here, exit.")
@pass_context
def preview(ctx: Context, host: str, port: int, screenshots: Path | None) -> None:
    """Serve the outputs on localhost to look at them; rebuilds on each visit, never sends."""
    from . import usecases

    config = ctx.config
    if screenshots:
        from .publish.digest import HTML_FILE
        from .service.browser import screenshot_digest

        usecases.publish(config)
        for path in screenshot_digest(config.path("output") / HTML_FILE, screenshots):
            click.echo(f"wrote {_shown(path)}")
        return
    from .service.preview import make_preview_server

    server = make_preview_server(config, host, port)
    _serve_until_interrupted(server, f"http://{host}:{server.server_port}/")


@cli.command()
@click.option("--now", "run_now", is_flag=True, help="Also run every job once right away.")
@pass_context
def serve(ctx: Context, run_now: bool) -> None:
    """Run the scheduled jobs as a long-running service (stop with SIGTERM or Ctrl-C)."""
    from .service.scheduler import run_service

    config = ctx.config
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)  # a service reports every run
    run_service(config, run_now=run_now)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--runs", default=10, show_default=True, help="How many recent runs to show.")
@pass_context
def status(ctx: Context, as_json: bool, runs: int) -> None:
    """Recent runs, next scheduled runs, editions with unsent messages, and the subscriber count."""
    import json

    from . import usecases

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


def main() -> None:
    """The console script: click's own handling, except that Ctrl-C exits 130 like other Unix tools."""
    try:
        cli.main(prog_name="pipeline", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)

"""The ``pipeline`` command line.  Thin: it parses options, calls the library and reports."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from . import __version__
from .build import collect_items, open_storage, run_pipeline
from .config import DEFAULT_CONFIG, Config, load_config
from .errors import PipelineError
from .logs import configure_logging

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
        self.exit_code = exit_code


class PipelineGroup(click.Group):
    """Turns user-fixable errors into one line and an exit status, for the console script
    and for click's ``CliRunner`` alike (so tests see exactly what an operator sees)."""

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
    """Publish news items as RSS, Atom and JSON feeds and an email digest."""
    ctx.obj = Context(config_path, verbose, log_format, log_file)


def _report_sends(reports) -> None:
    for report in reports:
        click.echo(f"edition {report.edition_id}: sent {report.sent}, failed {report.failed}, "
                   f"retried {report.retried}, skipped {report.skipped}" + (" (stopped early)" if report.stopped else ""))
        for email, reply in report.failures[:20]:
            click.echo(f"  failed: {email}: {reply}")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Build everything and show what would be sent; write and send nothing.")
@click.option("--no-send", is_flag=True, help="Write the feeds and digest but send no email.")
@click.option("--job", "job_name", metavar="NAME", help="Run as the scheduled job NAME (its action; recorded under its name).")
@click.option("--wait", is_flag=True, help="If another run holds the lock, wait for it instead of exiting with status 75.")
@click.option("--force", is_flag=True, help="Send even if the pre-send checks (pipeline lint) find problems.")
@pass_context
def run(ctx: Context, dry_run: bool, no_send: bool, job_name: str | None, wait: bool, force: bool) -> None:
    """Read the content, write the feeds and the digest, and send the new edition.

    Safe from cron: a second run while one is going exits at once with status 75.
    """
    from .service.scheduler import execute

    config = ctx.config
    if dry_run:
        result = run_pipeline(config, dry_run=True, send=not no_send)
        _report_run(result, dry_run=True)
        return
    action = "feeds" if no_send else "run"
    if job_name:
        if job_name not in config.schedule.jobs:
            raise PipelineError(f"{config.source_file}: schedule.jobs: no job named {job_name!r}")
        action = config.schedule.jobs[job_name].action
    _summary, result = execute(config, job_name or "manual", action, wait=wait, force=force)
    _report_run(result, dry_run=False)


def _report_run(result, dry_run: bool) -> None:
    if result.skipped:
        click.echo("nothing changed since the last run: outputs are up to date")
    else:
        click.echo(f"{len(result.items)} items")
    for path in result.files:
        state = "would write" if dry_run else ("wrote" if path in result.written else "unchanged")
        click.echo(f"{state:>11}  {_shown(path)}")
    if result.edition is not None:
        plan = result.edition
        click.echo(f"edition: {plan.edition_id or '-'} ({plan.reason}; {len(plan.items)} items)")
    _report_sends(result.reports)


@cli.command()
@pass_context
def validate(ctx: Context) -> None:
    """Check the config and every content file; write nothing."""
    config = ctx.config
    items = collect_items(config)
    click.echo(f"{config.source_file}: ok; {len(items)} content items ok")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send nothing, change nothing.")
@click.option("--to", "to_address", metavar="ADDRESS",
              help="Send a test copy of the next edition to one address, subject prefixed [TEST]; not recorded.")
@click.option("--force", is_flag=True, help="Send even if the pre-send checks (pipeline lint) find problems.")
@click.option("--wait", is_flag=True, help="If another run holds the lock, wait for it instead of exiting with status 75.")
@pass_context
def send(ctx: Context, dry_run: bool, to_address: str | None, force: bool, wait: bool) -> None:
    """Create the edition if there are new items, then send whatever is still unsent."""
    from .delivery.engine import prepare_edition, send_pending, send_test
    from .service.scheduler import run_lock
    from .subscribers import normalise_address

    config = ctx.config
    config.require_delivery()
    with open_storage(config) as storage:
        items = collect_items(config, storage)
        if to_address:
            address = normalise_address(to_address)
            reply = send_test(items, storage, config, address)
            click.echo(f"test copy sent to {address}: {reply}")
            return
        if dry_run:
            plan = prepare_edition(items, storage, config, dry_run=True)
            click.echo(f"edition: {plan.edition_id or '-'} ({plan.reason}; {len(plan.items)} items)")
            for edition_id in storage.editions_with_work():
                counts = storage.ledger_counts(edition_id)
                click.echo(f"edition {edition_id}: would send {counts['pending'] + counts['sending']}, "
                           f"already sent {counts['sent']}")
            if plan.reason == "would create the edition":
                click.echo(f"would send the new edition to {storage.count_subscribers()} subscribers")
            return
        # The same lock as `pipeline run` and the service: two senders must never share an edition.
        with run_lock(config, wait=wait):
            plan = prepare_edition(items, storage, config)
            click.echo(f"edition: {plan.edition_id or '-'} ({plan.reason}; {len(plan.items)} items)")
            _report_sends(send_pending(items, storage, config, force=force))


@cli.command()
@pass_context
def lint(ctx: Context) -> None:
    """Check the next digest, a sample message and the feeds for what breaks email; exit 1 on problems."""
    from .delivery.engine import lint_next_edition
    from .mail.lint import LintFailed

    config = ctx.config
    config.require_delivery()
    with open_storage(config) as storage:
        items = collect_items(config, storage)
        chosen, findings = lint_next_edition(items, storage, config)
    if findings:
        raise LintFailed(findings)
    click.echo(f"no problems found in the digest of {len(chosen)} items, its message and the feeds")


@cli.group()
def subscribers() -> None:
    """Manage subscribers: add, remove, list, import, export."""


@subscribers.command("add")
@click.argument("address")
@click.option("--name", help="The subscriber's name.")
@pass_context
def subscribers_add(ctx: Context, address: str, name: str | None) -> None:
    """Subscribe ADDRESS (also resubscribes an address that had unsubscribed)."""
    from .subscribers import normalise_address

    email = normalise_address(address)
    with open_storage(ctx.config) as storage:
        click.echo(f"{email}: {storage.add_subscriber(email, name, resubscribe=True)}")


@subscribers.command("remove")
@click.argument("address")
@pass_context
def subscribers_remove(ctx: Context, address: str) -> None:
    """Unsubscribe ADDRESS; it is never mailed again, and no import resubscribes it."""
    from .subscribers import normalise_address

    email = normalise_address(address)
    with open_storage(ctx.config) as storage:
        if storage.get_subscriber(email) is None:
            raise PipelineError(f"{email}: not a subscriber")
        changed = storage.unsubscribe(email)
        click.echo(f"{email}: {'unsubscribed' if changed else 'was already unsubscribed'}")


@subscribers.command("list")
@click.option("--status", type=click.Choice(["subscribed", "unsubscribed"]), help="Only this status.")
@pass_context
def subscribers_list(ctx: Context, status: str | None) -> None:
    """List subscribers, one per line: address, status, name."""
    with open_storage(ctx.config) as storage:
        for sub in storage.iter_subscribers(status):
            click.echo(f"{sub.email}\t{sub.status}\t{sub.name or ''}")


@subscribers.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_context
def subscribers_import(ctx: Context, csv_file: Path) -> None:
    """Merge CSV_FILE (header row with an 'email' column) into the subscribers."""
    from .subscribers import read_csv_file

    with open_storage(ctx.config) as storage:
        report = read_csv_file(storage, csv_file)
    for problem in report.invalid:
        click.echo(f"skipped {problem}", err=True)
    click.echo(f"added {report.added}, updated {report.updated}, kept unsubscribed {report.kept_unsubscribed}, "
               f"duplicates {report.duplicates}, invalid {len(report.invalid)}")


@subscribers.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: stdout).")
@pass_context
def subscribers_export(ctx: Context, output: Path | None) -> None:
    """Write all subscribers as CSV (email, name, status, dates, other columns)."""
    from .subscribers import export_csv

    with open_storage(ctx.config) as storage:
        if output:
            with output.open("w", newline="", encoding="utf-8") as handle:
                count = export_csv(storage, handle)
            click.echo(f"exported {count} subscribers to {output}", err=True)
        else:
            export_csv(storage, sys.stdout)


def _serve_until_interrupted(server, url: str) -> None:
    click.echo(f"serving {url} (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.command("serve-web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8025, show_default=True, type=int, help="Port to listen on (0: any free port).")
@pass_context
def serve_web(ctx: Context, host: str, port: int) -> None:
    """Run the one-click unsubscribe endpoint (for development; use a WSGI server in production)."""
    from .service.web import serve

    with open_storage(ctx.config) as storage:
        server = serve(ctx.config, storage, host, port)
        _serve_until_interrupted(server, f"http://{host}:{server.server_port}/unsubscribe")


@cli.command()
@click.option("--fetch", "do_fetch", is_flag=True, help="Fetch every source now (and store what it gives) before listing.")
@pass_context
def sources(ctx: Context, do_fetch: bool) -> None:
    """List the remote sources: last fetch, status and item count."""
    config = ctx.config
    with open_storage(config) as storage:
        if do_fetch:
            from .sources.remote import read_remote

            read_remote(config, storage)
        states = {state["name"]: state for state in storage.all_source_states()}
        local = collect_items(config)
        click.echo(f"{'content':<20} {'(local files)':<48} {'-':<25} ok  {len(local)} items")
        for source in config.sources:
            state = states.get(source.name) or {}
            fetched = state.get("fetched_at")
            click.echo(f"{source.name:<20} {state.get('url') or source.url:<48} "
                       f"{fetched.isoformat(timespec='seconds') if fetched else 'never fetched':<25} "
                       f"{state.get('status') or '-'}  {state.get('item_count', 0)} items")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port (0: any free port).")
@click.option("--screenshots", type=click.Path(file_okay=False, path_type=Path),
              help="Instead of serving: rebuild, write screenshots of the digest (phone, desktop, dark) here, exit.")
@pass_context
def preview(ctx: Context, host: str, port: int, screenshots: Path | None) -> None:
    """Serve the outputs on localhost to look at them; rebuilds on each visit, never sends."""
    config = ctx.config
    if screenshots:
        from .service.browser import screenshot_digest
        from .publish.digest import HTML_FILE

        run_pipeline(config, send=False, progress=False)
        for path in screenshot_digest(config.path("output") / HTML_FILE, screenshots):
            click.echo(f"wrote {_shown(path)}")
        return
    from .service.preview import serve as serve_preview

    server = serve_preview(config, host, port)
    _serve_until_interrupted(server, f"http://{host}:{server.server_port}/")


@cli.command()
@click.option("--now", "run_now", is_flag=True, help="Also run every job once right away.")
@pass_context
def serve(ctx: Context, run_now: bool) -> None:
    """Run the scheduled jobs as a long-running service (stop with SIGTERM or Ctrl-C)."""
    from .service.scheduler import serve as serve_jobs

    config = ctx.config
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)  # a service reports every run
    serve_jobs(config, run_now=run_now)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--runs", default=10, show_default=True, help="How many recent runs to show.")
@pass_context
def status(ctx: Context, as_json: bool, runs: int) -> None:
    """Recent runs, next scheduled runs, the last edition and the subscriber count."""
    import json

    from .status import collect_status, format_status

    report = collect_status(ctx.config, runs)
    click.echo(json.dumps(report, indent=2, default=str) if as_json else format_status(report))


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

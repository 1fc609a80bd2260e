"""The ``pipeline`` command line.  Thin: it parses options, calls the library and reports."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from . import __version__
from .build import build, collect_items
from .config import DEFAULT_CONFIG, Config, load_config
from .errors import PipelineError

log = logging.getLogger("pipeline")


def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


class Context:
    def __init__(self, config_path: Path):
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


pass_context = click.make_pass_decorator(Context)


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_CONFIG,
              show_default=True, envvar="PIPELINE_CONFIG", help="Config file; relative paths in it are relative to it.")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(__version__, prog_name="pipeline")
@click.pass_context
def cli(ctx: click.Context, config_path: Path, verbose: int) -> None:
    """Publish news items as RSS, Atom and JSON feeds and an email digest."""
    setup_logging(verbose)
    ctx.obj = Context(config_path)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Build everything, write nothing.")
@pass_context
def run(ctx: Context, dry_run: bool) -> None:
    """Read the content, write the feeds and the digest."""
    config = ctx.config
    result = build(config, dry_run=dry_run)
    root = Path.cwd()
    click.echo(f"{len(result.items)} items")
    for path in result.files:
        state = "would write" if dry_run else ("wrote" if path in result.written else "unchanged")
        click.echo(f"{state:>11}  {_shown(path, root)}")


@cli.command()
@pass_context
def validate(ctx: Context) -> None:
    """Check the config and every content file; write nothing."""
    config = ctx.config
    items = collect_items(config)
    click.echo(f"{config.source_file}: ok; {len(items)} content items ok")


def main() -> None:
    try:
        cli.main(standalone_mode=False, prog_name="pipeline")
    except PipelineError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)

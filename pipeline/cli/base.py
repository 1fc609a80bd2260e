"""The command group, its context and error handling, and the console script; the commands are
registered by the modules beside this one.

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

from .. import __version__
from ..errors import PipelineError
from ..logs import configure_logging

DEFAULT_CONFIG = "config.yaml"  # as pipeline.config has it; not imported, so --help needs no pydantic

if TYPE_CHECKING:
    from ..config import Config

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
            from ..config import load_config

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


def shown_path(path: Path, cwd: str | None = None) -> str:
    """``path`` relative to the working folder when it is inside it; ``cwd`` (``os.getcwd()``) when a
    caller shows thousands of paths (a cold build lists every file it wrote)."""
    cwd = os.getcwd() if cwd is None else cwd
    name = str(path)
    if name == cwd:
        return "."
    inside = cwd.rstrip(os.sep) + os.sep
    return name[len(inside):] if name.startswith(inside) else name


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

"""The long-running commands: the web app, the desk, the bounce receiver, the preview, the service;
and the sign-up snippet.

Imports inside functions: each command imports what it calls, so ``pipeline --help`` and
``--version`` load no SQLAlchemy, pydantic, premailer or feedgen.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .base import Context, cli, pass_context, shown_path

if TYPE_CHECKING:
    pass

log = logging.getLogger("pipeline")


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
    from ..snippet import signup_snippet as make_snippet

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
    from ..service import servers

    with servers.web_server(ctx.config, host, port) as server:
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
    from ..service import servers

    password = None if link else click.prompt("Password (at least 12 characters)", hide_input=True,
                                              confirmation_prompt=True)
    outcome, set_password = servers.add_desk_user(ctx.config, address, role, password)
    click.echo(f"{address}: {outcome} as {role}")
    if set_password:
        click.echo(f"set-password link (once, within 48 hours): {set_password}")


@desk.command("serve")
@click.option("--host", default=None, help="Address to listen on (default: desk.host, else 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port to listen on (default: desk.port; 0: any free port).")
@pass_context
def desk_serve(ctx: Context, host: str | None, port: int | None) -> None:
    """Serve the desk alone, at /desk/ of its own address (e.g. loopback or an intranet)."""
    from ..service import servers

    with servers.desk_server(ctx.config, host, port) as server:
        _serve_until_interrupted(server, f"http://{host or ctx.config.desk.host or '127.0.0.1'}:"
                                         f"{server.server_port}/desk/")


@cli.group()
def bounces() -> None:
    """Bounces, complaints and mailto unsubscribes."""


@bounces.command("fetch")
@pass_context
def bounces_fetch(ctx: Context) -> None:
    """Read the bounce mailbox (bounces.mailbox) once; each message is counted once, ever."""
    from .. import usecases

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

    from ..service import servers

    stop = threading.Event()
    with servers.bounce_receiver(ctx.config, host, port) as receiver:
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        click.echo(f"receiving bounces on {receiver.hostname}:{receiver.port} (Ctrl-C to stop)", err=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)




@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port (0: any free port).")
@click.option("--screenshots", type=click.Path(file_okay=False, path_type=Path),
              help="Instead of serving: rebuild, write screenshots of the digest (phone, desktop, dark) here, exit.")
@pass_context
def preview(ctx: Context, host: str, port: int, screenshots: Path | None) -> None:
    """Serve the outputs on localhost to look at them; rebuilds on each visit, never sends."""
    from .. import usecases

    config = ctx.config
    if screenshots:
        from ..publish.digest import HTML_FILE
        from ..service.browser import screenshot_digest

        usecases.publish(config)
        for path in screenshot_digest(config.path("output") / HTML_FILE, screenshots):
            click.echo(f"wrote {shown_path(path)}")
        return
    from ..service.preview import make_preview_server

    server = make_preview_server(config, host, port)
    _serve_until_interrupted(server, f"http://{host}:{server.server_port}/")


@cli.command()
@click.option("--now", "run_now", is_flag=True, help="Also run every job once right away.")
@pass_context
def serve(ctx: Context, run_now: bool) -> None:
    """Run the scheduled jobs as a long-running service (stop with SIGTERM or Ctrl-C)."""
    from ..service.scheduler import run_service

    config = ctx.config
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)  # a service reports every run
    run_service(config, run_now=run_now)

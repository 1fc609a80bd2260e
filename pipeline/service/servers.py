"""The long-running parts, each over its own state database: the web app, the desk alone, the bounce
receiver; and the desk's accounts.  The CLI runs them until interrupted; this is the service layer's
side of those commands, so the command line still never opens a store itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..usecases import open_storage

if TYPE_CHECKING:
    from ..config import Config
    from .http_server import WebServer


@contextmanager
def web_server(config: Config, host: str, port: int) -> Iterator[WebServer]:
    """`serve-web`: the web app on its production server; the state is closed when the block ends."""
    from .web import make_web_server  # the web stack only for the commands that serve

    with open_storage(config) as storage:
        server = make_web_server(config, storage, host, port)
        try:
            yield server
        finally:
            server.server_close()


@contextmanager
def desk_server(config: Config, host: str | None, port: int | None) -> Iterator[WebServer]:
    """`desk serve`: the editor's desk alone."""
    from ..desk.web import make_desk_server  # Flask only for the desk

    with open_storage(config) as storage:
        server = make_desk_server(config, storage, host, port)
        try:
            yield server
        finally:
            server.server_close()


@contextmanager
def bounce_receiver(config: Config, host: str | None, port: int | None) -> Iterator[Any]:
    """`serve-bounces`: the SMTP receiver for the bounce domain, started; stopped when the block ends."""
    from ..usecases.bounces import make_bounce_receiver

    with open_storage(config) as storage:
        receiver = make_bounce_receiver(config, storage, host, port)
        receiver.start()
        try:
            yield receiver
        finally:
            receiver.stop()


def add_desk_user(config: Config, address: str, role: str, password: str | None) -> tuple[str, str | None]:
    """`desk add-user`: the outcome, and a one-time set-password link when no password was given."""
    from ..desk.accounts import add_user, set_password_link

    with open_storage(config) as storage:
        outcome, token = add_user(storage, address, role, password)
    return outcome, set_password_link(config, token) if token else None

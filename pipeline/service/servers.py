"""The long-running parts, each over its own state database: the web app, the desk alone, the bounce
receiver; and the desk's accounts.  The CLI runs them until interrupted; this is the service layer's
side of those commands, so the command line still never opens a store itself."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..desk.accounts import add_user, set_password_link
from ..environment import signing_secret
from ..errors import PipelineError, require_extra
from ..usecases import open_storage
from ..usecases.bounces import bounce_addresses, handle_received

if TYPE_CHECKING:
    from ..config import Config
    from ..state.storage import Storage
    from .http_server import WebServer


@contextmanager
def _serving(config: Config, make: Callable[[Storage], WebServer]) -> Iterator[WebServer]:
    """A server over its own state database; the server, then the state, closed when the block ends."""
    with open_storage(config) as storage:
        server = make(storage)
        try:
            yield server
        finally:
            server.server_close()


def web_server(config: Config, host: str, port: int) -> ContextManager[WebServer]:
    """`serve-web`: the web app on its production server."""
    from .web import make_web_server  # the web stack only for the commands that serve

    return _serving(config, lambda storage: make_web_server(config, storage, host, port))


def desk_server(config: Config, host: str | None, port: int | None) -> ContextManager[WebServer]:
    """`desk serve`: the editor's desk alone."""
    from ..desk.web import make_desk_server  # Flask only for the desk

    return _serving(config, lambda storage: make_desk_server(config, storage, host, port))


@contextmanager
def bounce_receiver(config: Config, host: str | None, port: int | None) -> Iterator[Any]:
    """`serve-bounces`: the SMTP receiver for the bounce domain, started; stopped when the block ends."""
    with open_storage(config) as storage:
        receiver = make_bounce_receiver(config, storage, host, port)
        receiver.start()
        try:
            yield receiver
        finally:
            receiver.stop()


def add_desk_user(config: Config, address: str, role: str, password: str | None) -> tuple[str, str | None]:
    """`desk add-user`: the outcome, and a one-time set-password link when no password was given."""

    with open_storage(config) as storage:
        outcome, token = add_user(storage, address, role, password)
    return outcome, set_password_link(config, token) if token else None


def make_bounce_receiver(config: Config, storage: Storage, host: str | None = None, port: int | None = None):
    """The SMTP receiver for the bounce domain (started by the caller); each message through the policy."""
    require_extra("bounces", "flufl.bounce", "aiosmtpd")
    from .bounce_receiver import make_receiver, tls_context  # aiosmtpd: the optional bounces extra, checked above
    delivery = config.require_delivery()
    addresses = bounce_addresses(config, signing_secret(delivery.secret_env, config.path("state")))
    receiver = config.bounces.receiver

    def deliver(raw: bytes, recipients: list[str]) -> None:
        handle_received(config, storage, addresses, raw, "receiver", recipients)

    tls = None
    if receiver.tls_cert and receiver.tls_key:
        try:
            tls = tls_context(config.resolve(receiver.tls_cert), config.resolve(receiver.tls_key))
        except (OSError, ssl.SSLError) as exc:
            raise PipelineError(f"bounces.receiver.tls_cert/tls_key: {exc}") from None
    return make_receiver(addresses, deliver, host or receiver.host, receiver.port if port is None else port,
                         receiver.max_size, tls)

"""An optional SMTP receiver for the bounce domain (aiosmtpd): point the domain's MX at it.

It accepts mail only for signed return paths (``bounces+<token>@<bounce domain>``) and for the
mailto unsubscribe address; any other recipient, including a return path with a forged token,
is refused at RCPT with 550, so nothing about it is ever stored.  Each accepted message goes
through the same reading and policy as the bounce mailbox.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from email.utils import parseaddr
from pathlib import Path

from aiosmtpd.controller import Controller

from ..bounces.parse import Addresses
from ..mail.verp import read_return_path

log = logging.getLogger(__name__)


class BounceHandler:
    """aiosmtpd handler: checks each recipient, hands each message (and its recipients) to ``deliver``."""

    def __init__(self, addresses: Addresses, deliver: Callable[[bytes, list[str]], object]):
        self.addresses = addresses
        self.deliver = deliver

    def accepts(self, address: str) -> bool:
        address = parseaddr(address)[1].lower()
        if address == parseaddr(self.addresses.unsubscribe_mailto)[1].lower():
            return True
        domain = self.addresses.bounce_domain
        return bool(domain) and read_return_path(self.addresses.secret, address, self.addresses.bounce_local_part,
                                                 domain or "") is not None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not self.accepts(address):
            log.info("bounce receiver: refused a recipient that is not a signed return path")
            return "550 5.1.1 No such recipient here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.deliver, raw, list(envelope.rcpt_tos))
        except Exception as exc:
            log.error("bounce receiver: could not record a message: %s", exc)
            return "451 4.3.0 Could not record the message, try again later"
        return "250 2.0.0 Bounce received"


def make_receiver(addresses: Addresses, deliver: Callable[[bytes, list[str]], object], host: str, port: int,
                  max_size: int, tls: ssl.SSLContext | None = None):
    """An aiosmtpd Controller (start() / stop()); SMTPUTF8 on, since DSNs may quote such addresses.
    With ``tls`` it offers STARTTLS (not required: mail servers fall back to plain SMTP anyway)."""

    return Controller(BounceHandler(addresses, deliver), hostname=host, port=port, data_size_limit=max_size,
                      enable_SMTPUTF8=True, ready_timeout=10, server_hostname=addresses.bounce_domain or "localhost",
                      tls_context=tls, require_starttls=False)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context

"""A real SMTP server on 127.0.0.1 (aiosmtpd) that records what it accepts and can misbehave on cue."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    recipient: str
    raw: bytes
    when: float = field(default_factory=time.monotonic)
    mail_from: str = ""  # the envelope sender (MAIL FROM), where bounces go

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.raw, policy=policy.default)


@dataclass
class Behaviour:
    """What the server does: temporary refusals, permanent refusals, dropped connections."""

    defer: Counter = field(default_factory=Counter)  # recipient -> how many 451s before accepting
    reject: set[str] = field(default_factory=set)  # recipients answered 550
    drop_after: set[int] = field(default_factory=set)  # drop the connection instead of accepting message #n
    refuse_sender: str | None = None  # the reply to every MAIL FROM, e.g. "530 5.7.0 Authentication required"
    reply_delay: float = 0.0  # seconds the server takes to answer after a message's body (a slow relay)
    # Greylisting (as postgrey): 451 to a recipient until this many seconds have passed since its first try.
    greylist: float = 0.0
    greylisted: set[str] | None = None  # the recipients it greylists; None: everyone

    def __post_init__(self) -> None:
        self.defer = Counter(self.defer)


class RecordingHandler:
    def __init__(self, behaviour: Behaviour | None = None, store: bool = True, gate: threading.Event | None = None,
                 pipelining: bool = False):
        self.behaviour = behaviour or Behaviour()
        self.pipelining = pipelining  # offer PIPELINING (RFC 2920); aiosmtpd reads pipelined commands in order
        self.gate = gate  # when given, each message waits for it before being accepted
        self.data_started = threading.Event()
        self.store = store
        self.received: list[Received] = []
        self.count = 0
        self.attempts = 0
        self.lock = threading.Lock()
        self.watchers: list[tuple[int, threading.Event]] = []
        self.first_try: dict[str, float] = {}  # recipient -> when its first RCPT came (time.monotonic)
        self.tries: Counter = Counter()  # recipient -> RCPT commands seen

    def when_count(self, n: int) -> threading.Event:
        """An event set once n messages have been accepted (for waits without sleeping)."""
        event = threading.Event()
        with self.lock:
            self.watchers.append((n, event))
            if self.count >= n:
                event.set()
        return event

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]] if self.pipelining else responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        b = self.behaviour
        with self.lock:
            now = time.monotonic()
            first = self.first_try.setdefault(address, now)
            self.tries[address] += 1
            if b.greylist and (b.greylisted is None or address in b.greylisted) and now - first < b.greylist:
                return "451 4.7.1 Greylisted, try again later"
            if address in b.reject:
                return "550 5.1.1 No such user here"
            if b.defer[address] > 0:
                b.defer[address] -= 1
                return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.behaviour.refuse_sender:
            return self.behaviour.refuse_sender
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.data_started.set()
        if self.behaviour.reply_delay:
            await asyncio.sleep(self.behaviour.reply_delay)  # the server is slow, not the test
        if self.gate is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.gate.wait, 60)
        with self.lock:
            self.attempts += 1
            if self.attempts in self.behaviour.drop_after:
                server.transport.close()  # the message is lost with the connection, never accepted
                return "421 closing"
            self.count += len(envelope.rcpt_tos)
            if self.store:
                for rcpt in envelope.rcpt_tos:
                    self.received.append(Received(rcpt, envelope.original_content, mail_from=envelope.mail_from or ""))
            for n, event in self.watchers:
                if self.count >= n:
                    event.set()
        return "250 2.0.0 Message accepted"

    def by_recipient(self) -> dict[str, list[Received]]:
        grouped: dict[str, list[Received]] = {}
        for message in self.received:
            grouped.setdefault(message.recipient, []).append(message)
        return grouped


class _Connections:
    """How many clients are connected: once a killed sender's connections are closed, the server
    has counted every message it will ever accept from it (aiosmtpd drops what follows EOF)."""

    def __init__(self) -> None:
        self.open = 0
        self.changed = threading.Condition()

    def made(self) -> None:
        with self.changed:
            self.open += 1

    def lost(self) -> None:
        with self.changed:
            self.open -= 1
            self.changed.notify_all()

    def wait_closed(self, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.open == 0, timeout=timeout)


class _TrackedController(Controller):
    def __init__(self, handler, connections: _Connections, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self.connections = connections

    def factory(self) -> SMTP:
        connections = self.connections

        class TrackedSMTP(SMTP):
            def connection_made(self, transport) -> None:
                connections.made()
                super().connection_made(transport)

            def connection_lost(self, error) -> None:
                try:
                    super().connection_lost(error)
                finally:
                    connections.lost()

        return TrackedSMTP(self.handler, **self.SMTP_kwargs)


class SmtpSink:
    def __init__(self, handler: RecordingHandler, tls_context: ssl.SSLContext | None = None, smtputf8: bool = True,
                 port: int | None = None):
        self.handler = handler
        self.port = port or free_port()
        self.connections = _Connections()
        kwargs: dict = {"tls_context": tls_context, "require_starttls": True} if tls_context else {}
        kwargs["enable_SMTPUTF8"] = smtputf8  # aiosmtpd offers SMTPUTF8 unless told not to
        self.controller = _TrackedController(handler, self.connections, hostname="127.0.0.1", port=self.port,
                                             ready_timeout=10, server_hostname="localhost", **kwargs)

    def wait_disconnected(self, timeout: float = 30) -> bool:
        """True once no client is connected (a killed sender's sockets are closed and read to the end)."""
        return self.connections.wait_closed(timeout)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost made by the test, and its key."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path

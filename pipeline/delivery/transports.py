"""Where messages go: ``.eml`` files (the default, no server needed) or an SMTP server.

A transport connection sends serialised bytes and either returns the server's
reply or raises ``TransientError`` (retry later: 4xx, dropped connection) or
``PermanentError`` (5xx: this recipient failed for this edition).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import time
from pathlib import Path
from typing import Protocol

from ..addresses import ascii_address
from ..config import Config, Smtp
from ..environment import smtp_password
from ..errors import ConfigError
from ..mail.message import DotStuffed, dot_stuff
from ..publish.atomic import write_atomic

log = logging.getLogger(__name__)


class TransientError(Exception):
    """Try again later: a 4xx reply, a dropped connection, or (``unreachable``) no connection at all."""

    def __init__(self, message: str, *, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


class PermanentError(Exception):
    """A 5xx: this recipient failed for this edition; or (``whole_send``) the server refuses the
    sender itself (530 authentication required, 535, a refused MAIL FROM), which no recipient
    can get past: the send stops with one error instead of failing every row."""

    def __init__(self, message: str, *, whole_send: bool = False):
        super().__init__(message)
        self.whole_send = whole_send


class Connection(Protocol):
    """Sends one message at a time; a send after ``close`` opens the connection again.  A connection
    whose ``announces`` is true also takes ``then`` (the next message's sender and recipient) to send
    that message's envelope along with this one's body, RFC 2920's one round trip per message."""

    def send(self, sender: str, recipient: str, message: bytes, key: str) -> str: ...

    def close(self) -> None: ...


class Transport(Protocol):
    name: str

    def connect(self) -> Connection: ...


class FileConnection:
    def __init__(self, folder: Path):
        self.folder = folder

    def send(self, sender: str, recipient: str, message: bytes, key: str) -> str:
        # Named by the ledger key, so a resend after a crash rewrites the same file.
        path = self.folder / f"{key}.eml"
        write_atomic(path, message)
        return f"written {path.name}"

    def close(self) -> None:
        pass


LEFTOVER_SECONDS = 600  # a temporary file this old was left by a send that was killed


class FileTransport:
    name = "file"

    def __init__(self, folder: Path):
        self.folder = folder

    def connect(self) -> FileConnection:
        self.folder.mkdir(parents=True, exist_ok=True)
        # A send killed mid-write leaves a temporary file; one written now may be another sender's (two
        # workers, or the web server's drainer beside a command), so only old ones are removed.
        stale = time.time() - LEFTOVER_SECONDS
        for leftover in self.folder.glob(".*.eml.*.tmp"):
            try:
                if leftover.stat().st_mtime < stale:
                    leftover.unlink(missing_ok=True)
            except FileNotFoundError:  # its writer renamed it meanwhile
                pass
        return FileConnection(self.folder)


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()


def _plain(address: str) -> bool:
    """An address that can go into a pipelined command as it is (ASCII, nothing to quote)."""
    return address.isascii() and not any(c in address for c in "\r\n<> ")


def s_host(settings: Smtp) -> str:
    return f"{settings.host}:{settings.port}"


def _envelope(sender: str, recipient: str) -> bytes:
    return f"MAIL FROM:<{sender}>\r\nRCPT TO:<{ascii_address(recipient)}>\r\nDATA\r\n".encode("ascii")


class SmtpConnection:
    """One reused SMTP session; reconnects after a drop on the next send.

    With PIPELINING a message's body goes out in the same write as the next message's MAIL, RCPT and
    DATA (``then``), and the four replies are read together: one round trip per message.  The next
    message's body is sent only by its own ``send``, after the engine recorded this one's outcome and
    began the next attempt; an announced envelope that is not followed by its message (withdrawn by
    an unsubscribe, a stop) is abandoned by closing the connection in the DATA phase, which makes the
    server discard that transaction (RFC 5321 3.8): nothing is ever delivered that was not meant to be."""

    announces = True

    def __init__(self, settings: Smtp, password: str | None, context: ssl.SSLContext | None):
        self.settings = settings
        self.password = password
        self.context = context
        self.client: smtplib.SMTP | None = None
        self.announced: tuple[str, str] | None = None  # the envelope sent ahead of its message
        self.announced_replies: list[tuple[int, bytes]] = []

    def _open(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.security == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=self.context)
            else:
                client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            client.ehlo()
            if s.security == "starttls":
                client.starttls(context=self.context)
                client.ehlo()
            if s.username:
                client.login(s.username, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentError(_reply(exc.smtp_code, exc.smtp_error), whole_send=True) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientError(f"connect to {s.host}:{s.port}: {exc}", unreachable=True) from None
        return client

    def send(self, sender: str, recipient: str, message: bytes, key: str,
             then: tuple[str, str] | None = None) -> str:
        if self.announced is not None and self.announced != (sender, recipient):
            self._abandon()  # the message announced last is not the one being sent
        if self.client is None:
            self.client = self._open()
        client = self.client
        options: list[str] = []
        if not recipient.isascii():
            # An internationalised local part needs SMTPUTF8 (RFC 6531); a Unicode domain alone was
            # already turned into its ASCII (IDNA) form when the message was built.
            if self.announced is not None:
                self._abandon()
                return self.send(sender, recipient, message, key, then)
            if not client.has_extn("smtputf8"):
                self._reset()
                raise PermanentError(f"{s_host(self.settings)} does not offer SMTPUTF8, which {recipient} needs")
            options = ["SMTPUTF8", "BODY=8BITMIME"]
        try:
            if isinstance(message, DotStuffed) and self._pipelines(client, sender, recipient) and not options:
                return self._send_pipelined(client, sender, recipient, message, then)
            if self.announced is not None:  # announced, but this message cannot take the pipelined path
                self._abandon()
                return self.send(sender, recipient, message, key)
            code, text = client.mail(sender, options)
            if code != 250:
                return self._refused(code, text, whole_send=code >= 500)
            code, text = client.rcpt(ascii_address(recipient))
            if code not in (250, 251):
                return self._refused(code, text)
            code, text = self._data(client, message)  # the server's final word on this message
            if code != 250:
                return self._refused(code, text)
            return _reply(code, text)
        except smtplib.SMTPDataError as exc:
            return self._refused(exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException, OSError) as exc:
            self.close()
            raise TransientError(f"connection lost: {exc}") from None

    @staticmethod
    def _pipelines(client: smtplib.SMTP, sender: str, recipient: str) -> bool:
        return bool(client.has_extn("pipelining")) and _plain(sender) and _plain(recipient)

    def _send_pipelined(self, client: smtplib.SMTP, sender: str, recipient: str, message: DotStuffed,
                        then: tuple[str, str] | None) -> str:
        """MAIL, RCPT and DATA in one write (or already sent with the last message's body), their
        three replies read together (RFC 2920 PIPELINING, offered by the relays we know).  The message
        goes out only when all three succeeded, with the next message's envelope behind it when
        ``then`` names one; otherwise the first refusal is the outcome."""
        if self.announced is not None:
            replies, self.announced, self.announced_replies = self.announced_replies, None, []
        else:
            client.send(_envelope(sender, recipient))
            replies = [client.getreply(), client.getreply(), client.getreply()]
        (mail_code, _), (rcpt_code, _), (data_code, _) = replies
        if data_code == 354:
            if mail_code == 250 and rcpt_code in (250, 251):
                ahead = then is not None and _plain(then[0]) and _plain(then[1])
                client.send(message + _envelope(*then) if ahead and then is not None else message)
                if ahead:
                    self.announced = then  # from now on a failure abandons the connection instead of QUIT
                code, text = self._final_reply(client)
                if ahead:  # the next envelope's replies follow this message's
                    self.announced_replies = [client.getreply(), client.getreply(), client.getreply()]
                if code != 250:  # the transaction is over: nothing to reset (RSET now would be data)
                    return self._classify(code, text) if self.announced else self._refused(code, text)
                return _reply(code, text)
            client.send(b".\r\n")  # DATA taken despite a refused envelope: end it with no message
            client.getreply()
        for position, (code, text) in enumerate(replies):
            if code not in (250, 251, 354):
                return self._refused(code, text, whole_send=position == 0 and code >= 500)
        return self._refused(data_code, b"unexpected reply to a pipelined DATA")

    def _final_reply(self, client: smtplib.SMTP) -> tuple[int, bytes]:
        """The reply after a message's body, with its own, longer wait (RFC 5321 4.5.3.2.6 suggests
        10 minutes): a slow server that accepts late must not see the message resent as if refused."""
        if client.sock is not None:
            client.sock.settimeout(self.settings.data_timeout)
        try:
            return client.getreply()
        finally:
            if client.sock is not None:
                client.sock.settimeout(self.settings.timeout)

    def _data(self, client: smtplib.SMTP, message: bytes) -> tuple[int, bytes]:
        """DATA: a ``DotStuffed`` message (stuffed once per edition) goes out as it is, skipping the
        regex smtplib's ``data`` runs over every message; plain bytes are stuffed here the same way."""
        stuffed = message if isinstance(message, DotStuffed) else dot_stuff(message)
        client.putcmd("data")
        code, reply = client.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        client.send(stuffed)
        return self._final_reply(client)


    def _refused(self, code: int, text: bytes | str, *, whole_send: bool = False) -> str:
        self._reset()
        return self._classify(code, text, whole_send=whole_send)

    def _classify(self, code: int, text: bytes | str, *, whole_send: bool = False) -> str:
        reply = _reply(code, text)
        if 400 <= code < 500:
            raise TransientError(reply)
        raise PermanentError(reply, whole_send=whole_send)

    def _abandon(self) -> None:
        """Drop the connection without QUIT: an envelope sent ahead may have the server in its DATA
        phase, where QUIT would be message text; a connection closed there discards the transaction."""
        client, self.client = self.client, None
        self.announced, self.announced_replies = None, []
        if client is not None:
            client.close()

    def _reset(self) -> None:
        try:
            if self.client is not None:
                self.client.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self) -> None:
        if self.announced is not None:
            self._abandon()
        if self.client is not None:
            try:
                self.client.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self.client = None


class SmtpTransport:
    name = "smtp"

    def __init__(self, settings: Smtp, password: str | None = None, ca_file: Path | None = None):
        self.settings = settings
        self.password = password
        self.context: ssl.SSLContext | None = None
        if settings.security != "none":
            self.context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def connect(self) -> SmtpConnection:
        return SmtpConnection(self.settings, self.password, self.context)


def transport_for(config: Config, edition_id: str) -> Transport:
    delivery = config.require_delivery()
    if delivery.transport == "file":
        return FileTransport(config.resolve(delivery.outbox) / edition_id)
    smtp = delivery.smtp
    password = smtp_password(smtp.password_env)
    if smtp.username and not password:
        raise ConfigError(f"SMTP user {smtp.username!r} needs a password in ${smtp.password_env}")
    return SmtpTransport(smtp, password, config.resolve(smtp.ca_file) if smtp.ca_file else None)

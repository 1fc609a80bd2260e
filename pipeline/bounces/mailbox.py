"""The bounce mailbox, read over IMAP (imap-tools) or POP3 (poplib).

Each message is handed to a callback once: a processed message is remembered in the state
database under its mailbox key (IMAP: UIDVALIDITY and UID; POP3: UIDL), and on IMAP it also
gets the keyword ``$PipelineProcessed`` so later fetches search only what is new.  Messages are
never deleted: the mailbox stays the record of what arrived.
"""

from __future__ import annotations

import logging
import poplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from email import policy as email_policy

from ..config import Mailbox
from ..errors import PipelineError
from ..state.storage import Storage

log = logging.getLogger(__name__)

PROCESSED_KEYWORD = "$PipelineProcessed"


@dataclass
class MailboxReport:
    fetched: int = 0  # new messages handed to the callback
    already: int = 0  # seen on an earlier fetch


def _context(settings: Mailbox, ca_file: str | None) -> ssl.SSLContext | None:
    if settings.security == "none":
        return None
    return ssl.create_default_context(cafile=ca_file)


def mailbox_source(settings: Mailbox) -> str:
    """The name processed messages are remembered under: one mailbox, one folder."""
    return f"{settings.protocol}:{settings.username}@{settings.host}:{settings.effective_port}/{settings.folder}"


def fetch_mailbox(settings: Mailbox, password: str, storage: Storage, handle: Callable[[bytes], None],
                  ca_file: str | None = None) -> MailboxReport:
    """Hand every message not processed before to ``handle``, then mark it processed."""
    try:
        if settings.protocol == "imap":
            return _fetch_imap(settings, password, storage, handle, ca_file)
        return _fetch_pop3(settings, password, storage, handle, ca_file)
    except (OSError, poplib.error_proto) as exc:
        raise PipelineError(f"bounce mailbox {settings.host}:{settings.effective_port}: {exc}") from None


def _fetch_imap(settings: Mailbox, password: str, storage: Storage, handle: Callable[[bytes], None],
                ca_file: str | None) -> MailboxReport:
    from imap_tools import AND, MailBox, MailBoxStartTls, MailBoxUnencrypted  # optional: the bounces extra
    from imap_tools.errors import ImapToolsError  # optional: the bounces extra

    host, port, timeout = settings.host, settings.effective_port, settings.timeout
    client: MailBox | MailBoxStartTls | MailBoxUnencrypted
    if settings.security == "tls":
        client = MailBox(host, port, timeout=timeout, ssl_context=_context(settings, ca_file))
    elif settings.security == "starttls":
        client = MailBoxStartTls(host, port, timeout=timeout, ssl_context=_context(settings, ca_file))
    else:
        client = MailBoxUnencrypted(host, port, timeout=timeout)
    source = mailbox_source(settings)
    report = MailboxReport()
    try:
        with client.login(settings.username, password, initial_folder=settings.folder) as box:
            validity = box.folder.status(settings.folder, ["UIDVALIDITY"])["UIDVALIDITY"]
            flagging = True
            for message in box.fetch(AND(no_keyword=PROCESSED_KEYWORD), mark_seen=False, bulk=50):
                key = f"{validity}:{message.uid}"
                with storage.processing(source, key) as first:  # a concurrent reader skips it
                    if first:
                        handle(message.obj.as_bytes(policy=email_policy.compat32))
                        report.fetched += 1
                    else:
                        report.already += 1
                if message.uid and flagging:
                    try:
                        box.flag(message.uid, PROCESSED_KEYWORD, True)
                    except ImapToolsError as exc:  # e.g. Exchange: no custom keywords; the state marker suffices
                        log.info("bounce mailbox: cannot set %s (%s); relying on the state marker",
                                 PROCESSED_KEYWORD, exc)
                        flagging = False
    except ImapToolsError as exc:
        raise PipelineError(f"bounce mailbox {host}:{port}: {exc}") from None
    return report


def _fetch_pop3(settings: Mailbox, password: str, storage: Storage, handle: Callable[[bytes], None],
                ca_file: str | None) -> MailboxReport:
    host, port, timeout = settings.host, settings.effective_port, settings.timeout
    if settings.security == "tls":
        client: poplib.POP3 = poplib.POP3_SSL(host, port, timeout=timeout, context=_context(settings, ca_file))
    else:
        client = poplib.POP3(host, port, timeout=timeout)
        if settings.security == "starttls":
            client.stls(context=_context(settings, ca_file))
    source = mailbox_source(settings)
    report = MailboxReport()
    try:
        client.user(settings.username)
        client.pass_(password)
        _, listing, _ = client.uidl()
        for line in listing:
            number, uid = line.decode("ascii").split(" ", 1)
            with storage.processing(source, uid) as first:  # a concurrent reader skips it
                if first:
                    _, lines, _ = client.retr(int(number))
                    handle(b"\r\n".join(lines) + b"\r\n")
                    report.fetched += 1
                else:
                    report.already += 1
    finally:
        try:
            client.quit()
        except (OSError, poplib.error_proto):
            pass
    return report

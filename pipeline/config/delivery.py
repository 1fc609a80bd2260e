"""Sending: the transport, SMTP, DKIM and the envelope."""

from __future__ import annotations

import re
from email.utils import parseaddr
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from .base import HEADER_UNSAFE, Strict, address_header


class Smtp(Strict):
    host: str = "127.0.0.1"
    """The SMTP server (relay) to send through."""
    port: int = Field(default=587, gt=0, lt=65536)
    """Its port: 587 for STARTTLS, 465 for implicit TLS."""
    security: Literal["starttls", "tls", "none"] = "starttls"
    """starttls, tls (implicit, port 465) or none (loopback only)."""
    username: str | None = None
    """Login name; null: no authentication. The password comes from password_env."""
    password_env: str = Field(default="PIPELINE_SMTP_PASSWORD",
                              description="Name of the environment variable holding the password.")
    ca_file: Path | None = Field(default=None, description="Extra CA certificate(s) to trust (PEM).")
    timeout: float = Field(default=30.0, gt=0, description="Seconds for each network operation.")
    data_timeout: float = Field(default=600.0, gt=0, description="Seconds to wait for the server's reply after "
                                                                 "a message's body (RFC 5321 suggests 10 minutes).")
    concurrency: int = Field(default=2, ge=1, le=32, description="Parallel SMTP connections.")
    rate_limit: float = Field(default=0.0, ge=0, description="Messages per second across connections; 0: no limit.")
    max_attempts: int = Field(default=5, ge=1, le=20, description="No longer used: a temporary "
                              "refusal is never retried inside the sending loop; see retry_delay and retry_window.")
    retry_delay: float = Field(default=2.0, ge=0, description="Seconds from a temporary refusal (4xx, dropped "
                               "connection) to the message's next try; doubles per try, at most max_retry_delay.")
    max_retry_delay: float = Field(default=3600.0, gt=0, description="The longest wait between two tries of one "
                                   "message, in seconds.")
    retry_window: float = Field(default=600.0, ge=0, description="Seconds after a send starts during which it "
                                "keeps going for deferred messages that come due (greylisting); later ones wait "
                                "for the next run or the retry job. 0: never wait.")
    defer_delay: float = Field(default=300.0, ge=0, description="No longer used: every temporary refusal "
                               "follows the retry_delay schedule.")
    retry_for_hours: float = Field(default=72.0, gt=0, description="Give a message up as failed when it has been "
                                                                    "refused temporarily for this long.")



class Dkim(Strict):
    """DKIM signing of each message after personalisation (off unless configured; most relays sign)."""

    selector: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """DKIM selector: the key is published at <selector>._domainkey.<domain>."""
    domain: str = Field(pattern=r"^[A-Za-z0-9.-]+$")
    """The signing domain (d=), normally the From address's domain."""
    key_file: Path = Field(description="PEM private key (RSA) or base64 raw ed25519 key; never in config.yaml itself.")
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    """rsa-sha256, or ed25519-sha256 (publish an RSA key too if you use it)."""



class Delivery(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str = Field(alias="from", description='Sender, e.g. "Name <news@example.org>".')
    reply_to: str | None = None
    """Reply-To header: an address read by a person (default: none)."""
    list_id: str = Field(description='List-Id, e.g. "News <news.example.org>".')
    unsubscribe_mailto: str = Field(description="Address for mailto: unsubscribe requests (handled by the operator).")
    secret_env: str = Field(default="PIPELINE_SECRET",
                            description="Environment variable with the secret that signs unsubscribe tokens.")
    edition: Literal["new", "latest"] = Field(
        default="new", description="new: items not sent before; latest: the newest digest.limit items.")
    transport: Literal["file", "smtp"] = "file"
    """file: each message written as an .eml file in outbox; smtp: sent through delivery.smtp."""
    outbox: Path = Path("outbox")
    """Folder of the file transport: outbox/<edition>/<subscriber>.eml."""
    batch_size: int = Field(default=200, ge=1, le=10000)
    """Ledger rows a sender claims at a time."""
    lease_seconds: float = Field(default=60.0, gt=0, description="Where workers share a PostgreSQL database: a "
                                 "claimed message whose worker stopped renewing it for this long is sent by another.")
    smtp: Smtp = Smtp()
    """The SMTP relay, used when transport is smtp."""
    # Issue 14: headers mailbox providers read, and optional DKIM signing.
    feedback_id: str | None = Field(
        default=None, description="Sender id for Feedback-ID (Gmail Postmaster Tools); default the From domain.")
    list_help: str | None = Field(default=None, description="List-Help URL; default the site's home page.")
    dkim: Dkim | None = None
    """Sign each message with DKIM after personalising it (null: off; most relays sign)."""

    @field_validator("feedback_id", "list_help")
    @classmethod
    def _ascii_header(cls, value: str | None) -> str | None:
        if value is not None and (not value.isascii() or HEADER_UNSAFE.search(value) or ":" in value
                                  and not value.startswith(("http://", "https://", "mailto:"))):
            raise ValueError("must be one line of ASCII (no ':' in a Feedback-ID sender id)")
        return value

    @field_validator("from_", "reply_to", "list_id", "unsubscribe_mailto")
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        if value is not None and HEADER_UNSAFE.search(value):
            raise ValueError("must be a single line (no CR or LF)")
        return value

    @field_validator("from_", "reply_to")
    @classmethod
    def _valid_address(cls, value: str | None) -> str | None:
        return None if value is None else address_header(value)

    @field_validator("unsubscribe_mailto")
    @classmethod
    def _bare_address(cls, value: str) -> str:
        address = address_header(value)
        if "<" in address or " " in address:
            raise ValueError("must be a bare address, e.g. unsubscribe@example.org")
        return address

    @field_validator("list_id")
    @classmethod
    def _list_id(cls, value: str) -> str:
        match = re.search(r"<([^<>\s]+)>\s*$", value)
        if not match or not match.group(1).isascii() or "." not in match.group(1):
            raise ValueError('must end with the list\'s id in angle brackets, e.g. "News <news.example.org>"')
        return value

    @property
    def from_address(self) -> str:
        return parseaddr(self.from_)[1]

    @property
    def sending_domain(self) -> str:
        return self.from_address.rsplit("@", 1)[1].lower()

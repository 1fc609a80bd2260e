"""Bounces, complaints and the suppression list: the policy, the mailbox, the receiver, relay webhooks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Strict


class BouncePolicy(Strict):
    soft_limit: int = Field(default=3, ge=1, description="Soft bounces within soft_window_days that suppress.")
    soft_window_days: float = Field(default=30.0, gt=0)
    """Days in which soft_limit soft bounces suppress an address."""



class Mailbox(Strict):
    """The mailbox bounces, complaints and mailto unsubscribes are delivered to, read over IMAP or POP3."""

    protocol: Literal["imap", "pop3"] = "imap"
    """imap or pop3."""
    host: str
    """The mail server holding the bounce mailbox."""
    port: int | None = Field(default=None, gt=0, lt=65536, description="Default: 993/995 with tls, else 143/110.")
    security: Literal["tls", "starttls", "none"] = "tls"
    """tls (implicit), starttls or none (loopback only)."""
    username: str
    """Login name of the bounce mailbox."""
    password_env: str = "PIPELINE_BOUNCE_PASSWORD"
    """Name of the environment variable holding its password."""
    folder: str = "INBOX"
    """IMAP folder to read."""
    ca_file: Path | None = None
    """Extra CA certificate(s) to trust for the mail server (PEM)."""
    timeout: float = Field(default=30.0, gt=0)
    """Seconds for each network operation."""

    @property
    def effective_port(self) -> int:
        if self.port:
            return self.port
        if self.protocol == "imap":
            return 993 if self.security == "tls" else 143
        return 995 if self.security == "tls" else 110



class Receiver(Strict):
    host: str = "127.0.0.1"
    """Address `pipeline serve-bounces` listens on."""
    port: int = Field(default=2525, ge=0, lt=65536)
    """Port it listens on (forward port 25 of the bounce domain's MX here)."""
    max_size: int = Field(default=10_000_000, gt=0)
    """Largest message accepted, in bytes."""
    tls_cert: Path | None = Field(default=None, description="PEM certificate (chain) to offer STARTTLS with.")
    tls_key: Path | None = Field(default=None, description="Its private key (PEM).")

    @model_validator(mode="after")
    def _both_or_neither(self) -> Receiver:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self



class SesWebhook(Strict):
    enabled: bool = False
    """Answer Amazon SES notifications (via SNS) at /webhooks/ses."""
    cert_url_pattern: str = Field(
        default=r"^https://sns\.[a-z]{2}(-gov)?-[a-z]+-[0-9]+\.amazonaws\.com(\.cn)?/",
        description="SigningCertURL and SubscribeURL must match; they are fetched over verified HTTPS.")
    ca_file: Path | None = Field(default=None, description="CA bundle trusted for those fetches (default: system).")
    topic_arns: list[str] = Field(default_factory=list, description="The SNS topics your SES identities notify "
                                  "(arn:aws:sns:<region>:<account>:<topic>); required when enabled: only these "
                                  "are accepted and only their subscriptions confirmed.")

    @model_validator(mode="after")
    def _topics_required(self) -> SesWebhook:
        if self.enabled and not self.topic_arns:
            raise ValueError("topic_arns: required when the SES webhook is enabled: list the ARNs of the SNS "
                             "topics your SES identities notify; without them anyone's topic could post bounces")
        for arn in self.topic_arns:
            if not re.fullmatch(r"arn:aws(-cn|-us-gov)?:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]{1,256}", arn):
                raise ValueError(f"topic_arns: {arn!r} is not an SNS topic ARN "
                                 "(arn:aws:sns:<region>:<account>:<topic>)")
        return self



class PostmarkWebhook(Strict):
    username: str
    """HTTP Basic user name Postmark's webhook URL carries."""
    password_env: str = "PIPELINE_POSTMARK_WEBHOOK_PASSWORD"
    """Name of the environment variable holding the matching password."""



class SendgridWebhook(Strict):
    public_key_env: str = "PIPELINE_SENDGRID_WEBHOOK_KEY"
    """Name of the environment variable holding SendGrid's verification key (base64)."""



class MailgunWebhook(Strict):
    signing_key_env: str = "PIPELINE_MAILGUN_SIGNING_KEY"
    """Name of the environment variable holding Mailgun's webhook signing key."""



class Webhooks(Strict):
    ses: SesWebhook = SesWebhook()
    """Amazon SES bounce and complaint notifications through SNS (/webhooks/ses)."""
    postmark: PostmarkWebhook | None = None
    """Postmark's bounce and complaint webhooks (/webhooks/postmark); null: off (404)."""
    sendgrid: SendgridWebhook | None = None
    """SendGrid's signed Event Webhook (/webhooks/sendgrid); null: off (404)."""
    mailgun: MailgunWebhook | None = None
    """Mailgun's webhooks (/webhooks/mailgun); null: off (404)."""
    max_age: int = Field(default=600, gt=0, description="Seconds a signed webhook timestamp stays acceptable "
                                                         "(and how far in the future an event may be dated).")
    event_max_age_hours: float = Field(default=72, gt=0, description="An event the relay dates longer ago than "
                                                                     "this is not counted (relays retry for up to "
                                                                     "72 hours).")



class Bounces(Strict):
    domain: str | None = Field(
        default=None, description="VERP: envelope sender bounces+<token>@<domain>; null keeps the From address.")
    local_part: str = Field(default="bounces", pattern=r"^[a-z0-9][a-z0-9._-]*$")
    """The part of the VERP return path before the +."""
    trusted_authserv_ids: list[str] = Field(default_factory=list, description="Receiving mail servers (their "
                                            "authserv-id, the first word of the Authentication-Results headers "
                                            "they add) whose DMARC verdict is believed: a mail to the unsubscribe "
                                            "address without a token is honoured only on their dmarc=pass.")
    policy: BouncePolicy = BouncePolicy()
    """When bounces suppress an address."""
    mailbox: Mailbox | None = None
    """The bounce mailbox `pipeline bounces fetch` reads (null: none)."""
    receiver: Receiver = Receiver()
    """The SMTP receiver `pipeline serve-bounces` runs for the bounce domain."""
    webhooks: Webhooks = Webhooks()
    """Relay webhooks answered by the web app under /webhooks/."""

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$",
                                              value.lower()):
            raise ValueError("must be a domain name such as bounces.example.org")
        return value.lower() if value else value

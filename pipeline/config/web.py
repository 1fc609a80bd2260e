"""The public web app and the desk: sign-up, the editor's desk, the server."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator

from .base import Strict, check_fields


class Signup(Strict):
    """Self-service signup with double opt-in, and what protects it from bots (docs/how-to/signup-on-your-site.md)."""

    web_url: str | None = Field(default=None, description="Public URL of the web app (default: the folder of "
                                                          "digest.unsubscribe_url, i.e. <base_url>).")
    consent_text: str = Field(default="Yes, email me {site_title}. I can unsubscribe at any time.",
                              description="The consent line shown by the form; recorded with every signup.")
    confirm_hours: float = Field(default=48.0, gt=0, description="How long a confirmation link works.")
    resend_minutes: float = Field(default=60.0, ge=0, description="The form mails one address at most "
                                                                  "this often (a confirmation, or the note that "
                                                                  "it already receives the list).")
    min_fill_seconds: float = Field(default=3.0, ge=0, description="Forms sent faster than this are refused.")
    max_form_age_hours: float = Field(default=24.0, gt=0, description="Signed form timestamps older than this "
                                                                      "are asked to submit again.")
    ip_limit: int = Field(default=10, ge=1, description="Signups accepted per client IP per hour.")
    address_limit: int = Field(default=3, ge=1, description="Signups accepted per address per hour.")
    confirmations_per_hour: int = Field(default=200, ge=1, description="Mails the form sends per hour, in "
                                                                       "all (the list-bombing brake); the rest are "
                                                                       "dropped.")
    blocked_domains: list[str] = Field(default_factory=list, description="Address domains refused (and "
                                                                         "their subdomains).")
    check_deliverability: bool = Field(default=True, description="Look the domain up in DNS before mailing; "
                                       "only a definite answer that it takes no mail (NXDOMAIN, null MX, no MX "
                                       "or A) refuses.")
    deliverability_timeout: float = Field(default=5.0, gt=0, description="Seconds for that DNS lookup.")
    client_ip_header: str | None = Field(default=None, description="Removed: list your proxies in "
                                                                   "web.trusted_proxies instead.")
    embed_origins: list[str] = Field(default_factory=list, description="Origins allowed to frame the form "
                                                                       "and post it (https://example.org).")
    welcome: bool = Field(default=False, description="Send a welcome message after confirmation.")
    preferences_days: int = Field(default=365, ge=1, description="How long a digest's preferences link works.")

    @field_validator("embed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(f"{origin!r}: an origin is scheme and host only, e.g. https://example.org")
        return [origin.lower() for origin in value]

    @field_validator("blocked_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [domain.strip().lower().lstrip("@") for domain in value if domain.strip()]

    @field_validator("client_ip_header")
    @classmethod
    def _removed_header(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError("removed: list the addresses of your reverse proxies in web.trusted_proxies; the "
                             "client address is then read from X-Forwarded-For or Forwarded")
        return None

    _consent_fields = field_validator("consent_text")(lambda value: check_fields(value, {"site_title"}))


class Desk(Strict):
    """The editor's desk (docs/how-to/desk.md): a web desk for the comms team at /desk/ of ``serve-web``."""

    enabled: bool = Field(default=False, description="Serve the desk; off unless set, so nobody reaches it by chance.")
    host: str | None = Field(default=None, description="Serve the desk alone on this address (e.g. 127.0.0.1 or an "
                                                       "intranet address) with `pipeline desk serve`, and not under "
                                                       "/desk/ of `serve-web`; default: mounted in `serve-web`.")
    port: int = Field(default=8026, ge=0, lt=65536, description="Port of the desk served alone (0: any free port).")
    idle_minutes: float = Field(default=30.0, gt=0, description="A session unused this long is signed out.")
    absolute_hours: float = Field(default=12.0, gt=0, description="A session ends this long after sign-in, "
                                                                  "used or not.")
    account_attempts: int = Field(default=5, ge=1, description="Failed sign-ins of one account, within "
                                                               "lockout_minutes, that lock the account.")
    address_attempts: int = Field(default=20, ge=1, description="Failed sign-ins from one client address, within "
                                                                "lockout_minutes, that lock that address out.")
    lockout_minutes: float = Field(default=15.0, gt=0, description="The window failed sign-ins are counted in, and "
                                                                   "how long a lock-out lasts.")
    max_upload_bytes: int = Field(default=1_000_000, gt=0, le=1_048_576, description="Largest image or enclosure "
                                                                                     "upload (at most 1 MiB, the "
                                                                                     "web server's body limit).")


class Web(Strict):
    """The public web app's server and the proxies in front of it (docs/how-to/proxy-and-tls.md)."""

    connection_limit: int = Field(default=4000, ge=10, description="Open client connections the server holds "
                                                                   "at once (idle or slow ones included).")
    header_timeout: float = Field(default=10.0, gt=0, description="Seconds a client has to send a whole request "
                                                                  "(headers and body) once it starts, or after "
                                                                  "connecting; a slower one is dropped.")
    idle_timeout: int = Field(default=30, ge=1, description="Seconds a kept-alive connection may sit idle "
                                                            "between requests.")
    threads: int = Field(default=8, ge=1, description="Worker threads running the app.")
    trusted_proxies: list[str] = Field(default_factory=list, description="Addresses or networks (CIDR) of reverse "
                                                                         "proxies you run; only from them are "
                                                                         "X-Forwarded-For/-Proto/-Host and "
                                                                         "Forwarded believed.")
    proxy_headers: Literal["x-forwarded", "forwarded"] = Field(
        default="x-forwarded", description="Which headers your proxies set: x-forwarded (X-Forwarded-For/-Proto/"
                                           "-Host, what nginx and Caddy send) or forwarded (RFC 7239 Forwarded); "
                                           "the other kind is ignored, since a client could have written it.")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:

        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r}: not an address or network (e.g. 127.0.0.1 or 10.0.0.0/8)") from None
        return value

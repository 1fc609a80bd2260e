"""The pieces every settings model shares: the strict base model, the URL and header checks, logging."""

from __future__ import annotations

import re
from email.utils import formataddr, parseaddr
from pathlib import Path
from string import Formatter
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import idna
from pydantic import BaseModel, ConfigDict, Field

from ..addresses import AddressError, normalise_address

DEFAULT_CONFIG = "config.yaml"


LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")


HEADER_UNSAFE = re.compile(r"[\r\n]")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def absolute_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be an absolute http(s) URL")
    return value


URL_IN_HEADER_UNSAFE = re.compile(r"[\s<>,\"\\]")


def header_url(value: str) -> str:
    """A URL that goes into a header (List-Unsubscribe): absolute, ASCII (an IDN host becomes its
    A-label, other characters are percent-encoded), and nothing that could end the URI or add another."""
    absolute_url(value)
    if not value.isascii():

        parts = urlsplit(value)
        try:
            host = idna.encode(parts.hostname or "", uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"host cannot be written in ASCII: {exc}") from None
        netloc = host + (f":{parts.port}" if parts.port else "")
        value = urlunsplit((parts.scheme, netloc, quote(parts.path, safe="/%"), quote(parts.query, safe="=&%"),
                            quote(parts.fragment, safe="%")))
    if URL_IN_HEADER_UNSAFE.search(value):
        raise ValueError("must not contain spaces, line breaks, <, >, commas or quotes")
    return value


def check_fields(template: str, allowed: set[str]) -> str:
    """A str.format template may only name the fields it will be given."""
    try:
        fields = [(field, spec, conversion) for _text, field, spec, conversion in Formatter().parse(template)
                  if field is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc}") from None
    for field, spec, conversion in fields:
        if spec or conversion or "." in field or "[" in field:
            raise ValueError(f"{{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}: "
                             "write plain fields such as {" + sorted(allowed)[0] + "}, without formats or attributes")
    names = {field for field, _spec, _conversion in fields}
    unknown = sorted(names - allowed)
    if "" in names:
        raise ValueError("use named fields, e.g. {site_title}")
    if unknown:
        raise ValueError(f"unknown field {{{unknown[0]}}}; use {', '.join('{' + n + '}' for n in sorted(allowed))}")
    return template


def address_header(value: str) -> str:
    """"Name <address>" with a valid address; an internationalised domain becomes its A-label."""

    name, address = parseaddr(value)
    if not address or address.count("@") != 1:
        raise ValueError("must contain an email address")
    try:
        ascii_form = normalise_address(address)
    except AddressError as exc:
        raise ValueError(str(exc)) from None
    if not ascii_form.isascii():
        raise ValueError(f"{address!r}: the part before @ must be ASCII in a sender or list address")
    local, domain = address.rsplit("@", 1)
    ascii_domain = ascii_form.rsplit("@", 1)[1]
    if domain == ascii_domain:
        return value  # as written
    rewritten = f"{local}@{ascii_domain}"  # the local part keeps its case
    return formataddr((name, rewritten)) if name else rewritten


def optional_absolute_url(value: str | None) -> str | None:
    return None if value is None else absolute_url(value)


class Logging(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Least severe log level written; -v and -vv override it."""
    format: Literal["text", "json"] = "text"
    """text, or json for one JSON object per line; --log-format overrides it."""
    file: Path | None = Field(default=None, description="Also write log lines to this file.")

def iana_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r} (use an IANA name such as America/New_York)") from None
    return value

"""Email addresses: one canonical stored form, and the form that goes on the wire.

Stored: validated, lower-cased, with an internationalised domain in its ASCII
(IDNA) form, so ``user@bücher.example`` and ``user@xn--bcher-kva.example`` are one
subscriber.  A local part beyond ASCII (RFC 6531) is kept as UTF-8; such mail needs
a server that offers SMTPUTF8, and a server that does not refuses that one recipient.
"""

from __future__ import annotations

import idna
from email_validator import EmailNotValidError, validate_email

from .errors import PipelineError

MAX_LOCAL_PART = 64


class AddressError(PipelineError):
    pass


def normalise_address(address: str) -> str:
    """Validated address in one canonical form.

    The whole address is lower-cased: local parts are case-sensitive on paper, but no
    mailbox provider treats them so, and "Ann@" and "ann@" must not get two copies.
    """
    try:
        result = validate_email(address.strip(), check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise AddressError(f"{address.strip()!r}: {exc}") from None
    if len(result.local_part.encode("utf-8")) > MAX_LOCAL_PART:  # RFC 5321 4.5.3.1.1; servers refuse more
        raise AddressError(f"{address.strip()!r}: the part before @ is longer than {MAX_LOCAL_PART} bytes")
    return (result.ascii_email or ascii_address(result.normalized)).lower()


def ascii_address(address: str) -> str:
    """The address with its domain in ASCII (IDNA); the local part as it is."""
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError as exc:
        raise AddressError(f"{address!r}: domain cannot be written in ASCII: {exc}") from None

"""Unsubscribe tokens: opaque, verifiable without the database, and still good after a key change.

A token is the address encrypted and authenticated with AES-SIV under a key derived
from the signing secret: it reveals nothing (no readable address, no subscriber
count), cannot be forged or altered, and is the same every time for one address,
so a resent message carries the same link.  Unsubscribe links must keep working
for as long as old mail is read, so they do not expire; when the secret changes,
tokens made with the previous one (``previous``) are still accepted.  The
signed-but-readable tokens of version 0.1 (the address in base64) are accepted
until ``LEGACY_TOKENS_UNTIL`` and refused after it: a year after they stopped
being sent, long past the life of an unsubscribe link in a newsletter that was read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from datetime import date, datetime, timezone
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "u1"
_PURPOSE = b"unsubscribe token"
LEGACY_TOKENS_UNTIL = date(2027, 12, 31)  # the last day a version 0.1 token unsubscribes anyone


def b64(data: bytes) -> str:
    """URL-safe base64 without padding: the form every token of the project uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def base36(number: int) -> str:
    """A short, case-insensitive, URL- and address-safe form of a non-negative integer."""
    digits = ""
    while True:
        number, rest = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[rest] + digits
        if not number:
            return digits


@lru_cache(maxsize=8)
def _cipher(secret: bytes, purpose: bytes = _PURPOSE) -> AESSIV:
    """One key derivation per secret and purpose, not per recipient."""
    key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=purpose).derive(secret)
    return AESSIV(key)


def seal(secret: bytes, purpose: bytes, text: str) -> str:
    """``text`` encrypted and authenticated for one purpose: URL-safe, deterministic, revealing nothing."""
    return b64(_cipher(secret, purpose).encrypt(text.encode("utf-8"), [purpose]))


def unseal(secret: bytes, purpose: bytes, sealed: str) -> str | None:
    """What ``seal`` sealed, or None when it was made for another purpose or key, forged or altered."""
    try:
        return _cipher(secret, purpose).decrypt(unb64(sealed), [purpose]).decode("utf-8")
    except (InvalidTag, ValueError, UnicodeDecodeError):
        return None


def make_token(secret: bytes, email: str) -> str:
    """An opaque, URL-safe token for the address."""
    return f"{VERSION}.{seal(secret, _PURPOSE, email)}"


def read_token(secret: bytes, token: str, previous: Iterable[bytes] = (), today: date | None = None) -> str | None:
    """The address a token stands for, or None when it is malformed, forged, altered, or a retired
    version 0.1 token (after ``LEGACY_TOKENS_UNTIL``; ``today`` for a test's clock)."""
    legacy_allowed = (today or datetime.now(timezone.utc).date()) <= LEGACY_TOKENS_UNTIL
    for key in (secret, *previous):
        if token.startswith(f"{VERSION}."):
            email = unseal(key, _PURPOSE, token.split(".", 1)[1])
        else:
            email = _legacy(key, token) if legacy_allowed else None
        if email is not None:
            return email
    return None


def _signature(secret: bytes, email: str) -> bytes:
    return hmac.new(secret, b"unsubscribe\x00" + email.encode("utf-8"), hashlib.sha256).digest()[:18]


def _legacy(secret: bytes, token: str) -> str | None:
    """Tokens of version 0.1 (the address in base64, HMAC-signed), in mail sent before the change."""
    try:
        payload, signature = token.split(".", 1)
        email = unb64(payload).decode("utf-8")
        given = unb64(signature)
    except (ValueError, UnicodeDecodeError):
        return None
    return email if hmac.compare_digest(given, _signature(secret, email)) else None

"""Unsubscribe tokens: opaque, verifiable without the database, and still good after a key change.

A token is the address encrypted and authenticated with AES-SIV under a key derived
from the signing secret: it reveals nothing (no readable address, no subscriber
count), cannot be forged or altered, and is the same every time for one address,
so a resent message carries the same link.  Unsubscribe links must keep working
for as long as old mail is read, so they do not expire; when the secret changes,
tokens made with the previous one (``previous``) are still accepted, and so are
the signed-but-readable tokens of earlier versions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "u1"
_PURPOSE = b"unsubscribe token"


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
def _cipher(secret: bytes) -> AESSIV:
    """One key derivation per secret, not per recipient."""
    key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_PURPOSE).derive(secret)
    return AESSIV(key)


def make_token(secret: bytes, email: str) -> str:
    """An opaque, URL-safe token for the address."""
    return f"{VERSION}.{b64(_cipher(secret).encrypt(email.encode('utf-8'), [_PURPOSE]))}"


def read_token(secret: bytes, token: str, previous: Iterable[bytes] = ()) -> str | None:
    """The address a token stands for, or None when it is malformed, forged or altered."""
    for key in (secret, *previous):
        email = _open(key, token) if token.startswith(f"{VERSION}.") else _legacy(key, token)
        if email is not None:
            return email
    return None


def _open(secret: bytes, token: str) -> str | None:
    try:
        return _cipher(secret).decrypt(unb64(token.split(".", 1)[1]), [_PURPOSE]).decode("utf-8")
    except (InvalidTag, ValueError, UnicodeDecodeError):
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

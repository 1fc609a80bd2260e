"""Unsubscribe tokens: a URL-safe value naming the address, signed so nobody can unsubscribe someone else."""

from __future__ import annotations

import base64
import hashlib
import hmac


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, email: str) -> bytes:
    return hmac.new(secret, b"unsubscribe\x00" + email.encode("utf-8"), hashlib.sha256).digest()[:18]


def make_token(secret: bytes, email: str) -> str:
    """A URL-safe token naming the address, signed so nobody can unsubscribe someone else."""
    return f"{_b64(email.encode('utf-8'))}.{_b64(_signature(secret, email))}"


def read_token(secret: bytes, token: str) -> str | None:
    """The address a token names, or None when it is malformed or forged."""
    try:
        payload, signature = token.split(".", 1)
        email = _unb64(payload).decode("utf-8")
        given = _unb64(signature)
    except (ValueError, UnicodeDecodeError):
        return None
    return email if hmac.compare_digest(given, _signature(secret, email)) else None

"""The signup's secrets in links and forms; none of them carries an address.

- confirmation tokens are random and stored only as their SHA-256, so they expire and
  are spent in the database (single use), and a copy of the database confirms nobody;
- preferences tokens are an HMAC over the subscriber's id, the purpose and an expiry,
  so every digest can carry one without a database write per recipient;
- form stamps are an HMAC over the time the form was shown, for the minimum fill time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timezone

from .tokens import b64, base36, unb64


def _mac(secret: bytes, purpose: str, *parts: str) -> bytes:
    message = "\x00".join((purpose, *parts)).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).digest()[:18]


# -- confirmation: random, stored hashed ------------------------------------------------------

def new_confirmation_token() -> tuple[str, str]:
    """A fresh token for the link and the hash to store."""
    token = secrets.token_urlsafe(24)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# -- preferences: HMAC over id, purpose, expiry ------------------------------------------------

def make_preferences_token(secret: bytes, subscriber_id: int, expires: datetime) -> str:
    stamp = base36(int(expires.timestamp()))
    ident = base36(subscriber_id)
    return f"{ident}.{stamp}.{b64(_mac(secret, 'preferences', ident, stamp))}"


def read_preferences_token(secret: bytes, token: str, now: datetime) -> tuple[int | None, str]:
    """(subscriber id, '') for a good token; (None, 'expired' or 'invalid') otherwise."""
    try:
        ident, stamp, signature = token.split(".")
        given = unb64(signature)
        subscriber_id, expires = int(ident, 36), int(stamp, 36)
    except ValueError:
        return None, "invalid"
    if not hmac.compare_digest(given, _mac(secret, "preferences", ident, stamp)):
        return None, "invalid"
    if datetime.fromtimestamp(expires, timezone.utc) <= now:
        return None, "expired"
    return subscriber_id, ""


# -- form stamps: when the form was shown --------------------------------------------------------

def make_form_stamp(secret: bytes, shown: datetime) -> str:
    stamp = base36(int(shown.timestamp() * 1000))
    return f"{stamp}.{b64(_mac(secret, 'form', stamp))}"


def read_form_stamp(secret: bytes, value: str) -> datetime | None:
    """When the form was shown, or None for a missing, malformed or forged stamp."""
    try:
        stamp, signature = value.split(".")
        given = unb64(signature)
        millis = int(stamp, 36)
    except ValueError:
        return None
    if not hmac.compare_digest(given, _mac(secret, "form", stamp)):
        return None
    return datetime.fromtimestamp(millis / 1000, timezone.utc)

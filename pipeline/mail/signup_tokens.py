"""The signup's secrets in links and forms; none of them carries an address.

- confirmation tokens are random and stored only as their SHA-256, so they expire and
  are spent in the database (single use), and a copy of the database confirms nobody;
- preferences tokens seal the subscriber's id and an expiry (AES-SIV, like unsubscribe
  tokens), so every digest can carry one without a database write per recipient and
  the link shows neither the id nor how many subscribers there are; the older form
  (the id in base36 beside an HMAC) is still read until it expires by itself;
- form stamps are an HMAC over the time the form was shown and a nonce, for the minimum fill
  time; each is spent by the sign-up it carries (single use).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timezone

from .tokens import b64, base36, seal, unb64, unseal


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

PREFERENCES_VERSION = "p1"
_PREFERENCES = b"preferences token"


def make_preferences_token(secret: bytes, subscriber_id: int, expires: datetime) -> str:
    sealed = seal(secret, _PREFERENCES, f"{base36(subscriber_id)}.{base36(int(expires.timestamp()))}")
    return f"{PREFERENCES_VERSION}.{sealed}"


def read_preferences_token(secret: bytes, token: str, now: datetime,
                           previous: Iterable[bytes] = ()) -> tuple[int | None, str]:
    """(subscriber id, '') for a good token; (None, 'expired' or 'invalid') otherwise."""
    for key in (secret, *previous):
        opened = _open_preferences(key, token)
        if opened is not None:
            subscriber_id, expires = opened
            if datetime.fromtimestamp(expires, timezone.utc) <= now:
                return None, "expired"
            return subscriber_id, ""
    return None, "invalid"


def _open_preferences(secret: bytes, token: str) -> tuple[int, int] | None:
    try:
        if token.startswith(f"{PREFERENCES_VERSION}."):
            opened = unseal(secret, _PREFERENCES, token.split(".", 1)[1])
            if opened is None:
                return None
            ident, stamp = opened.split(".")
        else:  # the older form, in digests sent before: id and expiry readable, HMAC-signed
            ident, stamp, signature = token.split(".")
            if not hmac.compare_digest(unb64(signature), _mac(secret, "preferences", ident, stamp)):
                return None
        return int(ident, 36), int(stamp, 36)
    except ValueError:
        return None


# -- form stamps: when the form was shown --------------------------------------------------------

def make_form_stamp(secret: bytes, shown: datetime) -> str:
    """When the form was shown, with a random nonce: every form view gets its own stamp, which the
    sign-up spends (single use)."""
    stamp, nonce = base36(int(shown.timestamp() * 1000)), secrets.token_urlsafe(9)
    return f"{stamp}.{nonce}.{b64(_mac(secret, 'form', stamp, nonce))}"


def read_form_stamp(secret: bytes, value: str) -> datetime | None:
    """When the form was shown, or None for a missing, malformed or forged stamp."""
    try:
        stamp, nonce, signature = value.split(".")
        given = unb64(signature)
        millis = int(stamp, 36)
    except ValueError:
        return None
    if not hmac.compare_digest(given, _mac(secret, "form", stamp, nonce)):
        return None
    return datetime.fromtimestamp(millis / 1000, timezone.utc)

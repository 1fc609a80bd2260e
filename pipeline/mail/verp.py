"""VERP return paths: ``bounces+<token>@<bounce domain>``, the token naming edition and subscriber.

A bounce goes back to the envelope sender, so the address it arrives at tells who bounced even
when the DSN body does not (or names a forwarding address).  The token is signed with the same
secret as unsubscribe links (HMAC-SHA256, 50 bits, lower case so MTAs that fold case keep it valid):
a forged bounce cannot name anyone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from .tokens import base36

_SIGNATURE_CHARS = 10  # base32 characters: 50 bits
_TOKEN = re.compile(r"^([0-9a-z]{1,64})-([0-9a-z]{1,13})-([a-z2-7]{10})$")



@dataclass(frozen=True)
class BounceTarget:
    """Who a signed return path names."""

    edition_id: str
    subscriber_id: int


def _signature(secret: bytes, edition_id: str, subscriber_id: int) -> str:
    mac = hmac.new(secret, f"verp\x00{edition_id}\x00{subscriber_id}".encode("ascii"), hashlib.sha256).digest()
    return base64.b32encode(mac).decode("ascii").lower()[:_SIGNATURE_CHARS]


def make_return_path(secret: bytes, edition_id: str, subscriber_id: int, local_part: str, domain: str) -> str:
    token = f"{edition_id}-{base36(subscriber_id)}-{_signature(secret, edition_id, subscriber_id)}"
    return f"{local_part}+{token}@{domain}"


def read_return_path(secret: bytes, address: str, local_part: str, domain: str) -> BounceTarget | None:
    """The edition and subscriber a bounce address names, or None when it is not ours or is forged."""
    address = address.strip().strip("<>").lower()
    local, _, host = address.rpartition("@")
    if host != domain.lower() or not local.startswith(local_part.lower() + "+"):
        return None
    match = _TOKEN.match(local[len(local_part) + 1:])
    if not match:
        return None
    edition_id, subscriber_text, signature = match.groups()
    subscriber_id = int(subscriber_text, 36)
    if not hmac.compare_digest(signature, _signature(secret, edition_id, subscriber_id)):
        return None
    return BounceTarget(edition_id, subscriber_id)

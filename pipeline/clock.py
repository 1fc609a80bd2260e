"""The one clock: the aware UTC time now.  Every injectable clock (sign-up, the desk, the send
engine, tests) defaults to it, so "now" means the same thing everywhere."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)

"""The one place that reads environment variables (besides click's ``--config``/``PIPELINE_CONFIG``).

Secrets come from the environment or, for the signing secret on one machine, from
a file generated into the state folder with mode 0600.  No secret is ever logged.
"""

from __future__ import annotations

import math
import os
import secrets
from pathlib import Path

from .errors import ConfigError

DATABASE_URL_ENV = "PIPELINE_DATABASE_URL"
SECRET_FILE = "secret"
MIN_SECRET_LENGTH = 16
MIN_DISTINCT_CHARACTERS = 10  # "aaaaaaaaaaaaaaaa" and "1234123412341234" are not secrets
PLACEHOLDER_WORDS = ("replace", "change-me", "changeme", "example", "placeholder", "xxxx", "your-")
MIN_SECRET_BITS = 128
SEQUENCE_RUN = 5
REPEAT_RUN = 4
_CLASSES = (("0123456789", 10), ("abcdefghijklmnopqrstuvwxyz", 26), ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 26),
            ("-_", 2), ("!\"#$%&'()*+,./:;<=>?@[\\]^`{|}~ ", 31))


def weak_secret(value: str) -> str | None:
    """Why a secret is too weak to sign links, or None: too short, too few distinct characters, a
    placeholder left in from an example file, a visible pattern, or under 128 bits by its alphabet."""
    if len(value) < MIN_SECRET_LENGTH:
        return f"shorter than {MIN_SECRET_LENGTH} characters"
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return f"fewer than {MIN_DISTINCT_CHARACTERS} different characters"
    lowered = value.lower()
    if any(word in lowered for word in PLACEHOLDER_WORDS):
        return "a placeholder, not a random value"
    pattern = visible_pattern(value)
    if pattern:
        return f"it has a visible pattern ({pattern})"
    bits = estimated_bits(value)
    if bits < MIN_SECRET_BITS:
        return f"about {bits:.0f} bits of entropy by its length and alphabet, below {MIN_SECRET_BITS}"
    return None


def estimated_bits(value: str) -> float:
    """Length times the bits per character of the smallest usual alphabet the value is drawn from
    (hex, digits, letters, base64, printable): what a random string of that form would hold."""
    if all(c in "0123456789abcdef" for c in value) or all(c in "0123456789ABCDEF" for c in value):
        pool = 16
    else:
        pool = sum(size for members, size in _CLASSES if any(c in members for c in value))
        pool += 0 if all(any(c in members for members, _ in _CLASSES) for c in value) else 128  # non-ASCII
    return len(value) * math.log2(max(pool, 2))


def visible_pattern(value: str) -> str | None:
    """A run anyone would guess: five characters in sequence (``01234``, ``edcba``), one character
    four times in a row, or the whole value a repeated block."""
    for start in range(len(value) - SEQUENCE_RUN + 1):
        run = value[start:start + SEQUENCE_RUN]
        steps = {ord(b) - ord(a) for a, b in zip(run, run[1:], strict=False)}
        if steps in ({1}, {-1}):
            return f"the sequence {run!r}"
    for start in range(len(value) - REPEAT_RUN + 1):
        if len(set(value[start:start + REPEAT_RUN])) == 1:
            return f"{value[start]!r} repeated"
    for size in range(1, len(value) // 2 + 1):
        if len(value) % size == 0 and value[:size] * (len(value) // size) == value:
            return f"the block {value[:size]!r} repeated"
    return None


def database_url() -> str | None:
    """$PIPELINE_DATABASE_URL, or None for the SQLite file in the state folder."""
    return os.environ.get(DATABASE_URL_ENV) or None


def smtp_password(variable: str) -> str | None:
    return os.environ.get(variable) or None


def secret_from_env(variable: str) -> str | None:
    """A secret named in the config by its variable (bounce mailbox password, webhook keys); never logged."""
    return os.environ.get(variable) or None


def signing_secret(variable: str, state_folder: Path) -> bytes:
    """The secret that signs unsubscribe links: $<variable> if set, else the state folder's own.

    The generated one is written once with mode 0600 and kept; set the variable
    instead when several machines send, so every machine signs alike.
    """
    value = os.environ.get(variable)
    if value is not None:
        problem = weak_secret(value)
        if problem:
            raise ConfigError(f"${variable} is set but {problem}; use a random secret, e.g. "
                              "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
        return value.encode("utf-8")
    path = state_folder / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    state_folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fresh = secrets.token_urlsafe(32).encode("ascii")
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(fresh)
    return fresh


def previous_secrets(variable: str) -> list[bytes]:
    """Secrets used before the current one ($<variable>_PREVIOUS, comma-separated): links in mail
    already sent keep working through a key change.  Each is held to the same rule as the current
    one: a weak old secret would let anyone forge links as well as a weak new one."""
    name = f"{variable}_PREVIOUS"
    found = []
    for part in os.environ.get(name, "").split(","):
        part = part.strip()
        if not part:
            continue
        problem = weak_secret(part)
        if problem:
            raise ConfigError(f"${name} holds a secret that is {problem}; drop it, or rotate to a random one")
        found.append(part.encode("utf-8"))
    return found


def lint_secret(variable: str, state_folder: Path) -> bytes:
    """For a look at a sample message only: never creates a secret file."""
    value = os.environ.get(variable)
    if value:
        return value.encode("utf-8")
    path = state_folder / SECRET_FILE
    return path.read_bytes().strip() if path.exists() else b"lint-only-secret-never-sent"

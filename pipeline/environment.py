"""The one place that reads environment variables (besides click's ``--config``/``PIPELINE_CONFIG``).

Secrets come from the environment or, for the signing secret on one machine, from
a file generated into the state folder with mode 0600.  No secret is ever logged.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import ConfigError

DATABASE_URL_ENV = "PIPELINE_DATABASE_URL"
SECRET_FILE = "secret"
MIN_SECRET_LENGTH = 16
MIN_DISTINCT_CHARACTERS = 10  # "aaaaaaaaaaaaaaaa" and "1234123412341234" are not secrets
PLACEHOLDER_WORDS = ("replace", "change-me", "changeme", "example", "placeholder", "xxxx", "your-")


def weak_secret(value: str) -> str | None:
    """Why a secret is too weak to sign links, or None: too short, too few distinct characters, or a
    placeholder left in from an example file."""
    if len(value) < MIN_SECRET_LENGTH:
        return f"shorter than {MIN_SECRET_LENGTH} characters"
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return f"fewer than {MIN_DISTINCT_CHARACTERS} different characters"
    lowered = value.lower()
    if any(word in lowered for word in PLACEHOLDER_WORDS):
        return "a placeholder, not a random value"
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
    state_folder.mkdir(parents=True, exist_ok=True)
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
    already sent keep working through a key change."""
    value = os.environ.get(f"{variable}_PREVIOUS", "")
    return [part.strip().encode("utf-8") for part in value.split(",") if part.strip()]


def lint_secret(variable: str, state_folder: Path) -> bytes:
    """For a look at a sample message only: never creates a secret file."""
    value = os.environ.get(variable)
    if value:
        return value.encode("utf-8")
    path = state_folder / SECRET_FILE
    return path.read_bytes().strip() if path.exists() else b"lint-only-secret-never-sent"

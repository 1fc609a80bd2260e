"""The desk's people: accounts, passwords (argon2id), sign-in with a throttle, and the audit log."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..addresses import normalise_address
from ..clock import utcnow
from ..config import Config
from ..errors import PipelineError
from ..state.desk import DeskStore, DeskUser
from ..state.storage import Storage
from ..urls import web_url

log = logging.getLogger(__name__)

ROLES = ("editor", "admin")
MIN_PASSWORD = 12
SET_PASSWORD_HOURS = 48

Clock = Callable[[], datetime]
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when an account does not exist, so both answers take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise PipelineError(f"password: use at least {MIN_PASSWORD} characters")
    return password


def normalise_email(address: str) -> str:

    return normalise_address(address)


def add_user(storage: Storage, address: str, role: str, password: str | None, *, now: datetime | None = None
             ) -> tuple[str, str | None]:
    """Create (or update) a desk account.  With a password it is hashed with argon2id; without one, a
    one-time set-password token is returned (its sha256 is stored, valid 48 hours).  Returns the outcome
    ('added' or 'updated') and that token."""
    if role not in ROLES:
        raise PipelineError(f"--role: {role!r}: use editor or admin")
    email = normalise_email(address)
    now = now or utcnow()
    store = DeskStore(storage)
    if password is not None:
        outcome = store.put_user(email, role, _hasher.hash(check_password(password)), now)
        token = None
    else:
        token = secrets.token_urlsafe(32)
        outcome = store.put_user(email, role, None, now, token_hash(token),
                                 now + timedelta(hours=SET_PASSWORD_HOURS))
    user = store.user(email=email)
    assert user is not None
    store.delete_sessions_of(user.id)  # a changed role or password takes effect at once
    store.audit("operator", "cli", "add-user", f"{email} ({role}) {outcome}", now)
    log.info("desk account %s %s as %s", email, outcome, role)
    return outcome, token


def set_password_link(config: Config, token: str) -> str:
    """Where a person with a one-time token chooses their password."""

    return f"{web_url(config)}desk/set-password?token={token}"


@dataclass(frozen=True)
class SignIn:
    """The outcome of one attempt: the person, or why not (``locked_until`` for a lock-out notice)."""

    user: DeskUser | None
    locked_until: datetime | None = None


class Accounts:
    """Sign-in with a throttle per account and per client address, over the desk's tables."""

    def __init__(self, config: Config, storage: Storage, clock: Clock = utcnow):
        self.settings = config.desk
        self.store = DeskStore(storage)
        self.clock = clock

    def _lock(self, since: datetime, **which: str) -> datetime | None:
        limit = self.settings.account_attempts if "account" in which else self.settings.address_attempts
        count, latest = self.store.failures(since, **which)
        if count >= limit and latest is not None:
            return latest + timedelta(minutes=self.settings.lockout_minutes)
        return None

    def locked_until(self, account: str, address: str) -> datetime | None:
        since = self.clock() - timedelta(minutes=self.settings.lockout_minutes)
        locks = [lock for lock in (self._lock(since, account=account), self._lock(since, address=address)) if lock]
        return max(locks) if locks else None

    def sign_in(self, address: str, password: str, client: str) -> SignIn:
        try:
            account = normalise_email(address)
        except PipelineError:
            account = address.strip().lower()[:320]
        now = self.clock()
        locked = self.locked_until(account, client)
        if locked is not None:
            self.store.record_attempt(account, client, False, now)
            self.store.audit(account, client, "sign-in refused", f"locked out until {locked.isoformat()}", now)
            log.warning("desk sign-in refused: locked out")
            return SignIn(None, locked)
        user = self.store.user(email=account)
        ok = False
        try:
            ok = _hasher.verify(user.password_hash if user and user.password_hash else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            ok = False
        ok = ok and user is not None and user.password_hash is not None
        self.store.record_attempt(account, client, ok, now)
        if not ok:
            self.store.audit(account, client, "sign-in failed", "", now)
            return SignIn(None, self.locked_until(account, client))
        assert user is not None
        if user.password_hash and _hasher.check_needs_rehash(user.password_hash):
            self.store.set_password(user.id, _hasher.hash(password))
        self.store.audit(user.email, client, "signed in", "", now)
        return SignIn(user)

    def set_password_with_token(self, token: str, password: str) -> DeskUser | None:
        user = self.store.user_by_set_token(token_hash(token), self.clock())
        if user is None:
            return None
        self.store.set_password(user.id, _hasher.hash(check_password(password)))
        self.store.delete_sessions_of(user.id)
        self.store.audit(user.email, "", "password set", "with a one-time link", self.clock())
        return user

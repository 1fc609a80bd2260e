"""Server-side sessions for the desk, as a Flask session interface: the cookie carries a random token
(``Secure``, ``HttpOnly``, ``SameSite=Strict``), the state database keeps its sha256 with the data, who it
belongs to and when it started and was last used.  A session unused for ``desk.idle_minutes`` or older than
``desk.absolute_hours`` is gone; deleting a person's rows signs them out everywhere."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from ..state.desk import DeskStore
from .accounts import token_hash

COOKIE = "desk_session"


class DeskSession(CallbackDict, SessionMixin):
    """The session's data, plus who it belongs to; ``rotate`` gives it a new token (at sign-in)."""

    def __init__(self, data: dict[str, Any] | None = None, token: str | None = None, user_id: int | None = None,
                 expired: bool = False):
        def on_update(_self: Any) -> None:
            self.modified = True

        super().__init__(data or {}, on_update)
        self.token = token
        self.user_id = user_id
        self.expired = expired  # the cookie named a session that timed out: say so on the sign-in page
        self.modified = False
        self.rotated = False
        self.ended = False

    def sign_in(self, user_id: int) -> None:
        """A new token for the signed-in session (no fixation), its data kept but for the old CSRF secret."""
        self.user_id = user_id
        self.pop("csrf_token", None)
        self.rotated = True
        self.modified = True

    def end(self) -> None:
        self.clear()
        self.user_id = None
        self.ended = True


class ServerSessions(SessionInterface):
    def __init__(self, store: DeskStore, clock: Callable[[], datetime], idle: timedelta, absolute: timedelta):
        self.store, self.clock, self.idle, self.absolute = store, clock, idle, absolute

    def open_session(self, app: Flask, request: Request) -> DeskSession:
        token = request.cookies.get(COOKIE)
        if not token:
            return DeskSession()
        row = self.store.session(token_hash(token))
        if row is None:
            return DeskSession(expired=True)
        now = self.clock()
        if now - row.last_seen > self.idle or now - row.created_at > self.absolute:
            self.store.delete_session(row.id)
            return DeskSession(expired=row.user_id is not None)
        session = DeskSession(row.data, token, row.user_id)
        self.store.touch_session(row.id, now)  # it was used: the idle clock starts again
        return session

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, DeskSession)
        path = self.get_cookie_path(app)
        now = self.clock()
        if session.ended or (session.rotated and session.token):
            if session.token:
                self.store.delete_session(token_hash(session.token))
            if session.ended:
                response.delete_cookie(COOKIE, path=path, secure=True, httponly=True, samesite="Strict")
                return
            session.token = None
        if session.token is None:
            if not session.modified and session.user_id is None:
                return  # nothing worth a row: a page that needed no form
            self.store.prune_sessions(now - self.idle, now - self.absolute)
            session.token = secrets.token_urlsafe(32)
            self.store.create_session(token_hash(session.token), session.user_id, dict(session), now)
            response.set_cookie(COOKIE, session.token, path=path, secure=True, httponly=True, samesite="Strict",
                                max_age=int(self.absolute.total_seconds()))
        elif session.modified:
            self.store.save_session(token_hash(session.token), dict(session), now)
        response.vary.add("Cookie")

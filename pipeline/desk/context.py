"""What every page of the desk shares: the app's desk context, the audit log, the sign-in rule, and a
send in progress.  The pages (``views.py``, ``subscriber_views.py``) and the app (``web.py``) import it."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import abort, current_app, flash, g, redirect, request, session, url_for

from ..state.desk import DeskUser
from .sessions import DeskSession


@dataclass
class SendJob:
    """An edition being sent from the desk, in a thread of the web server."""

    edition_id: str
    started_by: str
    started_at: datetime
    done: threading.Event = field(default_factory=threading.Event)
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def desk() -> dict[str, Any]:

    return current_app.extensions["desk"]


def audit(action: str, detail: str = "") -> None:
    user: DeskUser | None = g.get("user")
    desk()["store"].audit(user.email if user else "anonymous", g.get("client", ""), action, detail, desk()["clock"]())


def signed_in(role: str = "editor") -> Callable:
    """A view for people signed in; ``admin`` for admins only (editors get 403, and the attempt is audited)."""
    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if g.get("user") is None:
                expired = isinstance(session, DeskSession) and session.expired
                if expired:
                    flash("Your session ended; please sign in again.")
                return redirect(url_for("login", next=request.script_root + request.path))
            if role == "admin" and g.user.role != "admin":
                audit("refused", f"{request.method} {request.path}: admins only")
                abort(403, "Only an admin can do this. Ask an admin of the desk.")
            return view(*args, **kwargs)
        return wrapper
    return decorate

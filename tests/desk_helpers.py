"""What the desk's tests share: a project with the desk on, its people, and a browser-like HTTP client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from werkzeug.test import Client, TestResponse

from pipeline.config import Config, load_config
from pipeline.desk.accounts import add_user
from pipeline.desk.web import standalone
from pipeline.state.storage import Storage
from pipeline.usecases import open_storage

from .conftest import set_config

ADMIN, EDITOR = "amara.admin@example.org", "eli.editor@example.org"
PASSWORD = "a long passphrase for the desk"
BASE = "https://desk.example.org"  # what the browser sees behind the HTTPS proxy


class Clock:
    """The desk's clock: moved by the tests, never slept on."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


@dataclass
class Visitor:
    """One browser: its own cookies; ``post`` sends the form with the token of the page it came from."""

    client: Client

    def get(self, path: str, **kwargs) -> TestResponse:
        return self.client.get(path, base_url=BASE, **kwargs)

    def post(self, path: str, data: dict | None = None, *, token_from: str | None = None,
             headers: dict | None = None, **kwargs) -> TestResponse:
        data = dict(data or {})
        if token_from is not None:
            data["csrf_token"] = csrf_token(self.get(token_from).text)
        return self.client.post(path, base_url=BASE, data=data, headers={"Origin": BASE, "Referer": BASE + (token_from or path), **(headers or {})}, **kwargs)

    def sign_in(self, email: str, password: str = PASSWORD) -> TestResponse:
        return self.post("/desk/login", {"email": email, "password": password}, token_from="/desk/login")

    @property
    def cookie(self) -> str | None:
        found = self.client.get_cookie("desk_session", domain="desk.example.org", path="/desk")
        return found.value if found else None


@dataclass
class DeskSite:
    project: Path
    config: Config
    storage: Storage
    clock: Clock
    app: object

    def reloaded(self) -> DeskSite:
        """The desk started again after config.yaml changed."""
        config = load_config(self.project / "config.yaml")
        return DeskSite(self.project, config, self.storage, self.clock, standalone(config, self.storage,
                                                                                   clock=self.clock))

    def visitor(self) -> Visitor:
        return Visitor(Client(self.app))

    def signed_in(self, email: str) -> Visitor:
        visitor = self.visitor()
        response = visitor.sign_in(email)
        assert response.status_code == 302, response.text
        return visitor


def desk_config(project: Path, **changes) -> Config:
    set_config(project, **{"desk.enabled": True, **changes})
    return load_config(project / "config.yaml")


def desk_site(project: Path) -> Iterator[DeskSite]:
    """The body of each desk test module's ``site`` fixture: the MESEMS project with the desk on, an admin
    and an editor, the real state database, and the desk app on an injected clock."""
    config = desk_config(project)
    storage = open_storage(config)
    add_user(storage, ADMIN, "admin", PASSWORD)
    add_user(storage, EDITOR, "editor", PASSWORD)
    clock = Clock()
    try:
        yield DeskSite(project, config, storage, clock, standalone(config, storage, clock=clock))
    finally:
        storage.close()

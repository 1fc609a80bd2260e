"""HTTP helpers shared by the web app (``service/web.py``) and the relay webhooks (``service/webhooks.py``):
reading a request body within limits.  Neither of those modules imports the other for these."""

from __future__ import annotations

MAX_BODY = 64 * 1024


class BadBody(Exception):
    """A request body the app will not read: its status says why (400 malformed, 413 too large)."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


def read_body(environ: dict, limit: int = MAX_BODY) -> bytes:
    """The request body, never trusting Content-Length: a malformed or negative one is refused, and at
    most ``limit`` bytes are read whatever it says (the production server enforces the same limit)."""
    declared = environ.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit():
        raise BadBody("400 Bad Request")
    if int(declared) > limit:
        raise BadBody("413 Content Too Large")
    body = environ["wsgi.input"].read(int(declared)) if int(declared) else b""
    if len(body) > limit:
        raise BadBody("413 Content Too Large")
    return body

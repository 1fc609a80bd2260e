"""`pipeline preview`: the outputs on 127.0.0.1 for a person to look at before anything is sent.

Opening the index rebuilds the outputs (feeds, digest, archive) from the current
content; nothing is ever sent from here.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from .. import usecases
from ..config import Config
from ..publish.digest import environment_for
from ..usecases import RunOutcome

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], list[bytes]]

log = logging.getLogger(__name__)

TYPES = {".xml": "application/xml; charset=utf-8", ".xsl": "text/xsl; charset=utf-8",
         ".json": "application/feed+json; charset=utf-8", ".txt": "text/plain; charset=utf-8",
         ".html": "text/html; charset=utf-8"}

INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Preview · {{ site.title }}</title>
<style>body{font-family:Arial,sans-serif;margin:1rem}.side{display:flex;gap:1rem;flex-wrap:wrap}
iframe{border:1px solid #ccc;height:80vh}.html{width:640px}.text{width:600px;background:#fff}</style></head>
<body><h1>Preview: {{ site.title }}</h1>
<p>Rebuilt from the content just now ({{ count }} items); nothing is sent from this page.</p>
<ul>
<li><a href="/digest.html">Digest (HTML)</a> · <a href="/digest.txt">Digest (text)</a></li>
<li><a href="/rss.xml">RSS</a> · <a href="/atom.xml">Atom</a> · <a href="/feed.json">JSON Feed</a></li>
<li><a href="/stories/">Stories</a> · <a href="/archive/">Archive</a> · <a href="/index.html">Site home</a></li>
</ul>
<div class="side"><iframe class="html" src="/digest.html" title="HTML digest"></iframe>
<iframe class="text" src="/digest.txt" title="Text digest"></iframe></div>
</body></html>
"""


def make_app(config: Config, rebuild: Callable[[], RunOutcome] | None = None) -> WSGIApp:
    """Each visit to the index rebuilds the outputs through the same use case as a run (never sending)."""
    public = config.path("output")
    env = environment_for(config)
    rebuild = rebuild or (lambda: usecases.publish(config))

    def respond(start_response, status: str, body: bytes, content_type: str = "text/html; charset=utf-8"):
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-store")])
        return [body]

    def preview_app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/":
            result = rebuild()
            page = env.from_string(INDEX).render(site=config.site, count=len(result.items))
            return respond(start_response, "200 OK", page.encode("utf-8"))
        root = public.resolve()  # the live version, read once per request: a run may switch it meanwhile
        target = (root / path.lstrip("/")).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(root) or not target.is_file():
            return respond(start_response, "404 Not Found", b"not found", "text/plain")
        kind = TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return respond(start_response, "200 OK", target.read_bytes(), kind)

    return preview_app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        log.debug("%s %s", self.command, self.path)


def make_preview_server(config: Config, host: str = "127.0.0.1", port: int = 8000):
    server = make_server(host, port, make_app(config), handler_class=_QuietHandler)
    log.info("preview on http://%s:%d/", host, server.server_port)
    return server

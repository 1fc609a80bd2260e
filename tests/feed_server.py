"""A real HTTP server on 127.0.0.1 serving feed fixtures, some of them broken on purpose."""

from __future__ import annotations

import gzip
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[BaseHTTPRequestHandler], Response] | Response


class FeedServer:
    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.requests: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.release = threading.Event()  # frees handlers that hang on purpose
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests[self.path].append(dict(self.headers))
                route = server.routes.get(self.path)
                if route is None:
                    response = Response(404, b"not found")
                else:
                    response = route(self) if callable(route) else route
                if response is None:  # the route wrote its own answer
                    return
                self.send_response(response.status)
                headers = {"Content-Type": "application/rss+xml; charset=utf-8", **response.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        # shutdown() waits for the loop to look again: every 10 ms instead of the default 500 ms.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> FeedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- canned behaviours ------------------------------------------------------------------

    def with_etag(self, body: bytes, etag: str, content_type: str = "application/rss+xml") -> Route:
        def route(handler):
            if handler.headers.get("If-None-Match") == etag:
                return Response(304, b"", {"ETag": etag})
            return Response(200, body, {"ETag": etag, "Content-Type": content_type})
        return route

    def hanging(self, first_bytes: bytes) -> Route:
        """Sends headers and a little of the body, then nothing until the test ends."""
        def route(handler):
            handler.send_response(200)
            handler.send_header("Content-Type", "application/rss+xml")
            handler.send_header("Content-Length", "100000")
            handler.end_headers()
            handler.wfile.write(first_bytes)
            handler.wfile.flush()
            self.release.wait(timeout=30)
            return None
        return route

    @staticmethod
    def gzipped(body: bytes) -> Response:
        return Response(200, gzip.compress(body), {"Content-Encoding": "gzip"})

    @staticmethod
    def redirect(location: str, status: int = 301) -> Response:
        return Response(status, b"", {"Location": location})

"""A WebSub hub stand-in on 127.0.0.1: records every publish ping it receives."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


class HubServer:
    def __init__(self, status: int = 204, hang: bool = False):
        self.status = status
        self.release = threading.Event()  # a hanging hub answers only when the test ends
        self.hang = hang
        self.pings: list[dict[str, list[str]]] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode("ascii"))
                form["content-type"] = [self.headers.get("Content-Type", "")]
                with hub.lock:  # recorded before answering: when the ping returns, the test sees it
                    hub.pings.append(form)
                if hub.hang:
                    hub.release.wait(timeout=30)
                self.send_response(hub.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hub"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def published_urls(self) -> list[str]:
        with self.lock:
            return sorted(url for ping in self.pings for url in ping.get("hub.url", []))

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

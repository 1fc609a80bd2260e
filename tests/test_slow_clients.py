"""Many slow clients cost nothing: a thousand idle or slowloris connections to the web app, over raw sockets
on loopback, and a normal request still answers within a second; a client that will not finish its request is
dropped by the request deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pipeline.config import load_config
from pipeline.service.http_server import WebServer
from pipeline.service.web import make_web_server
from pipeline.usecases import open_storage

from .conftest import set_config

REQUEST = b"GET /unsubscribe HTTP/1.1\r\nHost: news.example.org\r\nConnection: close\r\n\r\n"


def _serve(server: WebServer) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()


@pytest.fixture
def web_port(project, secret) -> Iterator[int]:
    config = load_config(set_config(project, **{"web.header_timeout": 30}))  # the 1,000 stay for the whole test
    storage = open_storage(config)
    yield from _serve(make_web_server(config, storage, "127.0.0.1", 0))
    storage.close()


def _timed_request(port: int) -> tuple[float, bytes]:
    """Seconds until a normal request's whole answer arrived, and its status line."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(REQUEST)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    return time.monotonic() - started, answer.split(b"\r\n", 1)[0]


def test_a_request_answers_within_a_second_while_1000_slowloris_connections_are_open(web_port):
    idle = [socket.create_connection(("127.0.0.1", web_port), timeout=5) for _ in range(500)]
    trickling = [socket.create_connection(("127.0.0.1", web_port), timeout=5) for _ in range(500)]
    try:
        partial = b"GET /unsubscribe HTTP/1.1\r\nHost: news.example.org\r\nX-Slow: "
        for round_ in range(6):  # each round: one more byte from each of the 500, then one normal request
            for client in trickling:
                client.send(partial[round_:round_ + 1])
            seconds, status = _timed_request(web_port)
            assert status == b"HTTP/1.1 200 OK"
            assert seconds < 1.0, f"round {round_}: {seconds:.2f} s with 1,000 slow connections open"
        # all thousand are still held (not dropped to make room): each is still open and unanswered
        for client in idle[:10] + trickling[:10]:
            client.setblocking(False)
            with pytest.raises(BlockingIOError):
                client.recv(1)
    finally:
        for client in idle + trickling:
            client.close()


@pytest.fixture
def strict_port() -> Iterator[int]:
    def hello(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    yield from _serve(WebServer(hello, "127.0.0.1", 0, header_timeout=1.0, idle_timeout=30))


def _closed_after(client: socket.socket, trickle: bytes = b"", every: float = 0.0, limit: float = 5.0) -> float:
    """Seconds until the server closed ``client``, sending ``trickle`` one byte each ``every`` seconds meanwhile."""
    started = time.monotonic()
    client.settimeout(every or limit)
    sent = 0
    while time.monotonic() - started < limit:
        try:
            if client.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - started
        if trickle:
            try:
                client.send(trickle[sent % len(trickle):sent % len(trickle) + 1])  # one byte at a time
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
            sent += 1
    raise AssertionError(f"still open after {limit} s")


def test_a_client_trickling_its_headers_is_dropped_at_the_request_deadline(strict_port):
    with socket.create_connection(("127.0.0.1", strict_port)) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        seconds = _closed_after(client, trickle=b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", every=0.1)
    assert 1.0 <= seconds < 2.0  # the 1 s deadline plus at most the server's sweep interval and the trickle step


def test_a_client_that_connects_and_sends_nothing_is_dropped_at_the_request_deadline(strict_port):
    with socket.create_connection(("127.0.0.1", strict_port)) as client:
        seconds = _closed_after(client)
    assert 1.0 <= seconds < 2.0


def test_a_kept_alive_connection_gets_a_fresh_deadline_for_each_request(strict_port):
    with socket.create_connection(("127.0.0.1", strict_port), timeout=5) as client:
        for _ in range(3):
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"ok"):
                answer += client.recv(1024)
            assert answer.startswith(b"HTTP/1.1 200 OK")

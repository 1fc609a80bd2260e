"""One-click unsubscribe over real HTTP on loopback: GET confirms, POST unsubscribes, forgeries fail."""

from __future__ import annotations

import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

from pipeline import usecases
from pipeline.mail.tokens import make_token
from pipeline.service.web import make_web_server
from pipeline.usecases import open_storage

from .conftest import SECRET, add_subscribers, use_smtp, write_item
from .smtp_sink import RecordingHandler, SmtpSink


@pytest.fixture
def endpoint(config, secret):
    storage = open_storage(config)
    server = make_web_server(config, storage, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)  # quick to shut down
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/unsubscribe", storage
    server.shutdown()
    server.server_close()
    storage.close()


def _request(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _url(base: str, email: str, secret: str = SECRET) -> str:
    return f"{base}?{urllib.parse.urlencode({'token': make_token(secret.encode(), email)})}"


ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_get_only_shows_a_confirmation_page(endpoint):
    base, storage = endpoint
    storage.add_subscriber("reader@example.org")
    status, page = _request(_url(base, "reader@example.org"))
    assert status == 200
    assert "reader@example.org" in page and '<form method="post"' in page
    assert storage.get_subscriber("reader@example.org").status == "subscribed"


def test_one_click_post_unsubscribes_idempotently(endpoint):
    base, storage = endpoint
    storage.add_subscriber("reader@example.org")
    assert _request(_url(base, "reader@example.org"), ONE_CLICK, FORM)[0] == 200
    assert storage.get_subscriber("reader@example.org").status == "unsubscribed"
    assert _request(_url(base, "reader@example.org"), ONE_CLICK, FORM)[0] == 200


def test_one_click_post_as_multipart_form_data(endpoint):
    base, storage = endpoint
    storage.add_subscriber("reader@example.org")
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--XyZ--\r\n")
    status, _ = _request(_url(base, "reader@example.org"), body, {"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert status == 200
    assert storage.get_subscriber("reader@example.org").status == "unsubscribed"


@pytest.mark.parametrize("token", ["", "garbage", "cmVhZGVyQGV4YW1wbGUub3Jn.AAAAAAAAAAAAAAAAAAAAAAAA"])
def test_forged_or_broken_token_is_refused_and_changes_nothing(endpoint, token):
    base, storage = endpoint
    storage.add_subscriber("reader@example.org")
    status, _ = _request(f"{base}?token={token}", ONE_CLICK, FORM)
    assert status == 400
    assert storage.get_subscriber("reader@example.org").status == "subscribed"


def test_token_signed_with_another_secret_is_refused(endpoint):
    base, storage = endpoint
    storage.add_subscriber("reader@example.org")
    assert _request(_url(base, "reader@example.org", secret="another-secret-0123456789"), ONE_CLICK, FORM)[0] == 400
    assert storage.get_subscriber("reader@example.org").status == "subscribed"


def test_post_without_one_click_body_is_refused(endpoint):
    base, storage = endpoint
    storage.add_subscriber("reader@example.org")
    assert _request(_url(base, "reader@example.org"), b"something=else", FORM)[0] == 400
    assert storage.get_subscriber("reader@example.org").status == "subscribed"


def test_unsubscribed_reader_gets_nothing_next_edition(project, secret):
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port)
        add_subscribers(config, 2)
        usecases.run(config, progress=False)
        unsubscribe_url = handler.received[0].message["List-Unsubscribe"].split(">")[0].lstrip("<")
        leaving = handler.received[0].recipient

        storage = open_storage(config)
        server = make_web_server(config, storage, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)  # quick to shut down
        thread.start()
        try:
            local = f"http://127.0.0.1:{server.server_port}/unsubscribe?{urllib.parse.urlsplit(unsubscribe_url).query}"
            assert _request(local, ONE_CLICK, FORM)[0] == 200
        finally:
            server.shutdown()
            server.server_close()
            storage.close()

        write_item(project, "next", 'title: "Next story"\ndate: 2021-12-01T09:00:00-05:00')
        usecases.run(config, progress=False)
    later = handler.received[2:]
    assert len(later) == 1 and later[0].recipient != leaving


def _raw_request(url: str, request: bytes) -> bytes:
    import socket

    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        return sock.recv(4096)


def test_a_slow_client_does_not_hold_up_anyone_else(endpoint):
    import socket

    url, _storage = endpoint
    parts = urllib.parse.urlsplit(url)
    slow = [socket.create_connection((parts.hostname, parts.port)) for _ in range(20)]  # more than the threads
    try:
        for sock in slow:
            sock.sendall(b"POST /unsubscribe HTTP/1.1\r\nHost: x\r\n")  # and never finish the request
        with urllib.request.urlopen(url, timeout=5) as response:  # someone else is served at once
            assert response.status == 200
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize(("length", "status"), [("-1", b"400"), ("209715200", b"413")])
def test_a_bad_or_huge_body_is_refused_before_it_is_read(endpoint, length, status):
    url, _storage = endpoint
    head = (f"POST /unsubscribe?token=x HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()
    reply = _raw_request(url, head + b"List-Unsubscribe=One-Click")
    assert reply.split(b"\r\n", 1)[0].split(b" ")[1] == status, reply[:200]


def test_the_app_never_trusts_content_length_under_any_wsgi_server():
    import io

    from pipeline.service.http import MAX_BODY, BadBody, read_body

    for declared, status in (("-1", "400"), ("12x", "400"), (str(MAX_BODY + 1), "413")):
        with pytest.raises(BadBody, match=status):
            read_body({"CONTENT_LENGTH": declared, "wsgi.input": io.BytesIO(b"x" * (MAX_BODY + 10))})
    assert read_body({"CONTENT_LENGTH": "3", "wsgi.input": io.BytesIO(b"abcdef")}) == b"abc"


def test_unsubscribe_tokens_reveal_nothing_and_survive_a_key_change():
    import base64

    from pipeline.mail.tokens import read_token

    old, new = b"old-secret-0123456789abcdef", b"new-secret-0123456789abcdef"
    token = make_token(old, "jane.doe@example.org")
    padded = token.split(".", 1)[1] + "=" * (-len(token.split(".", 1)[1]) % 4)
    assert b"jane" not in base64.urlsafe_b64decode(padded) and "jane" not in token
    assert make_token(old, "jane.doe@example.org") == token  # one link per address, also when resent
    assert read_token(new, token) is None
    assert read_token(new, token, previous=[old]) == "jane.doe@example.org"
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert read_token(old, tampered) is None


def test_links_in_mail_sent_before_tokens_became_opaque_still_work():
    import base64
    import hashlib
    import hmac

    from pipeline.mail.tokens import read_token

    secret = b"test-secret-0123456789abcdef"
    email = "jane.doe@example.org"
    signature = hmac.new(secret, b"unsubscribe\x00" + email.encode(), hashlib.sha256).digest()[:18]

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    assert read_token(secret, f"{b64(email.encode())}.{b64(signature)}") == email

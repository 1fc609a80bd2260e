"""The client address behind a reverse proxy: X-Forwarded-For is believed only from web.trusted_proxies."""

from __future__ import annotations

from pipeline.service.signup import client_ip


def test_forwarded_address_is_taken_from_a_trusted_proxy():
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9, 10.0.0.2"}
    assert client_ip(environ, ["127.0.0.1", "10.0.0.0/8"]) == "203.0.113.9"


def test_forwarded_header_from_an_untrusted_peer_is_ignored():
    environ = {"REMOTE_ADDR": "198.51.100.7", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    assert client_ip(environ, ["127.0.0.1"]) == "198.51.100.7"


def test_a_client_cannot_prepend_its_own_address_past_the_proxy():
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 203.0.113.9"}
    assert client_ip(environ, ["127.0.0.1"]) == "203.0.113.9"

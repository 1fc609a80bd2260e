"""The client behind a reverse proxy (pipeline/service/proxies.py): X-Forwarded-For/-Proto/-Host or RFC 7239
Forwarded, believed only from web.trusted_proxies and walked from the right past trusted hops. The real proxies
in front of the real server are in tests/test_behind_proxies.py."""

from __future__ import annotations

import wsgiref.util

import pytest

from pipeline.config import load_config
from pipeline.service.proxies import Client, behind_proxies, networks, node_name, parse_forwarded, resolve
from pipeline.service.signup_pages import client_ip

from .conftest import set_config

LOOPBACK_AND_LAN = networks(["127.0.0.1", "10.0.0.0/8", "2001:db8:cafe::/48"])


def test_forwarded_address_is_taken_from_a_trusted_proxy():
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9, 10.0.0.2"}
    assert client_ip(environ, ["127.0.0.1", "10.0.0.0/8"]) == "203.0.113.9"


def test_forwarded_header_from_an_untrusted_peer_is_ignored():
    environ = {"REMOTE_ADDR": "198.51.100.7", "HTTP_X_FORWARDED_FOR": "203.0.113.9",
               "HTTP_X_FORWARDED_PROTO": "https", "HTTP_X_FORWARDED_HOST": "evil.example",
               "HTTP_FORWARDED": "for=192.0.2.1;proto=https;host=evil.example"}
    assert resolve(environ, LOOPBACK_AND_LAN) == Client("198.51.100.7")
    assert resolve(environ, LOOPBACK_AND_LAN, "forwarded") == Client("198.51.100.7")


def test_a_client_cannot_prepend_its_own_address_past_the_proxy():
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 203.0.113.9"}
    assert client_ip(environ, ["127.0.0.1"]) == "203.0.113.9"


def test_without_trusted_proxies_every_header_is_ignored():
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    assert resolve(environ, []) == Client("127.0.0.1")


def test_the_walk_passes_every_trusted_hop_and_stops_at_the_first_that_is_not():
    environ = {"REMOTE_ADDR": "10.0.0.3",
               "HTTP_X_FORWARDED_FOR": "192.0.2.66, 203.0.113.9, 2001:db8:cafe::17, 10.0.0.2"}
    assert resolve(environ, LOOPBACK_AND_LAN).address == "203.0.113.9"


def test_when_every_hop_is_a_trusted_proxy_the_furthest_is_the_client():
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "10.1.2.3, 10.0.0.2"}
    assert resolve(environ, LOOPBACK_AND_LAN).address == "10.1.2.3"


def test_x_forwarded_proto_and_host_are_the_nearest_proxys_and_checked():
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9",
               "HTTP_X_FORWARDED_PROTO": "http, HTTPS", "HTTP_X_FORWARDED_HOST": "News.Example.org:8443"}
    assert resolve(environ, LOOPBACK_AND_LAN) == Client("203.0.113.9", "https", "news.example.org:8443")
    odd = dict(environ, HTTP_X_FORWARDED_PROTO="gopher", HTTP_X_FORWARDED_HOST="evil.example/<script>")
    assert resolve(odd, LOOPBACK_AND_LAN) == Client("203.0.113.9", None, None)


@pytest.mark.parametrize(("node", "name"), [
    ("192.0.2.60", "192.0.2.60"),
    ('"192.0.2.60:4711"', "192.0.2.60"),
    ('"[2001:db8:cafe::17]"', "2001:db8:cafe::17"),
    ('"[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
    ("2001:db8:cafe::17", "2001:db8:cafe::17"),  # X-Forwarded-For as some proxies write it
    ("::ffff:198.51.100.7", "198.51.100.7"),
    ("_hidden", "_hidden"),
    ('"_SEVKISEK:_port"', "_SEVKISEK"),
    ("unknown", "unknown"),
    ("[2001:db8::1", "unknown"),
    ("<script>", "unknown"),
])
def test_rfc_7239_nodes_become_one_client_name(node, name):
    assert node_name(node) == name


def test_the_forwarded_header_is_parsed_as_rfc_7239_writes_it():
    header = ('for="_gazonk", For="[2001:db8:cafe::17]:4711";proto=https;host="news.example.org", '
              'for=192.0.2.60;proto=http;by=203.0.113.43, for="quoted \\"comma, inside\\""')
    assert parse_forwarded(header) == [
        {"for": "_gazonk"},
        {"for": "[2001:db8:cafe::17]:4711", "proto": "https", "host": "news.example.org"},
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"},
        {"for": 'quoted "comma, inside"'},
    ]


def test_a_malformed_forwarded_element_is_an_unknown_client():
    assert parse_forwarded("for=192.0.2.60;proto, for=10.0.0.2") == [{}, {"for": "10.0.0.2"}]
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_FORWARDED": "for=192.0.2.60;proto, for=10.0.0.2"}
    assert resolve(environ, LOOPBACK_AND_LAN, "forwarded").address == "unknown"


def test_forwarded_gives_the_scheme_and_host_of_the_element_the_client_facing_proxy_wrote():
    environ = {"REMOTE_ADDR": "127.0.0.1",
               "HTTP_FORWARDED": 'for=192.0.2.66;proto=http, for="[2001:db8::5]:51000";proto=https;'
                                 'host=news.example.org, for=10.0.0.2;proto=http;host=backend.lan'}
    assert resolve(environ, LOOPBACK_AND_LAN, "forwarded") == Client("2001:db8::5", "https", "news.example.org")


def test_an_obfuscated_client_keeps_its_name_so_its_limits_stay_its_own():
    environ = {"REMOTE_ADDR": "10.0.0.2", "HTTP_FORWARDED": "for=_a1b2c3;proto=https"}
    assert resolve(environ, LOOPBACK_AND_LAN, "forwarded") == Client("_a1b2c3", "https", None)


def test_only_the_configured_kind_of_header_is_read():
    """nginx and Caddy pass a client's own Forwarded header through: with x-forwarded it is never read."""
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9",
               "HTTP_FORWARDED": "for=192.0.2.1"}
    assert resolve(environ, LOOPBACK_AND_LAN).address == "203.0.113.9"
    assert resolve(environ, LOOPBACK_AND_LAN, "forwarded").address == "192.0.2.1"
    assert resolve({"REMOTE_ADDR": "127.0.0.1", "HTTP_FORWARDED": "for=192.0.2.1"}, LOOPBACK_AND_LAN).address \
        == "127.0.0.1"


def _seen_by_app(trusted: list[str], headers: str = "x-forwarded", **environ) -> dict:
    seen: dict = {}

    def app(environ, start_response):
        seen.update(environ)
        seen["url"] = wsgiref.util.request_uri(environ)
        return [b""]

    wsgiref.util.setup_testing_defaults(environ)
    behind_proxies(behind_proxies(app, trusted, headers), trusted, headers)(environ, lambda *args: None)
    return seen


def test_the_app_sees_the_client_the_public_url_and_no_forwarding_header():
    seen = _seen_by_app(["127.0.0.1"], REMOTE_ADDR="127.0.0.1", HTTP_HOST="127.0.0.1:8025", PATH_INFO="/subscribe",
                        HTTP_X_FORWARDED_FOR="198.51.100.7", HTTP_X_FORWARDED_PROTO="https",
                        HTTP_X_FORWARDED_HOST="www.nationalmssociety.org")
    assert seen["REMOTE_ADDR"] == "198.51.100.7" and seen["pipeline.proxy_peer"] == "127.0.0.1"
    assert seen["url"] == "https://www.nationalmssociety.org/subscribe"
    assert not any(name.startswith(("HTTP_X_FORWARDED", "HTTP_FORWARDED")) for name in seen)


def test_an_untrusted_peers_forwarding_headers_are_dropped_unread():
    seen = _seen_by_app(["127.0.0.1"], REMOTE_ADDR="198.51.100.7", HTTP_HOST="news.example.org",
                        PATH_INFO="/subscribe", HTTP_X_FORWARDED_FOR="10.9.9.9", HTTP_X_FORWARDED_PROTO="https",
                        HTTP_X_FORWARDED_HOST="evil.example")
    assert seen["REMOTE_ADDR"] == "198.51.100.7" and seen["url"] == "http://news.example.org/subscribe"
    assert "HTTP_X_FORWARDED_FOR" not in seen


def test_proxy_headers_is_a_choice_of_two(project):
    assert load_config(set_config(project, **{"web.proxy_headers": "forwarded"})).web.proxy_headers == "forwarded"
    with pytest.raises(Exception, match="proxy_headers"):
        load_config(set_config(project, **{"web.proxy_headers": "x-real-ip"}))


PROXIED = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "desk.example.org"}


def _desk_sign_in(project, trusted: list[str]):
    """Sign in to the desk as a browser at https://desk.example.org does, through a proxy on loopback that
    passes the app a plain-HTTP request for 127.0.0.1:8026 with the X-Forwarded-* headers of deploy/nginx.conf."""
    from werkzeug.test import Client as WsgiClient

    from pipeline.desk.accounts import add_user
    from pipeline.desk.web import standalone
    from pipeline.usecases import open_storage

    from .desk_helpers import ADMIN, PASSWORD, csrf_token, desk_config

    config = desk_config(project, **{"web.trusted_proxies": trusted})
    with open_storage(config) as storage:
        add_user(storage, ADMIN, "admin", PASSWORD)
        client = WsgiClient(standalone(config, storage))
        environ = {"REMOTE_ADDR": "127.0.0.1"}
        form = client.get("/desk/login", base_url="http://127.0.0.1:8026", headers=PROXIED, environ_base=environ)
        return client.post("/desk/login", base_url="http://127.0.0.1:8026", environ_base=environ,
                           data={"email": ADMIN, "password": PASSWORD, "csrf_token": csrf_token(form.text)},
                           headers={**PROXIED, "Origin": "https://desk.example.org",
                                    "Referer": "https://desk.example.org/desk/login"})


def test_the_desk_behind_a_trusted_https_proxy_takes_its_public_origin_as_its_own(project, secret):
    response = _desk_sign_in(project, ["127.0.0.1"])
    assert response.status_code == 302, response.text  # signed in: Origin and CSRF referer are the desk's own
    assert "Secure" in response.headers["Set-Cookie"]


def test_the_desk_behind_an_untrusted_peer_sees_the_public_origin_as_another_site(project, secret):
    response = _desk_sign_in(project, [])
    assert response.status_code == 403  # the browser's origin is not the host the app was asked for

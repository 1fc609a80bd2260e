"""The client behind your reverse proxies: its address, and the scheme and host it used, taken from the
forwarding headers only when the request comes from a proxy listed in ``web.trusted_proxies``.

This is the one place the app reads those headers (waitress' own ``trusted_proxy*`` settings stay off, and
its ``clear_untrusted_proxy_headers`` too: the decision is here, so the app behaves the same under any WSGI
server). ``behind_proxies`` wraps a WSGI app: before the app runs, ``REMOTE_ADDR``, ``wsgi.url_scheme`` and
``HTTP_HOST`` become the client's, the original peer is kept in ``environ["pipeline.proxy_peer"]``, and the
forwarding headers are removed, so nothing further in can believe them by mistake.

Which headers a proxy sets is a setting (``web.proxy_headers``), not a guess: nginx and Caddy set
``X-Forwarded-For``/``-Proto``/``-Host`` and pass a client's own ``Forwarded`` header through untouched, so an
app that read both would believe whatever a client wrote in the one its proxy does not set.

The address list is walked from the right (the hop your nearest proxy saw) past every hop that is itself a
trusted proxy; the first one that is not is the client. Whatever a client prepends is left of that and never
read. ``Forwarded`` (RFC 7239) is read with quoted values, IPv6 in brackets, ports and obfuscated identifiers
(``for=_hidden`` is kept as the client's name; ``for=unknown`` or a malformed element gives ``unknown``); its
``proto`` and ``host`` come from the same element as the client's ``for`` (the one the client-facing proxy
wrote). ``X-Forwarded-Proto`` and ``-Host`` are the values your nearest proxy set.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

PEER_KEY = "pipeline.proxy_peer"  # the connection's own address, once the client has been resolved
UNKNOWN = "unknown"
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                      "HTTP_X_FORWARDED_PORT", "HTTP_FORWARDED")

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PAIR = re.compile(rf'\s*({_TOKEN})\s*=\s*({_TOKEN}|"(?:[^"\\]|\\.)*")\s*')
_OBFUSCATED = re.compile(r"^_[A-Za-z0-9._-]+$")
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::[0-9]{1,5})?$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Client:
    """Who sent the request, as far as the trusted proxies tell: an address (or obfuscated name), a scheme, a host
    (``None`` where no trusted proxy said, i.e. the connection's own stands)."""

    address: str
    scheme: str | None = None
    host: str | None = None


def networks(trusted: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(entry, strict=False) for entry in trusted]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # ::ffff:127.0.0.1 on a dual-stack socket
        return ip.ipv4_mapped
    return ip


def node_name(node: str) -> str:
    """An RFC 7239 node (or an X-Forwarded-For hop) as one client name: the address without port or brackets,
    an obfuscated identifier as given, else ``unknown``."""
    node = node.strip()
    if node.startswith('"') and node.endswith('"') and len(node) >= 2:
        node = re.sub(r"\\(.)", r"\1", node[1:-1])
    if node.startswith("["):  # [2001:db8::1] or [2001:db8::1]:4711
        inside, bracket, rest = node[1:].partition("]")
        if bracket and (not rest or re.fullmatch(r":(?:[0-9]{1,5}|_[A-Za-z0-9._-]+)", rest)):
            ip = _ip(inside)
            return str(ip) if isinstance(ip, ipaddress.IPv6Address) else UNKNOWN
        return UNKNOWN
    ip = _ip(node)  # 192.0.2.60, or a bare IPv6 address as some proxies write X-Forwarded-For
    if ip is not None:
        return str(ip)
    name, colon, port = node.rpartition(":")
    if colon and re.fullmatch(r"[0-9]{1,5}|_[A-Za-z0-9._-]+", port):
        node = name
        ip = _ip(node)
        if isinstance(ip, ipaddress.IPv4Address):
            return str(ip)
    if _OBFUSCATED.match(node):
        return node
    return UNKNOWN


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """The elements of a ``Forwarded`` header (RFC 7239 section 4), left to right, each a dict of lower-case
    parameter names to unquoted values; an element that does not parse is an empty dict (its ``for`` unknown)."""
    elements: list[dict[str, str]] = []
    for raw in _split_outside_quotes(value, ","):
        element: dict[str, str] = {}
        for pair in _split_outside_quotes(raw, ";"):
            if not pair.strip():
                continue
            match = _PAIR.fullmatch(pair)
            if match is None or match[1].lower() in element:
                element = {}
                break
            text = match[2]
            if text.startswith('"'):
                text = re.sub(r"\\(.)", r"\1", text[1:-1])
            element[match[1].lower()] = text
        if raw.strip() or element:
            elements.append(element)
    return elements


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _scheme(value: str | None) -> str | None:
    value = (value or "").strip().lower()
    return value if value in ("http", "https") else None


def _host(value: str | None) -> str | None:
    value = (value or "").strip()
    return value.lower() if _HOST.match(value) else None


def _last(header: str | None) -> str | None:
    values = [part for part in (header or "").split(",") if part.strip()]
    return values[-1] if values else None


def resolve(environ: dict, trusted: Sequence[Network], headers: str = "x-forwarded") -> Client:
    """The client of this request (see the module's docstring); the connection's own peer when that is not a
    trusted proxy, or when the proxy's header names no hop."""
    peer = environ.get("REMOTE_ADDR", "")

    def is_proxy(name: str) -> bool:
        ip = _ip(name)
        return ip is not None and any(ip in network for network in trusted)

    if not trusted or not is_proxy(peer):
        return Client(peer)
    if headers == "forwarded":
        elements = parse_forwarded(environ.get("HTTP_FORWARDED", ""))
        if not elements:
            return Client(peer)
        chosen = elements[0]  # every hop a trusted proxy: the furthest one named
        for element in reversed(elements):
            if not is_proxy(node_name(element.get("for", UNKNOWN))):
                chosen = element
                break
        return Client(node_name(chosen.get("for", UNKNOWN)), _scheme(chosen.get("proto")), _host(chosen.get("host")))
    hops = [hop for hop in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if not hops:
        return Client(peer)
    address = node_name(hops[0])
    for hop in reversed(hops):
        if not is_proxy(node_name(hop)):
            address = node_name(hop)
            break
    return Client(address, _scheme(_last(environ.get("HTTP_X_FORWARDED_PROTO"))),
                  _host(_last(environ.get("HTTP_X_FORWARDED_HOST"))))


def apply(environ: dict, trusted: Sequence[Network], headers: str = "x-forwarded") -> None:
    """Make ``environ`` the client's (address, scheme, host), once; remove the forwarding headers."""
    if PEER_KEY in environ:
        return
    client = resolve(environ, trusted, headers)
    environ[PEER_KEY] = environ.get("REMOTE_ADDR", "")
    environ["REMOTE_ADDR"] = client.address
    if client.scheme:
        environ["wsgi.url_scheme"] = client.scheme
        if client.scheme == "https":
            environ["HTTPS"] = "on"
    if client.host:
        environ["HTTP_HOST"] = client.host
        name, _, port = client.host.rpartition(":") if not client.host.endswith("]") else (client.host, "", "")
        environ["SERVER_NAME"] = name if port.isdigit() else client.host
        environ["SERVER_PORT"] = port if port.isdigit() else ("443" if environ.get("wsgi.url_scheme") == "https"
                                                              else "80")
    elif client.scheme:
        environ["SERVER_PORT"] = "443" if client.scheme == "https" else "80"
    for name in FORWARDING_HEADERS:
        environ.pop(name, None)


def behind_proxies(app: Callable, trusted_proxies: Iterable[str], headers: str = "x-forwarded") -> Callable:
    """``app`` seeing the client instead of the proxy (``apply``); idempotent, so nested apps may each wrap."""
    trusted = networks(trusted_proxies)

    def proxied(environ, start_response):
        apply(environ, trusted, headers)
        return app(environ, start_response)

    return proxied


def client_address(environ: dict, trusted_proxies: Iterable[str], headers: str = "x-forwarded") -> str:
    """The client's address: the one ``behind_proxies`` resolved, or resolved now for an environ it did not see."""
    if PEER_KEY in environ:
        return environ.get("REMOTE_ADDR", "")
    return resolve(environ, networks(trusted_proxies), headers).address

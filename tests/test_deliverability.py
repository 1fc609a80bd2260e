"""The sign-up's DNS check refuses a domain only when DNS says for certain it takes no mail; a resolver
that cannot answer lets the reader through.  A real DNS server (dnspython's wire format, UDP on
loopback) answers for a small zone."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest

from pipeline.config import load_config
from pipeline.mail.deliverability import check_domain
from pipeline.state.storage import Storage
from pipeline.usecases.signup import Signups

# name -> {type: records}; a name missing from the zone is NXDOMAIN
ZONE = {
    "reads.example.": {"MX": ["10 mx.reads.example."]},
    "address-only.example.": {"A": ["192.0.2.10"]},
    "nullmx.example.": {"MX": ["0 ."]},
    "bare.example.": {"TXT": ['"v=spf1 -all"']},
    "xn--bcher-kva.example.": {"MX": ["10 mx.xn--bcher-kva.example."]},  # bücher.example
}
BROKEN = {"servfail.example.": dns.rcode.SERVFAIL, "refused.example.": dns.rcode.REFUSED}
SILENT = {"silent.example."}  # the server never answers: a timeout


@pytest.fixture(scope="module")
def nameserver() -> Iterator[int]:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                wire, client = server.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            question = query.question[0]
            name, kind = question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)
            if name in SILENT:
                continue
            response = dns.message.make_response(query)
            response.flags |= dns.flags.RA
            if name in BROKEN:
                response.set_rcode(BROKEN[name])
            elif name not in ZONE:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif kind in ZONE[name]:
                response.answer.append(dns.rrset.from_text_list(name, 300, "IN", kind, ZONE[name][kind]))
            server.sendto(response.to_wire(), client)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def loopback(port: int):
    def make() -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = ["127.0.0.1"], port
        return resolver
    return make


@pytest.mark.parametrize(("domain", "receives", "reason"), [
    ("reads.example", True, "mx"),
    ("address-only.example", True, "a record"),
    ("xn--bcher-kva.example", True, "mx"),
    ("gone.example", False, "nxdomain"),
    ("nullmx.example", False, "null mx"),
    ("bare.example", False, "no mx or a"),
])
def test_a_domain_is_refused_only_on_a_definite_answer(nameserver, domain, receives, reason):
    verdict = check_domain(domain, 2.0, loopback(nameserver))
    assert (verdict.receives_mail, verdict.reason) == (receives, reason)


@pytest.mark.parametrize("domain", ["servfail.example", "refused.example", "silent.example"])
def test_a_resolver_that_cannot_answer_lets_the_address_through(nameserver, domain):
    verdict = check_domain(domain, 0.3, loopback(nameserver))
    assert verdict.receives_mail and verdict.reason.startswith("dns unanswered")


def test_a_machine_without_any_resolver_configuration_lets_the_address_through():
    def no_configuration() -> dns.resolver.Resolver:
        raise dns.resolver.NoResolverConfiguration("no nameservers")

    verdict = check_domain("reads.example", 2.0, no_configuration)
    assert verdict == type(verdict)(True, "dns unanswered: no resolver configuration")


def test_sign_up_looks_up_an_internationalised_domain_by_its_punycode(project, secret, nameserver):
    config = load_config(project / "config.yaml")
    storage = Storage.for_state(config.path("state"))
    try:
        signups = Signups(config, storage, resolver=loopback(nameserver))
        assert signups._deliverable("leser@bücher.example")
        assert not signups._deliverable("reader@gone.example")
    finally:
        storage.close()

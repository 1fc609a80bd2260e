"""Does an address's domain receive mail?  Only a definite "no" from DNS refuses a sign-up.

email-validator's own check turns every resolver error it does not know (no resolver
configuration, SERVFAIL, a refused query) into "undeliverable", so a machine whose DNS is
down would refuse every reader.  Here the domain is refused only when DNS answers that it
does not exist (NXDOMAIN), that it takes no mail (a null MX, RFC 7505), or that it has
neither MX nor A/AAAA records; anything else (timeouts, no nameserver, no resolver at
all) lets the address through: the confirmation mail will tell.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.resolver

log = logging.getLogger(__name__)

ResolverFactory = Callable[[], dns.resolver.Resolver]


@dataclass(frozen=True)
class Verdict:
    receives_mail: bool
    reason: str  # why, for the log: "mx", "a record", "nxdomain", "null mx", "no mx or a", "dns unanswered: ..."


def check_domain(domain: str, timeout: float, resolver: ResolverFactory = dns.resolver.Resolver) -> Verdict:
    """The verdict for ``domain`` (already in its ASCII, punycode form)."""
    try:
        lookup = resolver()
    except dns.resolver.NoResolverConfiguration:
        return Verdict(True, "dns unanswered: no resolver configuration")
    lookup.lifetime = timeout
    try:
        answer = lookup.resolve(domain, "MX")
        exchanges = [record.exchange.to_text() for record in answer]
        if exchanges == ["."]:
            return Verdict(False, "null mx")
        return Verdict(True, "mx")
    except dns.resolver.NXDOMAIN:
        return Verdict(False, "nxdomain")
    except dns.resolver.NoAnswer:
        pass
    except dns.exception.DNSException as exc:
        return Verdict(True, f"dns unanswered: {type(exc).__name__}")
    for kind in ("A", "AAAA"):  # no MX: mail goes to the address records (RFC 5321 5.1)
        try:
            lookup.resolve(domain, kind)
            return Verdict(True, "a record")
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            continue
        except dns.exception.DNSException as exc:
            return Verdict(True, f"dns unanswered: {type(exc).__name__}")
    return Verdict(False, "no mx or a")

"""Reading bounces, complaints and mailto unsubscribes: real samples through flufl.bounce and the ARF reader."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.bounces.parse import UNVERIFIED_UNSUBSCRIBE, Addresses, read_message
from pipeline.mail.verp import BounceTarget, make_return_path, read_return_path

from .bounce_helpers import BOUNCE_DOMAIN, HARD_SAMPLES, return_path, sample
from .conftest import SECRET

EDITION = "0123456789abcdef"
ADDRESSES = Addresses(SECRET.encode(), "bounces", BOUNCE_DOMAIN, "unsubscribe@nationalmssociety.org")


def test_a_return_path_names_edition_and_subscriber_and_cannot_be_forged():
    address = make_return_path(b"k" * 20, EDITION, 123456, "bounces", BOUNCE_DOMAIN)
    local = address.split("@")[0]
    assert local.startswith("bounces+") and local == local.lower() and len(address) < 64 + len(BOUNCE_DOMAIN)
    assert read_return_path(b"k" * 20, address, "bounces", BOUNCE_DOMAIN) == BounceTarget(EDITION, 123456)
    assert read_return_path(b"k" * 20, address.upper(), "bounces", BOUNCE_DOMAIN) == BounceTarget(EDITION, 123456)
    assert read_return_path(b"other-secret-123", address, "bounces", BOUNCE_DOMAIN) is None
    forged = address.replace("-2n9c-", "-2n9d-")  # another subscriber id, same signature
    assert forged != address and read_return_path(b"k" * 20, forged, "bounces", BOUNCE_DOMAIN) is None
    assert read_return_path(b"k" * 20, address.replace(BOUNCE_DOMAIN, "example.org"), "bounces", BOUNCE_DOMAIN) is None


@pytest.mark.parametrize("name", HARD_SAMPLES)
def test_each_style_of_hard_bounce_names_the_subscriber_of_its_return_path(name):
    reports = read_message(sample(name, SECRET, EDITION, 7, "gone@example.org"), ADDRESSES)
    assert [(r.kind, r.target) for r in reports] == [("hard", BounceTarget(EDITION, 7))]
    # Every style that gives a status says 5.1.1; old Exchange gives only prose, so the subject is the reason.
    assert "5.1.1" in reports[0].reason if name != "exchange_hard" else "Undeliverable" in reports[0].reason


def test_a_delay_notice_is_a_soft_bounce_with_its_reason():
    (report,) = read_message(sample("gmail_delay_soft", SECRET, EDITION, 8, "full@example.org"), ADDRESSES)
    assert report.kind == "soft" and report.target == BounceTarget(EDITION, 8)
    assert "4.2.2" in report.reason and "out of storage" in report.reason


def test_an_arf_report_is_a_complaint_naming_the_recipient_by_its_signed_token():
    (report,) = read_message(sample("arf_complaint", SECRET, EDITION, 9, "angry@example.org"), ADDRESSES)
    assert report.kind == "complaint" and report.email == "angry@example.org"
    assert "abuse" in report.reason and "ExampleFBL" in report.reason


def test_a_bounce_to_a_forged_return_path_or_to_no_return_path_names_nobody():
    raw = sample("rfc3464_hard", SECRET, EDITION, 7, "gone@example.org")
    forged = raw.replace(return_path(SECRET, EDITION, 7).encode(),
                         return_path("another-secret-0123456", EDITION, 8).encode())
    assert read_message(forged, ADDRESSES) == []
    plain = raw.replace(return_path(SECRET, EDITION, 7).encode(), b"news@nationalmssociety.org")
    assert read_message(plain, ADDRESSES) == []


def test_an_auto_reply_is_not_a_bounce_and_a_mail_to_the_unsubscribe_address_is_a_request():
    assert read_message(sample("out_of_office", SECRET, EDITION, 7, "x@example.org"), ADDRESSES) == []
    (request,) = read_message(sample("mailto_unsubscribe", SECRET, EDITION, 7, "leaver@example.org"), ADDRESSES)
    assert (request.kind, request.email) == ("unsubscribe", "leaver@example.org")


def test_a_mail_to_the_unsubscribe_address_names_whom_its_token_names_not_its_from():
    raw = sample("mailto_unsubscribe", SECRET, EDITION, 7, "leaver@example.org").replace(
        b"From: leaver@example.org", b"From: someone.else@example.org")
    (request,) = read_message(raw, ADDRESSES)
    assert request.email == "leaver@example.org"


def test_a_forged_from_without_a_token_unsubscribes_nobody_and_its_sender_is_only_asked():
    (request,) = read_message(sample("mailto_unsubscribe_forged", SECRET, EDITION, 7, "victim@example.org"), ADDRESSES)
    assert (request.kind, request.email) == (UNVERIFIED_UNSUBSCRIBE, "victim@example.org")


TRUSTING = dataclasses.replace(ADDRESSES, trusted_authserv_ids=("mx.nationalmssociety.org",))


def test_without_a_token_a_dmarc_pass_from_our_own_receiving_server_is_honoured():
    passed = "mx.nationalmssociety.org; spf=pass smtp.mailfrom=example.org; dmarc=pass header.from=example.org"
    (request,) = read_message(sample("mailto_unsubscribe_forged", SECRET, EDITION, 7, "ann@example.org",
                                     authentication_results=passed), TRUSTING)
    assert (request.kind, request.email) == ("unsubscribe", "ann@example.org")


@pytest.mark.parametrize("results", [
    "mx.attacker.example; dmarc=pass header.from=example.org",  # written by the sender, not by our server
    "mx.nationalmssociety.org; dmarc=fail header.from=example.org",
    "mx.nationalmssociety.org; dmarc=pass header.from=other.example",  # not the From domain
])
def test_without_a_token_anything_but_our_servers_dmarc_pass_for_the_from_domain_is_not_believed(results):
    raw = sample("mailto_unsubscribe_forged", SECRET, EDITION, 7, "ann@example.org", authentication_results=results)
    assert [report.kind for report in read_message(raw, TRUSTING)] == [UNVERIFIED_UNSUBSCRIBE]

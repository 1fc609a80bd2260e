"""DKIM: every message is signed after personalisation, and dkimpy (an independent implementation)
verifies each one against the test's public key; a change to a signed header breaks it."""

from __future__ import annotations

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from pipeline import usecases
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.mail.dkim import DkimSigner

from .conftest import add_subscribers, set_config, use_smtp
from .smtp_sink import RecordingHandler, SmtpSink


def _key_file(folder, algorithm: str):
    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if algorithm == "rsa-sha256"
           else ed25519.Ed25519PrivateKey.generate())
    path = folder / f"dkim-{algorithm}.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_each_personalised_message_verifies_with_dkimpy(project, secret, tmp_path, algorithm):
    key_file = _key_file(tmp_path, algorithm)
    set_config(project, **{"delivery.dkim": {"selector": "news2026", "domain": "nationalmssociety.org",
                                             "key_file": str(key_file), "algorithm": algorithm}})
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port)
        add_subscribers(config, 3)
        usecases.run(config, progress=False)
    record = DkimSigner.from_file("nationalmssociety.org", "news2026", algorithm, key_file).dns_record().encode()
    asked: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return record

    assert len(handler.received) == 3
    for message in handler.received:
        assert message.raw.startswith(b"DKIM-Signature: v=1; a=" + algorithm.encode())
        assert dkim.verify(message.raw, dnsfunc=dns), message.recipient
        signature = dkim.DKIM(message.raw)
        signature.verify(dnsfunc=dns)
        signed = set(signature.include_headers)
        assert {b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe",
                b"list-unsubscribe-post"} <= signed
        changed = message.raw.replace(b"To: " + message.recipient.encode(), b"To: someone.else@example.org")
        assert changed != message.raw and not dkim.verify(changed, dnsfunc=dns)
    assert set(asked) == {b"news2026._domainkey.nationalmssociety.org."}


def test_a_key_that_does_not_fit_the_algorithm_is_a_config_error(project, tmp_path):
    key_file = _key_file(tmp_path, "ed25519-sha256")
    set_config(project, **{"delivery.dkim": {"selector": "s", "domain": "nationalmssociety.org",
                                             "key_file": str(key_file), "algorithm": "rsa-sha256"}})
    with pytest.raises(ConfigError, match="not a key for rsa-sha256"):
        usecases.dkim_signer(load_config(project / "config.yaml"))
    (tmp_path / "broken.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="cannot read a private key"):
        DkimSigner.from_file("d", "s", "rsa-sha256", tmp_path / "broken.pem")


def test_the_body_canonicalisation_matches_dkimpys_on_any_body():
    from dkim.canonicalization import Relaxed
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from pipeline.mail.dkim import relaxed_body

    pieces = st.lists(st.sampled_from([b"a", b"Zz", b" ", b"  ", b"\t", b"\r\n", b"=", b"QUJD"]), max_size=40)

    @settings(max_examples=300, deadline=None)
    @given(pieces)
    def check(parts):
        body = b"".join(parts) + b"\r\n"  # SMTP bodies end with CRLF (dkimpy differs on an unended last line)
        assert relaxed_body(body) == Relaxed.canonicalize_body(body)

    check()

"""Relay webhooks over real HTTP on loopback: SES through SNS (signed with a certificate from a CA the
test makes, fetched over HTTPS from a local server), Postmark, SendGrid and Mailgun; each accepted when
genuine, refused when tampered with, and counted once when delivered twice."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.service.web import make_web_server
from pipeline.service.webhooks import sns_string_to_sign
from pipeline.usecases import open_storage

from .conftest import add_subscribers, set_config

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-bounces"


# -- a test CA, a signing certificate, and an HTTPS server that serves it -------------------------

def _certificate(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool, ip: str | None = None):
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class SnsCA:
    def __init__(self, folder: Path):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test SNS CA")])
        self.cert = _certificate("Test SNS CA", self.key, name, self.key, ca=True)
        self.path = folder / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.server_key = ec.generate_private_key(ec.SECP256R1())
        server_cert = _certificate("127.0.0.1", self.server_key, name, self.key, ca=False, ip="127.0.0.1")
        self.server_files = (folder / "server.pem", folder / "server-key.pem")
        self.server_files[0].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
        self.server_files[1].write_bytes(self.server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.signing_pem = _certificate("sns.amazonaws.com", self.signing_key, name, self.key,
                                        ca=False).public_bytes(serialization.Encoding.PEM)


class CertServer:
    """HTTPS on 127.0.0.1 with the test CA's certificate: serves the signing certificate, records confirmations."""

    def __init__(self, ca: SnsCA):
        self.confirmations: list[str] = []
        self.fetches: list[str] = []  # certificate paths fetched
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.startswith("/SimpleNotificationService-") and self.path.endswith(".pem"):
                    server.fetches.append(self.path)
                    body = ca.signing_pem
                elif self.path.startswith("/confirm?"):
                    server.confirmations.append(self.path)
                    body = b"<ConfirmSubscriptionResponse/>"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*ca.server_files)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.base = f"https://127.0.0.1:{self.httpd.server_port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> CertServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- the pipeline's web app with every relay configured ------------------------------------------

SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
MAILGUN_KEY = "key-mailgun-signing-0123456789"
POSTMARK_PASSWORD = "postmark-hook-password-123"


@pytest.fixture
def ca(tmp_path) -> SnsCA:
    return SnsCA(tmp_path)


@pytest.fixture
def certs(ca):
    with CertServer(ca) as server:
        yield server


@pytest.fixture
def web(project, secret, ca, certs, monkeypatch):
    public = SENDGRID_KEY.public_key().public_bytes(serialization.Encoding.DER,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    monkeypatch.setenv("PIPELINE_SENDGRID_WEBHOOK_KEY", base64.b64encode(public).decode())
    monkeypatch.setenv("PIPELINE_MAILGUN_SIGNING_KEY", MAILGUN_KEY)
    monkeypatch.setenv("PIPELINE_POSTMARK_WEBHOOK_PASSWORD", POSTMARK_PASSWORD)
    pattern = "^https://127\\.0\\.0\\.1:" + str(certs.httpd.server_port) + "/"
    set_config(project, **{"bounces.webhooks": {
        "ses": {"enabled": True, "cert_url_pattern": pattern, "ca_file": str(ca.path), "topic_arns": [TOPIC]},
        "postmark": {"username": "postmark"}, "sendgrid": {}, "mailgun": {}}})
    config = load_config(project / "config.yaml")
    add_subscribers(config, 6)
    storage = open_storage(config)
    server = make_web_server(config, storage, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/webhooks/", storage
    server.shutdown()
    server.server_close()
    storage.close()


def _post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _suppressed(storage, email: str) -> str | None:
    held = storage.active_suppression(storage.get_subscriber(email).id)
    return held.reason if held else None


# -- SES through SNS ------------------------------------------------------------------------------

def _sns(ca: SnsCA, certs: CertServer, kind: str, version: str = "1", **fields) -> dict:
    sent = fields.pop("sent", datetime.datetime.now(datetime.UTC))
    message = {"Type": kind, "MessageId": fields.pop("MessageId", "msg-1"), "TopicArn": TOPIC,
               "Timestamp": sent.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "SignatureVersion": version,
               "SigningCertURL": certs.base + "SimpleNotificationService-test.pem", **fields}
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = ca.signing_key.sign(sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
    message["Signature"] = base64.b64encode(signature).decode()
    return message


def _iso(at: datetime.datetime | None = None) -> str:
    """A relay's event date: ISO 8601 in UTC with milliseconds and a Z, as SES and Postmark write it."""
    return (at or datetime.datetime.now(datetime.UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ses_bounce(email: str, bounce_type: str = "Permanent", at: datetime.datetime | None = None) -> str:
    return json.dumps({"notificationType": "Bounce", "bounce": {
        "bounceType": bounce_type, "bounceSubType": "General", "timestamp": _iso(at),
        "bouncedRecipients": [{"emailAddress": email, "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 unknown"}]},
        "mail": {"source": "news@nationalmssociety.org"}})


def test_a_signed_ses_bounce_suppresses_and_a_tampered_one_is_refused(web, ca, certs):
    base, storage = web
    genuine = _sns(ca, certs, "Notification", Message=_ses_bounce("reader00000@example.org"))
    tampered = dict(genuine, Message=_ses_bounce("reader00001@example.org"))
    assert _post(base + "ses", json.dumps(tampered).encode()) == (403, {"ok": False,
                                                                        "error": "SNS signature does not verify"})
    assert _suppressed(storage, "reader00001@example.org") is None
    assert _post(base + "ses", json.dumps(genuine).encode()) == (200, {"ok": True, "recorded": 1})
    assert _suppressed(storage, "reader00000@example.org") == "hard-bounce"
    assert _post(base + "ses", json.dumps(genuine).encode()) == (200, {"ok": True, "recorded": 0})  # redelivery
    events, _ = storage.bounce_history(storage.get_subscriber("reader00000@example.org").id)
    assert [(e.kind, e.source) for e in events] == [("hard", "webhook:ses")] and "5.1.1" in events[0].reason


def test_ses_complaints_signature_version_2_and_untrusted_certificate_urls(web, ca, certs):
    base, storage = web
    complaint = json.dumps({"notificationType": "Complaint", "complaint": {
        "complaintFeedbackType": "abuse", "timestamp": _iso(), "complainedRecipients": [{"emailAddress": "reader00002@example.org"}]}})
    message = _sns(ca, certs, "Notification", version="2", MessageId="msg-2", Message=complaint)
    assert _post(base + "ses", json.dumps(message).encode())[0] == 200
    assert storage.get_subscriber("reader00002@example.org").status == "unsubscribed"
    assert _suppressed(storage, "reader00002@example.org") == "complaint"
    elsewhere = _sns(ca, certs, "Notification", MessageId="msg-3", Message=_ses_bounce("reader00003@example.org"))
    elsewhere["SigningCertURL"] = "https://evil.example/cert.pem"
    assert _post(base + "ses", json.dumps(elsewhere).encode())[0] == 403
    other_topic = _sns(ca, certs, "Notification", MessageId="msg-4", Message=_ses_bounce("reader00003@example.org"),
                       TopicArn="arn:aws:sns:us-east-1:999:other")
    assert _post(base + "ses", json.dumps(other_topic).encode())[0] == 403
    assert _suppressed(storage, "reader00003@example.org") is None


def test_a_signed_subscription_confirmation_is_confirmed_and_a_forged_one_is_not(web, ca, certs):
    base, _ = web
    confirm = _sns(ca, certs, "SubscriptionConfirmation", Message="You have chosen to subscribe", Token="tok",
                   SubscribeURL=certs.base + "confirm?Action=ConfirmSubscription&Token=tok")
    forged = dict(confirm, SubscribeURL=certs.base + "confirm?Action=ConfirmSubscription&Token=forged")
    assert _post(base + "ses", json.dumps(forged).encode())[0] == 403
    assert _post(base + "ses", json.dumps(confirm).encode()) == (200, {"ok": True, "recorded": 0})
    assert certs.confirmations == ["/confirm?Action=ConfirmSubscription&Token=tok"]


def test_a_signed_sns_message_dated_outside_the_window_is_refused(web, ca, certs):
    base, storage = web
    for sent in (datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2), datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2)):
        message = _sns(ca, certs, "Notification", MessageId=f"msg-{sent:%H}", sent=sent,
                       Message=_ses_bounce("reader00004@example.org"))
        status, answer = _post(base + "ses", json.dumps(message).encode())
        assert (status, answer["error"]) == (403, "SNS message Timestamp outside the accepted window "
                                                  "(bounces.webhooks.max_age)")
    assert _suppressed(storage, "reader00004@example.org") is None


def test_the_signing_certificate_is_fetched_once_and_new_urls_only_a_few_times_a_minute(web, ca, certs):
    """Anyone may post a message naming a fresh certificate URL on an SNS host: the server fetches new
    URLs at most six times a minute, answering 503 (SNS retries) beyond, and never fetches one twice."""
    from pipeline.service.webhooks import CERTIFICATE_FETCHES_PER_MINUTE

    base, _ = web
    answers = []
    for n in range(CERTIFICATE_FETCHES_PER_MINUTE + 4):
        message = _sns(ca, certs, "Notification", MessageId=f"msg-url-{n}", Message=_ses_bounce("nobody@example.org"))
        message["SigningCertURL"] = certs.base + f"SimpleNotificationService-{n}.pem"
        answers.append(_post(base + "ses", json.dumps(message).encode())[0])
    again = _sns(ca, certs, "Notification", MessageId="msg-url-again", Message=_ses_bounce("nobody@example.org"))
    again["SigningCertURL"] = certs.base + "SimpleNotificationService-0.pem"
    assert _post(base + "ses", json.dumps(again).encode())[0] == 200  # kept: no fetch, no limit
    assert answers == [200] * CERTIFICATE_FETCHES_PER_MINUTE + [503] * 4
    assert len(certs.fetches) == CERTIFICATE_FETCHES_PER_MINUTE == len(set(certs.fetches))


def test_the_ses_webhook_is_refused_at_config_time_without_topic_arns(project):
    set_config(project, **{"bounces.webhooks": {"ses": {"enabled": True}}})
    with pytest.raises(ConfigError, match=r"bounces.webhooks.ses: topic_arns: required when the SES webhook is "
                                          r"enabled"):
        load_config(project / "config.yaml")


def test_the_default_certificate_host_is_an_sns_region_endpoint_and_nothing_else():
    import re

    from pipeline.config import SesWebhook

    pattern = re.compile(SesWebhook(topic_arns=[TOPIC]).cert_url_pattern)
    assert pattern.match("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem")
    assert pattern.match("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem")
    assert pattern.match("https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem")
    for forged in ("https://sns.s3.amazonaws.com/cert.pem", "http://sns.us-east-1.amazonaws.com/cert.pem",
                   "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
                   "https://sns.us-east-1.amazonaws.com@evil.example/cert.pem"):
        assert not pattern.match(forged), forged


# -- Postmark, SendGrid, Mailgun ------------------------------------------------------------------

def test_postmark_needs_its_credentials(web):
    base, storage = web
    body = json.dumps({"RecordType": "Bounce", "Type": "HardBounce", "ID": 42, "Email": "reader00004@example.org",
                       "Description": "The server was unable to deliver your message", "Details": "550 5.1.1",
                       "BouncedAt": _iso()}).encode()
    good = "Basic " + base64.b64encode(f"postmark:{POSTMARK_PASSWORD}".encode()).decode()
    bad = "Basic " + base64.b64encode(b"postmark:guess").decode()
    assert _post(base + "postmark", body, {"Authorization": bad})[0] == 401
    assert _post(base + "postmark", body)[0] == 401
    assert _suppressed(storage, "reader00004@example.org") is None
    assert _post(base + "postmark", body, {"Authorization": good}) == (200, {"ok": True, "recorded": 1})
    assert _suppressed(storage, "reader00004@example.org") == "hard-bounce"
    complaint = json.dumps({"RecordType": "SpamComplaint", "Type": "SpamComplaint", "ID": 43,
                            "Email": "reader00005@example.org", "BouncedAt": _iso()}).encode()
    assert _post(base + "postmark", complaint, {"Authorization": good})[0] == 200
    assert storage.get_subscriber("reader00005@example.org").status == "unsubscribed"


def _sendgrid_headers(body: bytes, timestamp: str | None = None) -> dict:
    timestamp = timestamp or str(int(time.time()))
    signature = SENDGRID_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


def test_sendgrid_events_need_a_valid_ecdsa_signature(web):
    base, storage = web
    body = json.dumps([
        {"email": "reader00000@example.org", "event": "bounce", "type": "bounce", "status": "5.1.1",
         "reason": "550 5.1.1 unknown user", "sg_event_id": "ev-1", "timestamp": int(time.time())},
        {"email": "reader00001@example.org", "event": "spamreport", "sg_event_id": "ev-2", "timestamp": int(time.time())},
        {"email": "reader00002@example.org", "event": "delivered", "sg_event_id": "ev-3", "timestamp": int(time.time())},
    ]).encode()
    headers = _sendgrid_headers(body)
    tampered = body.replace(b"reader00000", b"reader00003")
    assert _post(base + "sendgrid", tampered, headers)[0] == 403
    stale = _sendgrid_headers(body, str(int(time.time()) - 3600))
    assert _post(base + "sendgrid", body, stale)[0] == 403
    assert _suppressed(storage, "reader00003@example.org") is None
    assert _post(base + "sendgrid", body, headers) == (200, {"ok": True, "recorded": 2})
    assert _suppressed(storage, "reader00000@example.org") == "hard-bounce"
    assert _suppressed(storage, "reader00001@example.org") == "complaint"
    assert _suppressed(storage, "reader00002@example.org") is None


def _mailgun(event: dict, key: str = MAILGUN_KEY, token: str = "tok-1", timestamp: str | None = None) -> bytes:
    timestamp = timestamp or str(int(time.time()))
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": timestamp, "token": token, "signature": signature},
                       "event-data": event}).encode()


def test_mailgun_events_need_a_valid_hmac(web):
    base, storage = web
    failed = {"event": "failed", "severity": "permanent", "recipient": "reader00005@example.org", "id": "mg-1",
              "timestamp": time.time(), "delivery-status": {"code": 550, "description": "No such mailbox"}}
    assert _post(base + "mailgun", _mailgun(failed, key="not-the-key"))[0] == 403
    genuine = _mailgun(failed)
    signed = json.loads(genuine)["signature"]
    assert _post(base + "mailgun", genuine.replace(signed["timestamp"].encode(),
                                                   str(int(signed["timestamp"]) + 1).encode()))[0] == 403
    assert _post(base + "mailgun", _mailgun(failed, timestamp=str(int(time.time()) - 3600)))[0] == 403
    assert _suppressed(storage, "reader00005@example.org") is None
    assert _post(base + "mailgun", genuine) == (200, {"ok": True, "recorded": 1})
    # Mailgun signs timestamp + token only, not the event: a captured request replayed, even with another
    # event in it, is refused by its used token.
    assert _post(base + "mailgun", genuine) == (200, {"ok": True, "recorded": 0})
    other = genuine.replace(b"reader00005", b"reader00003")
    assert _post(base + "mailgun", other) == (200, {"ok": True, "recorded": 0})
    assert _suppressed(storage, "reader00003@example.org") is None
    assert _suppressed(storage, "reader00005@example.org") == "hard-bounce"
    soft = {"event": "failed", "severity": "temporary", "recipient": "reader00004@example.org", "id": "mg-2",
            "timestamp": time.time(), "delivery-status": {"code": 452, "description": "Mailbox full"}}
    assert _post(base + "mailgun", _mailgun(soft, token="tok-2")) == (200, {"ok": True, "recorded": 1})
    assert _suppressed(storage, "reader00004@example.org") is None


def test_events_dated_long_ago_in_the_future_or_not_at_all_are_not_counted_by_any_relay(web, ca, certs):
    """A signed request is fresh, but the events in it carry their own dates: a captured event sent again
    days later, one dated ahead of the clock, or one with no date is logged and not counted."""
    base, storage = web
    now = datetime.datetime.now(datetime.UTC)
    old, ahead = now - datetime.timedelta(hours=73), now + datetime.timedelta(hours=1)
    auth = {"Authorization": "Basic " + base64.b64encode(f"postmark:{POSTMARK_PASSWORD}".encode()).decode()}
    for n, at in enumerate((old, ahead, None)):
        email = f"reader0000{n}@example.org"
        ses = json.loads(_ses_bounce(email, at=at or now))
        if at is None:
            del ses["bounce"]["timestamp"]
        message = _sns(ca, certs, "Notification", MessageId=f"msg-dated-{n}", Message=json.dumps(ses))
        assert _post(base + "ses", json.dumps(message).encode()) == (200, {"ok": True, "recorded": 0, "ignored": 1})
        postmark = {"RecordType": "Bounce", "Type": "HardBounce", "ID": 900 + n, "Email": email}
        if at:
            postmark["BouncedAt"] = _iso(at)
        assert _post(base + "postmark", json.dumps(postmark).encode(), auth)[1]["ignored"] == 1
        sendgrid = [{"email": email, "event": "bounce", "type": "bounce", "sg_event_id": f"ev-dated-{n}"}]
        if at:
            sendgrid[0]["timestamp"] = int(at.timestamp())
        body = json.dumps(sendgrid).encode()
        assert _post(base + "sendgrid", body, _sendgrid_headers(body))[1]["ignored"] == 1
        mailgun = {"event": "failed", "severity": "permanent", "recipient": email, "id": f"mg-dated-{n}"}
        if at:
            mailgun["timestamp"] = at.timestamp()
        assert _post(base + "mailgun", _mailgun(mailgun, token=f"tok-dated-{n}"))[1]["ignored"] == 1
        assert _suppressed(storage, email) is None
    within = now - datetime.timedelta(hours=71)  # a relay's retry of a bounce from three days ago, just inside
    message = _sns(ca, certs, "Notification", MessageId="msg-dated-ok",
                   Message=_ses_bounce("reader00003@example.org", at=within))
    assert _post(base + "ses", json.dumps(message).encode()) == (200, {"ok": True, "recorded": 1})


def test_unconfigured_relays_and_other_methods_are_refused(project, secret):
    config = load_config(project / "config.yaml")
    storage = open_storage(config)
    server = make_web_server(config, storage, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/webhooks/"
        for relay in ("ses", "postmark", "sendgrid", "mailgun", "unknown"):
            assert _post(base + relay, b"{}")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
        storage.close()


def test_two_copies_of_one_event_arriving_together_count_once(web, monkeypatch):
    """The relay may deliver an event twice at the same moment: the second copy arrives while the
    first is being recorded (reproduced here by posting it from inside the first one's recording)."""
    from pipeline.service import webhooks

    base, storage = web
    body = json.dumps({"RecordType": "Bounce", "Type": "SoftBounce", "ID": 77, "Email": "reader00003@example.org",
                       "Description": "Mailbox full", "Details": "452 4.2.2", "BouncedAt": _iso()}).encode()
    auth = {"Authorization": "Basic " + base64.b64encode(f"postmark:{POSTMARK_PASSWORD}".encode()).decode()}
    recorded, second = [], []
    original = webhooks.record_bounce

    def record_while_a_copy_arrives(*args, **kwargs):
        recorded.append(args[2])
        if not second:
            second.append(_post(base + "postmark", body, auth))
        return original(*args, **kwargs)

    monkeypatch.setattr(webhooks, "record_bounce", record_while_a_copy_arrives)
    first = _post(base + "postmark", body, auth)
    assert first == (200, {"ok": True, "recorded": 1})
    assert second == [(200, {"ok": True, "recorded": 0})]
    assert recorded == ["reader00003@example.org"]

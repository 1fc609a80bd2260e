"""Signup with double opt-in, through the real WSGI app, the real file transport and a clock the tests move."""

from __future__ import annotations

import io
import re
import wsgiref.util
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from pipeline.config import load_config
from pipeline.service.web import MAX_BODY, make_app
from pipeline.usecases import open_storage
from pipeline.usecases.signup import Signups

from .conftest import run_cli, set_config

TOPICS = {"research": {"description": "Research results", "tags": ["research", "clinical trials"]},
          "programs": {"description": "Programs and services", "tags": ["programs"]},
          "advocacy": {"description": "Advocacy", "tags": ["advocacy"]}}


class Clock:
    """The app's clock: moved by the tests, never slept on."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc).replace(microsecond=0)  # then only moved by the test

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str


class Client:
    """Calls the WSGI app as a server would (environ, start_response), one request at a time."""

    def __init__(self, app):
        self.app = app

    def request(self, method: str, path: str, form: dict | list | None = None, *, ip: str = "203.0.113.7",
                headers: dict[str, str] | None = None, raw: bytes | None = None) -> Response:
        path, _, query = path.partition("?")
        body = raw if raw is not None else urlencode(form or {}, doseq=True).encode()
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_ADDR": ip,
                   "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(body)),
                   "wsgi.input": io.BytesIO(body), "HTTP_HOST": "news.example.org"}
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        wsgiref.util.setup_testing_defaults(environ)
        seen: dict = {}

        def start_response(status, response_headers):
            seen["status"], seen["headers"] = int(status.split()[0]), dict(response_headers)

        data = b"".join(self.app(environ, start_response))
        return Response(seen["status"], seen["headers"], data.decode())

    def stamp(self) -> str:
        page = self.request("GET", "/subscribe").body
        return re.search(r'name="stamp" value="([^"]+)"', page).group(1)

    def signup(self, clock: Clock, email: str, *, wait: float = 5, ip: str = "203.0.113.7", **fields) -> Response:
        stamp = self.stamp()
        clock.advance(seconds=wait)
        return self.request("POST", "/subscribe", {"email": email, "stamp": stamp, **fields}, ip=ip)


def signup_app(config, storage, clock, **options):
    """The web app with the notice drainer's pass run inside each request that queued a mail (the server
    runs it on its own thread just after), so a test reads the mail the moment the answer comes."""
    drain = Signups(config, storage, clock=clock, transport=options.get("transport")).deliver_queued
    return make_app(config, storage, clock=clock, on_notice_queued=drain, **options)


@pytest.fixture
def site(project, secret):
    set_config(project, topics=TOPICS, **{"signup.check_deliverability": False, "signup.ip_limit": 5,
                                          "signup.blocked_domains": ["mailinator.com"]})
    return project


@pytest.fixture
def web(site):
    config = load_config(site / "config.yaml")
    clock = Clock()
    storage = open_storage(config)
    yield Client(signup_app(config, storage, clock)), clock, storage, config
    storage.close()


def outbox(config, kind: str = "confirm") -> list:
    folder = config.resolve(config.delivery.outbox) / "signup"
    return [message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in sorted(folder.glob(f"{kind}-*.eml"))] if folder.exists() else []


def link_in(message, path: str) -> str:
    text = message.get_body(("plain",)).get_content()
    return re.search(rf"https?://\S+/{path}\?token=\S+", text).group(0)


def local(url: str) -> str:
    """The app-relative path of a public link (the app is mounted under the site's folder)."""
    parts = urlsplit(url)
    return f"/{parts.path.rsplit('/', 1)[1]}?{parts.query}"


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


# -- double opt-in ---------------------------------------------------------------------------------

def test_signup_is_pending_until_the_confirm_button_posts(web):
    client, clock, storage, config = web
    response = client.signup(clock, "Reader@Example.org", name="Ann", topics=["research"])
    assert response.status == 200 and "Check your inbox" in response.body
    assert storage.profile(email="reader@example.org").status == "pending"
    (mail,) = outbox(config)
    assert mail["To"] == "reader@example.org" and "Confirm your subscription" in mail["Subject"]
    assert mail["List-Unsubscribe"] is None and mail["Auto-Submitted"] == "auto-generated"
    html = mail.get_body(("html",)).get_content()
    assert config.organisation.name in html and "EIN 13-5661935." in html  # the organisation footer
    link = link_in(mail, "confirm")
    assert link.startswith("https://www.nationalmssociety.org/news-feed/confirm?token=")
    assert "reader" not in token_of(link).lower()  # the token names nobody

    page = client.request("GET", local(link))
    assert page.status == 200 and 'method="post"' in page.body and "Confirm my subscription" in page.body
    client.request("HEAD", local(link))
    assert storage.profile(email="reader@example.org").status == "pending"  # scanners' GETs confirm nothing

    done = client.request("POST", "/confirm", {"token": token_of(link)})
    assert done.status == 200 and "You are subscribed" in done.body
    profile = storage.profile(email="reader@example.org")
    assert profile.status == "subscribed" and profile.topics == ("research",) and profile.confirmed_at == clock.now
    history = storage.consent_histories([profile.id])[profile.id]
    assert [(e.action, e.method) for e in history] == [("subscribe", "form"), ("confirm", "confirmation-link")]
    assert history[0].consent_text == "Yes, email me National MS Society News. I can unsubscribe at any time."


def test_expired_and_reused_confirmation_links_are_refused_with_a_clear_page(web):
    client, clock, storage, config = web
    client.signup(clock, "late@example.org")
    clock.advance(hours=48, seconds=1)
    token = token_of(link_in(outbox(config)[0], "confirm"))
    for method in ("GET", "POST"):
        page = client.request(method, f"/confirm?token={token}")
        assert page.status == 410 and "This link has expired" in page.body
    assert storage.profile(email="late@example.org").status == "pending"

    client.signup(clock, "twice@example.org")
    token = token_of(link_in(outbox(config)[-1], "confirm"))
    assert client.request("POST", "/confirm", {"token": token}).status == 200
    for method in ("GET", "POST"):
        page = client.request(method, f"/confirm?token={token}")
        assert page.status == 410 and "already used" in page.body
    forged = client.request("POST", "/confirm", {"token": token[:-2] + "xx"})
    assert forged.status == 400 and "not valid" in forged.body


def test_new_pending_and_active_addresses_get_the_same_page_and_a_pending_one_one_mail_an_hour(web):
    client, clock, storage, config = web
    storage.operator_add("active@example.org", None, None, confirmed=True, now=clock.now)
    first = client.signup(clock, "new@example.org", ip="198.51.100.1")
    pending = client.signup(clock, "new@example.org", ip="198.51.100.2")
    active = client.signup(clock, "active@example.org", ip="198.51.100.3")
    assert first.status == pending.status == active.status == 200
    assert first.body == pending.body == active.body  # the form cannot tell who is subscribed
    assert first.headers == pending.headers == active.headers
    assert [m["To"] for m in outbox(config)] == ["new@example.org"]  # no resend within the hour
    clock.advance(minutes=61)
    client.signup(clock, "new@example.org", ip="198.51.100.4")
    assert [m["To"] for m in outbox(config)] == ["new@example.org"] * 2
    assert storage.profile(email="active@example.org").status == "subscribed"


def test_an_address_that_already_receives_the_list_is_told_so_with_its_preferences_link(web):
    """Its owner learns why no confirmation came; a stranger who typed it learns nothing (only the mailbox reads it)."""
    client, clock, storage, config = web
    storage.operator_add("active@example.org", None, None, confirmed=True, now=clock.now)
    client.signup(clock, "active@example.org", ip="198.51.100.3")
    client.signup(clock, "active@example.org", ip="198.51.100.4")  # again within the hour: not mailed again
    (note,) = outbox(config, "subscribed")
    assert note["To"] == "active@example.org" and note["Subject"] == f"You already receive {config.site.title}"
    assert "already receives it, so nothing has changed" in " ".join(note.get_body(("plain",)).get_content().split())
    preferences = client.request("GET", local(link_in(note, "preferences")))
    assert preferences.status == 200 and "active@example.org" in preferences.body
    assert outbox(config) == [] and storage.profile(email="active@example.org").status == "subscribed"


def test_an_unsubscribed_address_comes_back_only_through_the_opt_in(web):
    client, clock, storage, config = web
    storage.operator_add("gone@example.org", None, None, confirmed=True, now=clock.now)
    storage.unsubscribe("gone@example.org")
    client.signup(clock, "gone@example.org")
    assert storage.profile(email="gone@example.org").status == "pending"
    assert storage.count_subscribers("subscribed") == 0
    client.request("POST", "/confirm", {"token": token_of(link_in(outbox(config)[0], "confirm"))})
    assert storage.profile(email="gone@example.org").status == "subscribed"


# -- bots and abuse --------------------------------------------------------------------------------

def test_honeypot_and_too_fast_forms_send_nothing(web):
    client, clock, storage, config = web
    bot = client.signup(clock, "bot@example.org", website="http://spam.example")
    assert bot.status == 200 and "Check your inbox" in bot.body  # a bot learns nothing
    fast = client.signup(clock, "fast@example.org", wait=1)
    assert fast.status == 400 and "quicker than a person" in fast.body
    forged = client.request("POST", "/subscribe", {"email": "forged@example.org", "stamp": "abc.def"})
    assert forged.status == 200 and "One more step" in forged.body
    assert outbox(config) == [] and storage.profile(email="bot@example.org") is None
    assert storage.profile(email="fast@example.org") is None and storage.profile(email="forged@example.org") is None


def test_a_form_without_a_stamp_asks_once_more_and_then_signs_up(web):
    """The site's static pages carry no stamp (they are reproducible): the app asks once more."""
    client, clock, storage, config = web
    first = client.request("POST", "/subscribe", {"email": "static@example.org", "name": "Sam",
                                                  "topics": ["research", "programs"]})
    assert first.status == 200 and "One more step" in first.body and outbox(config) == []
    assert 'value="static@example.org"' in first.body and 'value="research" checked' in first.body
    stamp = re.search(r'name="stamp" value="([^"]+)"', first.body).group(1)
    clock.advance(seconds=4)
    second = client.request("POST", "/subscribe", {"email": "static@example.org", "stamp": stamp,
                                                   "topics": ["research", "programs"]})
    assert "Check your inbox" in second.body and len(outbox(config)) == 1
    assert storage.profile(email="static@example.org").topics == ("programs", "research")


def test_a_thousand_signups_from_one_address_in_a_minute_send_at_most_the_limit(web):
    client, clock, storage, config = web
    stamps = [client.stamp() for _ in range(1000)]  # a bot gathers fresh forms (each stamp is single-use)
    clock.advance(seconds=5)
    statuses = []
    for n, stamp in enumerate(stamps):
        response = client.request("POST", "/subscribe", {"email": f"victim{n}@example.org", "stamp": stamp},
                                  ip="192.0.2.66")
        statuses.append(response.status)
        clock.advance(milliseconds=55)  # 1,000 in 55 seconds
    assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
    assert len(outbox(config)) == config.signup.ip_limit == 5
    assert storage.count_subscribers("pending") == 5


def test_per_address_and_hourly_confirmation_limits_hold_across_addresses(site):
    set_config(site, **{"signup.confirmations_per_hour": 3, "signup.address_limit": 2, "signup.resend_minutes": 0})
    config = load_config(site / "config.yaml")
    clock = Clock()
    with open_storage(config) as storage:
        client = Client(signup_app(config, storage, clock))
        for n in range(3):
            client.signup(clock, "target@example.org", ip=f"198.51.100.{n}")
        assert len(outbox(config)) == 2  # the third signup of one address in an hour is not mailed
        for n in range(5):
            client.signup(clock, f"other{n}@example.org", ip=f"203.0.113.{n}")
        assert len(outbox(config)) == 3  # the list-bombing brake: 3 confirmations an hour in all
        clock.advance(hours=1, minutes=1)
        client.signup(clock, "later@example.org", ip="203.0.113.99")
        assert len(outbox(config)) == 4


def test_blocked_domains_invalid_addresses_cross_site_posts_and_large_bodies_are_refused(web):
    client, clock, storage, config = web
    blocked = client.signup(clock, "x@sub.mailinator.com")
    assert blocked.status == 400 and "cannot be used" in blocked.body and 'aria-invalid="true"' in blocked.body
    invalid = client.signup(clock, "not-an-address", ip="203.0.113.8")
    assert invalid.status == 400 and 'role="alert"' in invalid.body
    assert 'aria-describedby="signup-error"' in invalid.body
    stamp = client.stamp()
    clock.advance(seconds=5)
    cross = client.request("POST", "/subscribe", {"email": "c@example.org", "stamp": stamp},
                           headers={"Origin": "https://evil.example"})
    assert cross.status == 403
    same = client.request("POST", "/subscribe", {"email": "c@example.org", "stamp": stamp},
                          headers={"Origin": "https://www.nationalmssociety.org"})
    assert same.status == 200
    large = client.request("POST", "/subscribe", raw=b"email=" + b"a" * (MAX_BODY + 1))
    assert large.status == 413
    assert [m["To"] for m in outbox(config)] == ["c@example.org"]


def test_a_post_from_an_opaque_origin_is_refused(web):
    """A sandboxed iframe or a data: page on any site sends `Origin: null`: it proves nothing, so it is refused
    (our own pages' re-posts carry `Sec-Fetch-Site: same-origin`: test_signup_snippet's browser shows them)."""
    client, clock, storage, config = web
    stamp = client.stamp()
    clock.advance(seconds=5)
    for headers in ({"Origin": "null"}, {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null", "Sec-Fetch-Site": "same-site"}):
        opaque = client.request("POST", "/subscribe", {"email": "c@example.org", "stamp": stamp}, headers=headers)
        assert opaque.status == 403 and "only be sent from our own pages" in opaque.body
    assert outbox(config) == [] and storage.profile(email="c@example.org") is None


def test_pages_carry_security_headers_and_only_the_form_may_be_framed_by_configured_origins(site):
    set_config(site, **{"signup.embed_origins": ["https://partner.example"]})
    config = load_config(site / "config.yaml")
    with open_storage(config) as storage:
        client = Client(signup_app(config, storage, Clock()))
        form = client.request("GET", "/subscribe")
        confirm = client.request("GET", "/confirm?token=nothing")
        unsubscribe = client.request("GET", "/unsubscribe")
    assert "frame-ancestors 'self' https://partner.example" in form.headers["Content-Security-Policy"]
    assert "X-Frame-Options" not in form.headers
    for page in (confirm, unsubscribe):
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Frame-Options"] == "DENY"
    for page in (form, confirm, unsubscribe):
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert '<label for="signup-email">' in form.body and 'name="website"' in form.body


def test_a_welcome_message_links_the_latest_edition_when_configured(site):
    set_config(site, **{"signup.welcome": True})
    config = load_config(site / "config.yaml")
    run_cli(site, "subscribers", "add", "first@example.org", "--confirmed", check=True)
    run_cli(site, "run", check=True)
    clock = Clock()
    with open_storage(config) as storage:
        latest = storage.latest_edition()
        client = Client(signup_app(config, storage, clock))
        client.signup(clock, "new@example.org")
        client.request("POST", "/confirm", {"token": token_of(link_in(outbox(config)[0], "confirm"))})
    (welcome,) = outbox(config, "welcome")
    assert welcome["To"] == "new@example.org" and welcome["Subject"] == "Welcome to National MS Society News"
    assert f"archive/{latest.id}.html" in welcome.get_body(("plain",)).get_content()


# -- operators, consent ----------------------------------------------------------------------------

def test_operators_confirm_only_with_the_flag_and_consent_is_shown_and_exported(site):
    config = load_config(site / "config.yaml")
    pending = run_cli(site, "subscribers", "add", "ask@example.org", check=True)
    assert pending.stdout == "ask@example.org: pending (confirmation sent)\n" and len(outbox(config)) == 1
    run_cli(site, "subscribers", "add", "told@example.org", "--topics", "research", "--confirmed", check=True)
    csv_file = site / "list.csv"
    csv_file.write_text("email\nimported@example.org\n")
    assert "confirmations sent 1" in run_cli(site, "subscribers", "import", str(csv_file), check=True).stdout
    run_cli(site, "subscribers", "remove", "told@example.org", "--via", "mailto", check=True)

    shown = run_cli(site, "subscribers", "show", "told@example.org", check=True).stdout
    assert shown.startswith("told@example.org\tunsubscribed\t\ntopics: research\n")
    assert re.search(r"\d{4}-\d\d-\d\dT[\d:]+\+00:00; subscribe; via operator; confirmed_by=operator flag "
                     r"--confirmed", shown)
    assert re.search(r"unsubscribe; via mailto", shown)
    assert "pending" in run_cli(site, "subscribers", "show", "imported@example.org", check=True).stdout
    assert "via import; source=" in run_cli(site, "subscribers", "show", "imported@example.org", check=True).stdout
    assert len(outbox(config)) == 2

    import csv

    exported = {row["email"]: row for row in csv.DictReader(io.StringIO(
        run_cli(site, "subscribers", "export", check=True).stdout))}
    assert exported["ask@example.org"]["status"] == "pending"
    assert "subscribe; via operator; confirmation=requested" in exported["ask@example.org"]["consent_history"]
    told = exported["told@example.org"]
    assert told["topics"] == "research" and told["confirmed_at"]
    assert told["consent_history"].count("\n") == 1 and "via mailto" in told["consent_history"]
    missing = run_cli(site, "subscribers", "show", "nobody@example.org")
    assert missing.returncode == 1 and "not a subscriber" in missing.stderr


def test_the_current_schema_is_recorded_and_the_signup_tables_exist(config):
    from sqlalchemy import inspect

    from pipeline.state.storage import SCHEMA_VERSION

    with open_storage(config) as storage:
        assert storage.schema_version() == SCHEMA_VERSION
        tables = set(inspect(storage.engine).get_table_names())
    assert {"signup_tokens", "consent_events", "rate_events"} <= tables


def test_a_schema_4_database_migrates_to_the_current_schema_keeping_its_subscribers(tmp_path):
    from sqlalchemy import create_engine, inspect, text

    from pipeline.state.storage import SCHEMA_VERSION, Storage

    url = f"sqlite:///{tmp_path / 'old.db'}"
    Storage(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:  # take the database back to what schema 4 had
        for table in ("signup_tokens", "consent_events", "rate_events"):
            conn.execute(text(f"DROP TABLE {table}"))
        for table, column in (("subscribers", "topics_key"), ("subscribers", "paused_until"),
                              ("subscribers", "confirmed_at"), ("subscribers", "confirm_sent_at"),
                              ("deliveries", "variant")):
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        conn.execute(text("UPDATE schema_info SET version = 4"))
        conn.execute(text("INSERT INTO subscribers (email, attributes, status, updated_at) "
                          "VALUES ('old@example.org', '{}', 'subscribed', '2026-01-01 00:00:00')"))
    engine.dispose()
    with Storage(url) as storage:
        assert storage.schema_version() == SCHEMA_VERSION
        assert {c["name"] for c in inspect(storage.engine).get_columns("deliveries")} >= {"variant"}
        profile = storage.profile(email="old@example.org")
        assert profile.status == "subscribed" and profile.topics == () and profile.paused_until is None
        assert storage.topic_keys_in_use(datetime.now(timezone.utc)) == [""]


def test_concurrent_hits_on_one_rate_limit_never_pass_it(config):
    import threading

    now = datetime.now(timezone.utc)
    with open_storage(config) as storage:
        results: list[bool] = []
        lock = threading.Lock()
        go = threading.Event()

        def hit() -> None:
            go.wait()
            passed = storage.hit_rate("ip:same", 5, now - timedelta(hours=1), now)
            with lock:
                results.append(passed)

        threads = [threading.Thread(target=hit) for _ in range(24)]
        for thread in threads:
            thread.start()
        go.set()
        for thread in threads:
            thread.join(timeout=60)
    assert len(results) == 24 and results.count(True) == 5


def test_a_reader_whose_address_is_not_ascii_signs_up_from_the_form_and_confirms(web):
    client, clock, storage, config = web
    response = client.signup(clock, "jörg@bücher.example")
    assert response.status == 200 and "Check your inbox" in response.body
    (mail,) = outbox(config)
    # SMTPUTF8 (RFC 6531): the local part in UTF-8, the domain in its ASCII (IDNA) form every relay reads
    assert mail["To"] == "jörg@xn--bcher-kva.example"
    done = client.request("POST", "/confirm", {"token": token_of(link_in(mail, "confirm"))})
    assert done.status == 200 and storage.profile(email="jörg@xn--bcher-kva.example").status == "subscribed"


def test_an_imported_address_that_is_not_ascii_gets_its_confirmation(site):
    (site / "people.csv").write_text("email,name\nchloé@example.org,Chloé\n", encoding="utf-8")
    first = run_cli(site, "subscribers", "import", "people.csv")
    assert first.returncode == 0, first.stderr
    assert "added 1," in first.stdout and "confirmations sent 1" in first.stdout
    config = load_config(site / "config.yaml")
    (mail,) = outbox(config)
    assert mail["To"] == "chloé@example.org"


def test_a_relay_without_smtputf8_refuses_the_confirmation_cleanly(site):
    from .conftest import use_smtp
    from .smtp_sink import RecordingHandler, SmtpSink

    handler = RecordingHandler()
    with SmtpSink(handler, smtputf8=False) as sink:
        config = use_smtp(site, sink.port)
        clock = Clock()
        with open_storage(config) as storage:
            client = Client(signup_app(config, storage, clock))
            response = client.signup(clock, "jörg@example.org")
            assert response.status == 200 and "Check your inbox" in response.body  # the same page as anyone's
            assert storage.profile(email="jörg@example.org").status == "pending"
            client.signup(clock, "ann@example.org")
    assert [m.recipient for m in handler.received] == ["ann@example.org"]


def test_an_import_through_a_relay_without_smtputf8_says_who_was_not_mailed_and_a_rerun_mails_them(site):
    """The relay cannot take chloé's address: the import says so, by name and why, and she stays pending
    with no confirmation recorded; the same import run again through a relay that can, mails her."""
    from .conftest import use_smtp
    from .smtp_sink import RecordingHandler, SmtpSink

    (site / "people.csv").write_text("email,name\nchloé@example.org,Chloé\nann@example.org,Ann\n", encoding="utf-8")
    handler = RecordingHandler()
    with SmtpSink(handler, smtputf8=False) as sink:
        use_smtp(site, sink.port)
        first = run_cli(site, "subscribers", "import", "people.csv")
    assert first.returncode == 0, first.stderr
    assert "added 2," in first.stdout and "confirmations sent 1, not sent 1" in first.stdout
    assert "chloé@example.org: confirmation not sent: " in first.stderr and "SMTPUTF8" in first.stderr
    assert [m.recipient for m in handler.received] == ["ann@example.org"]
    config = load_config(site / "config.yaml")
    with open_storage(config) as storage:
        chloe = storage.profile(email="chloé@example.org")
        assert chloe.status == "pending" and chloe.confirm_sent_at is None
    able = RecordingHandler()
    with SmtpSink(able) as sink:
        use_smtp(site, sink.port)
        again = run_cli(site, "subscribers", "import", "people.csv")
    assert again.returncode == 0, again.stderr
    assert "confirmations sent 1" in again.stdout and "not sent" not in again.stdout
    assert [m.recipient for m in able.received] == ["chloé@example.org"]  # ann was mailed already


def test_a_form_stamp_signs_up_once_and_a_replay_asks_for_a_fresh_form(web):
    client, clock, storage, config = web
    stamp = client.stamp()
    clock.advance(seconds=5)
    first = client.request("POST", "/subscribe", {"email": "ann@example.org", "stamp": stamp})
    replay = client.request("POST", "/subscribe", {"email": "bob@example.org", "stamp": stamp})
    assert "Check your inbox" in first.body
    assert "press Subscribe once more" in replay.body and 'name="stamp"' in replay.body
    assert storage.profile(email="bob@example.org") is None
    assert [mail["To"] for mail in outbox(config)] == ["ann@example.org"]

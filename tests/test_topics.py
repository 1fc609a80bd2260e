"""Per-topic digests and the preferences page: each subscriber gets only their topics, rendered once per item set."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from email import message_from_bytes, policy
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import update

from pipeline.config import load_config
from pipeline.delivery.editions import plan_edition
from pipeline.sources import read_content
from pipeline.state.storage import subscribers as subscribers_table
from pipeline.usecases import RunContext, open_storage

from .conftest import SECRET, run_cli, set_config, use_smtp, write_item
from .smtp_sink import RecordingHandler, SmtpSink
from .test_signup import Client, Clock, signup_app

TOPICS = {"research": {"description": "Research results", "tags": ["research", "clinical trials"]},
          "programs": {"description": "Programs and services", "tags": ["programs and services"]},
          "living": {"label": "Living with MS", "description": "Everyday life", "tags": ["living with ms"]},
          "advocacy": {"description": "Advocacy", "tags": ["advocacy"]}}
MESEMS = "International Mesenchymal Stem Cell Trial Finds No Effect on Inflammation in Active MS"
PHASE2 = "What a Phase 2 Trial Can, and Cannot, Tell Us"
NAVIGATORS = "MS Navigators Are Here to Help"
QUESTIONS = "Questions to Bring to Your Next Neurology Appointment"
ALL = {MESEMS, PHASE2, NAVIGATORS, QUESTIONS}
RESEARCH = {MESEMS, PHASE2}


def _with_topics(project):
    set_config(project, topics=TOPICS, **{"signup.check_deliverability": False})
    return load_config(project / "config.yaml")


def _add(storage, email: str, topics: list[str]) -> int:
    from pipeline.clock import utcnow
    from pipeline.state.storage import topics_key

    _, profile = storage.operator_add(email, None, topics_key(topics), confirmed=True, now=utcnow())
    return profile.id


def _titles(raw: bytes) -> set[str]:
    text = message_from_bytes(raw, policy=policy.default).get_body(("plain",)).get_content()
    flat = " ".join(text.split())
    return {title for title in ALL if title in flat}


def _outbox(config, edition_id: str) -> dict[str, bytes]:
    folder = config.resolve(config.delivery.outbox) / edition_id
    return {p.stem: p.read_bytes() for p in folder.glob("*.eml")}


def test_items_reach_only_the_subscribers_of_their_topics(project, secret):
    config = _with_topics(project)
    with open_storage(config) as storage:
        ids = {"research": _add(storage, "r@example.org", ["research"]),
               "programs": _add(storage, "p@example.org", ["programs"]),
               "both": _add(storage, "rp@example.org", ["research", "programs"]),
               "all": _add(storage, "all@example.org", []),
               "advocacy": _add(storage, "a@example.org", ["advocacy"])}
    result = run_cli(project, "-v", "run", check=True)
    assert "4 topic choices, 3 digest variants" in result.stderr
    with open_storage(config) as storage:
        edition = storage.latest_edition()
        assert edition.recipients == 4  # advocacy has no news this time: no message, no ledger row
        assert storage.ledger_counts(edition.id)["sent"] == 4
        assert set(storage.edition_variants(edition.id)) == {"research", "programs", "programs,research"}
    sent = _outbox(config, edition.id)
    assert _titles(sent[str(ids["research"])]) == RESEARCH
    assert _titles(sent[str(ids["programs"])]) == {NAVIGATORS}
    assert _titles(sent[str(ids["both"])]) == RESEARCH | {NAVIGATORS}
    assert _titles(sent[str(ids["all"])]) == ALL
    assert str(ids["advocacy"]) not in sent
    subject = message_from_bytes(sent[str(ids["programs"])], policy=policy.default)["Subject"]
    assert NAVIGATORS in subject  # the variant's own lead story


def test_ten_thousand_subscribers_over_three_topics_cost_one_render_per_distinct_item_set(project, secret):
    config = _with_topics(project)
    choices = ["", "research", "programs", "living", "programs,research", "living,research", "living,programs",
               "living,programs,research"]
    with open_storage(config) as storage:
        storage.merge_subscribers([(f"reader{n:05d}@example.org", None, {}) for n in range(10_000)])
        with storage.engine.begin() as conn:  # spread the choices evenly over the list
            for position, key in enumerate(choices):
                conn.execute(update(subscribers_table).where(subscribers_table.c.id % len(choices) == position)
                             .values(topics_key=key))
        ctx = RunContext(config, storage, read_content(config))
        plan = plan_edition(ctx.items, storage, config, ctx.stored)
        assert plan.created
        item_sets = {frozenset(i.title for i in ctx.items if not key or any(
            set(TOPICS[t]["tags"]) & set(i.tags) for t in key.split(","))) for key in choices}
        assert ctx.renders == len(item_sets) == 5 <= 7  # living+research and all three are the whole edition
        edition = storage.latest_edition()
        assert edition.recipients == 10_000
        variants = storage.edition_variants(edition.id)
        assert set(variants) == {"research", "programs", "living", "programs,research"}
        assert storage.delivery_variant(edition.id, 8) == ""  # id 8 chose nothing: the whole edition
        assert storage.delivery_variant(edition.id, 1) == "research"
        assert storage.delivery_variant(edition.id, 6) == "living"  # living+programs: the same items as living


def _send(project) -> subprocess.Popen:
    env = {**os.environ, "PIPELINE_SECRET": SECRET}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"), "send"],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_minus_nine_mid_send_with_mixed_topics_misses_nobody_and_keeps_each_variant(project):
    handler = RecordingHandler()
    expected: dict[str, set[str]] = {}
    wanted = {"": ALL, "research": RESEARCH, "programs": {NAVIGATORS}, "living": {NAVIGATORS, QUESTIONS}}
    with SmtpSink(handler) as sink:
        use_smtp(project, sink.port, concurrency=2)
        config = _with_topics(project)
        with open_storage(config) as storage:
            for n in range(800):
                key = list(wanted)[n % 4]
                _add(storage, f"reader{n:04d}@example.org", key.split(",") if key else [])
                expected[f"reader{n:04d}@example.org"] = wanted[key]
        first = _send(project)
        assert handler.when_count(200).wait(timeout=120), "the sender never got going"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert handler.count < 800, "killed too late to test anything"
        second = _send(project)
        _, err = second.communicate(timeout=300)
        assert second.returncode == 0, err
    received = handler.by_recipient()
    assert sorted(received) == sorted(expected), "somebody was missed"
    for address, messages in received.items():
        assert len({m.message["Message-ID"] for m in messages}) == 1
        assert all(_titles(m.raw) == expected[address] for m in messages), address
    copies = Counter(len(messages) for messages in received.values())
    assert set(copies) <= {1, 2} and copies[2] <= 2, copies


def _preferences_link(raw: bytes) -> str:
    text = message_from_bytes(raw, policy=policy.default).get_body(("plain",)).get_content()
    return re.search(r"Manage preferences: (\S+)", text).group(1)


def test_the_preferences_page_changes_topics_and_pauses_and_the_next_editions_follow(project, secret):
    config = _with_topics(project)
    with open_storage(config) as storage:
        reader = _add(storage, "reader@example.org", ["research"])
    run_cli(project, "run", check=True)
    with open_storage(config) as storage:
        first = storage.latest_edition()
    raw = _outbox(config, first.id)[str(reader)]
    assert _titles(raw) == RESEARCH
    link = _preferences_link(raw)
    assert link.startswith("https://www.nationalmssociety.org/news-feed/preferences?token=")
    token = parse_qs(urlsplit(link).query)["token"][0]
    assert "reader" not in token
    html = message_from_bytes(raw, policy=policy.default).get_body(("html",)).get_content()
    assert re.search(f'href="{re.escape(link)}"[^>]*>Manage preferences</a>', html)

    clock = Clock()
    with open_storage(config) as storage:
        client = Client(signup_app(config, storage, clock))
        page = client.request("GET", f"/preferences?token={token}")
        assert page.status == 200 and "reader@example.org" in page.body
        assert 'value="research" checked' in page.body and 'value="programs">' in page.body
        assert storage.profile(subscriber_id=reader).topics == ("research",)  # a GET changes nothing
        saved = client.request("POST", f"/preferences?token={token}", {"topics": ["programs"], "action": "save"})
        assert saved.status == 200 and "Your preferences are saved" in saved.body
        assert storage.profile(subscriber_id=reader).topics == ("programs",)
        forged = client.request("GET", f"/preferences?token={token[:-3]}abc")
        assert forged.status == 400
        cross = client.request("POST", f"/preferences?token={token}", {"action": "unsubscribe"},
                               headers={"Origin": "https://evil.example"})
        assert cross.status == 403 and storage.profile(subscriber_id=reader).status == "subscribed"

    write_item(project, "research-news", 'title: "New research item"\ndate: 2025-01-02T09:00:00+00:00\n'
                                         'tags: [research]')
    write_item(project, "programs-news", 'title: "New programs item"\ndate: 2025-01-03T09:00:00+00:00\n'
                                         'tags: [programs and services]')
    run_cli(project, "run", check=True)
    with open_storage(config) as storage:
        second = storage.latest_edition()
    text = message_from_bytes(_outbox(config, second.id)[str(reader)], policy=policy.default)
    body = " ".join(text.get_body(("plain",)).get_content().split())
    assert "New programs item" in body and "New research item" not in body

    with open_storage(config) as storage:
        client = Client(signup_app(config, storage, clock))
        client.request("POST", f"/preferences?token={token}", {"topics": ["programs"], "pause": "1m"})
        assert storage.profile(subscriber_id=reader).paused_until is not None
    write_item(project, "more-programs", 'title: "More programs"\ndate: 2025-01-04T09:00:00+00:00\n'
                                         'tags: [programs and services]')
    run_cli(project, "run", check=True)
    with open_storage(config) as storage:
        third = storage.latest_edition()
        assert third.id != second.id and third.recipients == 0  # paused: nothing queued for the reader

    with open_storage(config) as storage:
        client = Client(signup_app(config, storage, clock))
        gone = client.request("POST", f"/preferences?token={token}", {"action": "unsubscribe"})
        assert gone.status == 200 and "You are unsubscribed" in gone.body
        assert storage.profile(subscriber_id=reader).status == "unsubscribed"
        actions = [(e.action, e.method) for e in storage.consent_histories([reader])[reader]]
        assert actions == [("preferences", "preferences"), ("preferences", "preferences"),
                           ("unsubscribe", "preferences")]
        clock.advance(days=400)
        expired = client.request("GET", f"/preferences?token={token}")
        assert expired.status == 410 and "expired" in expired.body


def test_the_public_copy_links_the_generic_preferences_page(project, secret):
    run_cli(project, "run", "--no-send", check=True)
    html = (project / "public" / "digest.html").read_text()
    generic = "https://www.nationalmssociety.org/news-feed/preferences"
    assert re.search(f'href="{re.escape(generic)}"[^>]*>Manage preferences</a>', html)
    assert "__PREFERENCES_URL__" not in html
    index = (project / "public" / "index.html").read_text()
    assert '<form class="signup" method="post" action="https://www.nationalmssociety.org/news-feed/subscribe"' \
        in index
    assert 'for="signup-email"' in index and 'name="stamp" value=""' in index
    assert 'action="https://www.nationalmssociety.org/news-feed/subscribe"' in \
        (project / "public" / "archive" / "index.html").read_text()

"""The list looks after itself: bounces and complaints suppress, suppressed addresses are never mailed,
an operator can lift a suppression with a reason.  Real SQLite state and real SMTP on loopback."""

from __future__ import annotations

import smtplib
from datetime import timedelta

import pytest

from pipeline import usecases
from pipeline.bounces.policy import classify_smtp_reply, record_bounce
from pipeline.clock import utcnow
from pipeline.config import load_config
from pipeline.service.servers import make_bounce_receiver
from pipeline.state.storage import FAILED, SKIPPED, Outcome, StoredDigest
from pipeline.usecases import open_storage
from pipeline.usecases.subscribers import import_csv

from .bounce_helpers import BOUNCE_DOMAIN, return_path, sample
from .conftest import SECRET, add_subscribers, run_cli, set_config, use_smtp, write_item
from .smtp_sink import Behaviour, RecordingHandler, SmtpSink, free_port


def _with_bounce_domain(project, port: int, **smtp):
    set_config(project, **{"bounces.domain": BOUNCE_DOMAIN})
    return use_smtp(project, port, **smtp)


def _new_item(project, slug: str) -> None:
    write_item(project, slug, f'title: "Story {slug}"\ndate: 2025-01-0{len(slug) % 9 + 1}T09:00:00+00:00')


def _recipients_of(config, edition_id: str) -> set[str]:
    """Who an edition was queued for (read straight from the ledger)."""
    from sqlalchemy import select

    from pipeline.state.storage import deliveries, subscribers

    with open_storage(config) as storage, storage.engine.connect() as conn:
        return set(conn.execute(select(subscribers.c.email)
                                .join(deliveries, deliveries.c.subscriber_id == subscribers.c.id)
                                .where(deliveries.c.edition_id == edition_id)).scalars())


def test_every_message_carries_a_signed_return_path_and_a_refused_address_is_suppressed_for_the_next_edition(
        project, secret):
    handler = RecordingHandler(Behaviour(reject={"reader00001@example.org"}))
    with SmtpSink(handler) as sink:
        config = _with_bounce_domain(project, sink.port)
        addresses = add_subscribers(config, 3)
        first = usecases.run(config, progress=False)
        assert (first.reports[0].sent, first.reports[0].failed) == (2, 1)
        with open_storage(config) as storage:
            subscribers = {sub.email: sub.id for sub in storage.iter_subscribers()}
        edition_id = first.edition.edition_id
        for message in handler.received:  # MAIL FROM is the VERP address naming edition and subscriber
            assert message.mail_from == return_path(SECRET, edition_id, subscribers[message.recipient])
        with open_storage(config) as storage:
            held = storage.active_suppression(subscribers["reader00001@example.org"])
        assert held is not None and held.reason == "hard-bounce" and "5.1.1" in held.detail

        _new_item(project, "second")
        second = usecases.run(load_config(config.source_file), progress=False)
        assert second.edition.created and second.reports[0].sent == 2 and second.reports[0].failed == 0
    assert _recipients_of(config, second.edition.edition_id) == {addresses[0], addresses[2]}
    assert [m.recipient for m in handler.received].count("reader00001@example.org") == 0


def test_refusals_about_the_sender_rather_than_the_address_are_not_bounces():
    assert classify_smtp_reply("550 5.1.1 No such user here") == "hard"
    assert classify_smtp_reply("550 No such user") == "hard"
    assert classify_smtp_reply("552 5.2.2 Mailbox full") == "soft"
    assert classify_smtp_reply("550 5.7.1 Message rejected as spam") == "not counted"
    assert classify_smtp_reply("535 5.7.8 Authentication failed") == "not counted"
    assert classify_smtp_reply("could not build the message: bad") == "not counted"
    assert classify_smtp_reply("gave up after 9 attempts over 3 days: 451 try later") == "not counted"


def _edition(storage, edition_id: str) -> None:
    assert storage.create_edition(edition_id, [f"item-{edition_id}"], StoredDigest("s", "<p>h</p>", "t"))


def test_soft_bounces_suppress_after_three_editions_within_the_window_and_repeats_count_once(config):
    add_subscribers(config, 2)
    policy = config.bounces.policy
    with open_storage(config) as storage:
        for n in range(3):
            _edition(storage, f"{n:016x}")
        email = "reader00000@example.org"
        for edition_id in ("0" * 16, "0" * 16, "1".zfill(16)):  # the first edition twice: a repeated delay notice
            result = record_bounce(storage, policy, email, "soft", "452 4.2.2 full", "mailbox", edition_id)
            assert result.outcome == "counted"
        sub = storage.get_subscriber(email)
        assert storage.active_suppression(sub.id) is None
        third = record_bounce(storage, policy, email, "soft", "452 4.2.2 full", "mailbox", "2".zfill(16))
        assert third.outcome == "suppressed"
        held = storage.active_suppression(sub.id)
        assert held.reason == "soft-bounces" and "3 soft bounces within 30 days" in held.detail
        # Its queued messages are withdrawn like an unsubscribe's; the other subscriber's are not.
        counts = storage.ledger_counts("2".zfill(16))
        assert counts[SKIPPED] == 1 and counts["pending"] == 1


def test_a_complaint_unsubscribes_and_suppresses_and_an_import_never_puts_anyone_back(config):
    import io

    add_subscribers(config, 2)
    with open_storage(config) as storage:
        result = record_bounce(storage, config.bounces.policy, "reader00000@example.org", "complaint",
                               "complaint (abuse)", "webhook:ses")
        assert result.outcome == "unsubscribed, suppressed"
        record_bounce(storage, config.bounces.policy, "reader00001@example.org", "hard", "550 5.1.1", "mailbox")
        report = import_csv(storage, io.StringIO("email,name\nreader00000@example.org,A\nreader00001@example.org,B\n"
                                                 "new@example.org,C\n"))
        assert (report.added, report.kept_suppressed) == (1, 2)
        assert storage.get_subscriber("reader00000@example.org").status == "unsubscribed"
        assert storage.suppression_counts() == {"complaint": 1, "hard-bounce": 1}
        _edition(storage, "a" * 16)
        assert storage.get_edition("a" * 16).recipients == 1  # only new@example.org


def test_a_complaint_and_a_mailed_unsubscribe_are_withdrawals_in_the_consent_history_and_a_bounce_is_not(config):
    add_subscribers(config, 3)
    policy = config.bounces.policy
    with open_storage(config) as storage:
        ids = storage.ids_for(["reader00000@example.org", "reader00001@example.org", "reader00002@example.org"])
        record_bounce(storage, policy, "reader00000@example.org", "complaint", "complaint (abuse)", "webhook:ses")
        record_bounce(storage, policy, "reader00000@example.org", "complaint", "complaint (abuse)", "mailbox")
        record_bounce(storage, policy, "reader00001@example.org", "unsubscribe",
                      "asked by email to the unsubscribe address (signed link)", "receiver")
        record_bounce(storage, policy, "reader00002@example.org", "hard", "550 5.1.1 User unknown", "mailbox")
        histories = storage.consent_histories(list(ids.values()))
    (complaint,) = histories[ids["reader00000@example.org"]]  # the second complaint withdrew nothing more
    assert (complaint.action, complaint.method, complaint.detail) == \
        ("unsubscribe", "complaint", {"source": "webhook:ses", "reason": "complaint (abuse)"})
    (mailed,) = histories[ids["reader00001@example.org"]]
    assert (mailed.action, mailed.method, mailed.detail["source"]) == ("unsubscribe", "mailto", "receiver")
    assert histories[ids["reader00002@example.org"]] == []  # suppressed, but the person withdrew nothing


def test_unsubscribing_a_subscribed_or_a_pending_address_records_the_withdrawal_once(config):
    add_subscribers(config, 1)
    with open_storage(config) as storage:
        storage.operator_add("pending@example.org", None, None, confirmed=False, now=utcnow())
        assert storage.unsubscribe("reader00000@example.org", "desk", detail={"by": "desk user ann@example.org"})
        assert storage.unsubscribe("pending@example.org", "preferences")  # a pending signup withdrawn
        assert not storage.unsubscribe("reader00000@example.org", "desk")  # already: nothing more recorded
        ids = storage.ids_for(["reader00000@example.org", "pending@example.org"])
        histories = storage.consent_histories(list(ids.values()))
        assert storage.profile(email="pending@example.org").status == "unsubscribed"
    assert [(e.method, e.detail) for e in histories[ids["reader00000@example.org"]]] == \
        [("desk", {"by": "desk user ann@example.org"})]
    assert [(e.action, e.method) for e in histories[ids["pending@example.org"]]] == [("unsubscribe", "preferences")]


def test_an_operator_lifts_a_suppression_with_a_reason_and_sees_it_all(project, config):
    add_subscribers(config, 1)
    with open_storage(config) as storage:
        record_bounce(storage, config.bounces.policy, "reader00000@example.org", "hard", "550 5.1.1 User unknown",
                      "mailbox", "b" * 16)
    status = run_cli(project, "status", check=True)
    assert "Suppressed: 1 hard-bounce (1 in all)" in status.stdout
    listed = run_cli(project, "subscribers", "list", "--suppressed", check=True).stdout.split("\t")
    assert listed[:2] == ["reader00000@example.org", "hard-bounce"] and listed[3] == "550 5.1.1 User unknown\n"
    shown = run_cli(project, "subscribers", "show", "reader00000@example.org", check=True).stdout
    assert "suppressed: hard-bounce since" in shown and "hard        via mailbox" in shown and "550 5.1.1" in shown
    refused = run_cli(project, "subscribers", "unsuppress", "reader00000@example.org")
    assert refused.returncode == 2 and "--reason" in refused.stderr
    lifted = run_cli(project, "subscribers", "unsuppress", "reader00000@example.org", "--reason",
                     "the mailbox was restored (ticket 42)", check=True)
    assert "suppression lifted" in lifted.stdout
    shown = run_cli(project, "subscribers", "show", "reader00000@example.org", check=True).stdout
    assert run_cli(project, "subscribers", "list", "--suppressed", check=True).stdout == ""
    assert "suppressed: no" in shown
    assert "lifted      hard-bounce suppression: the mailbox was restored (ticket 42)" in shown
    with open_storage(config) as storage:
        _edition(storage, "c" * 16)
        assert storage.get_edition("c" * 16).recipients == 1


def test_a_bounce_from_before_a_lift_is_recorded_but_does_not_suppress_again(config):
    add_subscribers(config, 1)
    policy, email = config.bounces.policy, "reader00000@example.org"
    bounced = utcnow().replace(microsecond=0) - timedelta(hours=2)
    with open_storage(config) as storage:
        subscriber = storage.get_subscriber(email)
        record_bounce(storage, policy, email, "hard", "550 5.1.1 User unknown", "mailbox", at=bounced)
        assert storage.lift_suppression(subscriber.id, "new mailbox, she called", now=bounced + timedelta(hours=1))
        late = record_bounce(storage, policy, email, "hard", "550 5.1.1 User unknown", "webhook:ses",
                             at=bounced + timedelta(minutes=30))
        assert late.outcome == "before the lift: not suppressed"
        assert storage.active_suppression(subscriber.id) is None
        after = record_bounce(storage, policy, email, "hard", "550 5.1.1 User unknown", "mailbox",
                              at=bounced + timedelta(hours=1, minutes=1))
        assert after.outcome == "suppressed"  # a bounce after the lift counts as ever
        events, _ = storage.bounce_history(subscriber.id)
    assert [(e.source, e.outcome, e.created_at) for e in events][1] == \
        ("webhook:ses", "before the lift: not suppressed", bounced + timedelta(minutes=30))


def test_a_refusal_during_a_send_does_not_suppress_an_address_lifted_before_the_send_ended(config):
    add_subscribers(config, 2)
    email = "reader00001@example.org"
    with open_storage(config) as storage:
        _edition(storage, "d" * 16)
        claims = {claim.email: claim for claim in storage.claim("d" * 16, 10, "sender")}
        storage.record_results([Outcome(claims[email], FAILED, "550 5.1.1 <reader00001@example.org>: User unknown", 1)])
        record_bounce(storage, config.bounces.policy, email, "hard", "550 5.1.1 (an earlier DSN)", "mailbox")
        (refused,) = storage.unrecorded_send_failures("d" * 16)
        subscriber = storage.get_subscriber(email)
        assert storage.lift_suppression(subscriber.id, "the mailbox was restored (ticket 42)",
                                        now=refused.at + timedelta(minutes=1))  # while the send still runs
        assert usecases.record_send_refusals(config, storage, "d" * 16) == 1  # the send ends
        assert storage.active_suppression(subscriber.id) is None
        events, _ = storage.bounce_history(subscriber.id)
        assert (events[-1].source, events[-1].outcome) == ("smtp", "before the lift: not suppressed")
        assert storage.ledger_counts("d" * 16)[FAILED] == 1  # the attempt stays in the ledger


@pytest.fixture
def receiver(project, secret):
    set_config(project, **{"bounces.domain": BOUNCE_DOMAIN})
    config = load_config(project / "config.yaml")
    storage = open_storage(config)
    controller = make_bounce_receiver(config, storage, "127.0.0.1", free_port())
    controller.start()
    try:
        yield config, storage, controller
    finally:
        controller.stop()
        storage.close()


def test_the_smtp_receiver_suppresses_the_subscriber_its_return_path_names_and_refuses_forged_ones(receiver):
    config, storage, controller = receiver
    add_subscribers(config, 2)
    target = storage.get_subscriber("reader00001@example.org")
    _edition(storage, "d" * 16)
    good = sample("postfix_hard", SECRET, "d" * 16, target.id, "someone-else@example.org")
    forged = sample("postfix_hard", "a-different-secret-0123", "d" * 16, target.id - 1, "reader00000@example.org")
    with smtplib.SMTP("127.0.0.1", controller.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("", [return_path("a-different-secret-0123", "d" * 16, target.id - 1)], forged)
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("", ["postmaster@" + BOUNCE_DOMAIN], forged)
        client.sendmail("", [return_path(SECRET, "d" * 16, target.id)], good)
    held = storage.active_suppression(target.id)
    assert held is not None and held.reason == "hard-bounce"  # named by the return path, not by the DSN body
    assert storage.active_suppression(target.id - 1) is None
    assert storage.suppression_counts() == {"hard-bounce": 1}
    events, _ = storage.bounce_history(target.id)
    assert [(e.kind, e.source, e.edition_id) for e in events] == [("hard", "receiver", "d" * 16)]


def test_the_smtp_receiver_takes_mailto_unsubscribes(receiver):
    config, storage, controller = receiver
    add_subscribers(config, 1)
    with smtplib.SMTP("127.0.0.1", controller.port, timeout=10) as client:
        client.sendmail("reader00000@example.org", ["unsubscribe@nationalmssociety.org"],
                        sample("mailto_unsubscribe", SECRET, "e" * 16, 1, "reader00000@example.org"))
    assert storage.get_subscriber("reader00000@example.org").status == "unsubscribed"
    assert storage.active_suppression(storage.get_subscriber("reader00000@example.org").id) is None


def test_a_mailto_unsubscribe_with_a_forged_from_is_answered_with_a_link_and_unsubscribes_nobody(receiver):
    from email import message_from_bytes, policy

    config, storage, controller = receiver
    add_subscribers(config, 1)
    forged = sample("mailto_unsubscribe_forged", SECRET, "e" * 16, 1, "reader00000@example.org")
    with smtplib.SMTP("127.0.0.1", controller.port, timeout=10) as client:
        for _ in range(2):  # sent twice: the subscriber is asked once a day at most
            client.sendmail("attacker@example.net", ["unsubscribe@nationalmssociety.org"], forged)
    assert storage.get_subscriber("reader00000@example.org").status == "subscribed"
    (asked,) = sorted((config.resolve(config.delivery.outbox) / "signup").glob("unsubscribe-*.eml"))
    message = message_from_bytes(asked.read_bytes(), policy=policy.default)
    assert message["To"] == "reader00000@example.org" and message["Subject"].startswith("Unsubscribe from ")
    text = message.get_body(("plain",)).get_content()
    assert "/unsubscribe?token=u1." in text and "If you did not ask, ignore this email" in text


def test_the_import_command_says_how_many_it_kept_suppressed(project, config):
    add_subscribers(config, 1)
    with open_storage(config) as storage:
        record_bounce(storage, config.bounces.policy, "reader00000@example.org", "hard", "550 5.1.1", "mailbox")
    (project / "list.csv").write_text("email\nreader00000@example.org\nfresh@example.org\n")
    result = run_cli(project, "subscribers", "import", "--confirmed", str(project / "list.csv"), check=True)
    # Each row counted once: the suppressed one is kept suppressed, not also "unchanged".
    assert result.stdout.strip().endswith("added 1, updated 0, unchanged 0, kept unsubscribed 0, duplicates 0, invalid 0, "
                                          "kept suppressed 1")


def test_end_to_end_hard_bounce_three_soft_bounces_and_a_complaint_take_people_off_the_list(project, secret):
    """aiosmtpd receives the editions; DSNs and an ARF report come back to the bounce receiver at the
    return paths the messages really carried; each next edition goes only to who is left."""
    set_config(project, **{"bounces.domain": BOUNCE_DOMAIN})
    handler = RecordingHandler()
    with SmtpSink(handler) as sink:
        config = use_smtp(project, sink.port)
        addresses = add_subscribers(config, 4)
        storage = open_storage(config)
        receiver = make_bounce_receiver(config, storage, "127.0.0.1", free_port())
        receiver.start()
        try:
            def send_edition(slug: str | None) -> tuple[str, dict[str, str]]:
                if slug:
                    _new_item(project, slug)
                before = len(handler.received)
                outcome = usecases.run(load_config(config.source_file), progress=False)
                return outcome.edition.edition_id, {m.recipient: m.mail_from for m in handler.received[before:]}

            def bounce(name: str, edition_id: str, paths: dict[str, str], email: str) -> None:
                subscriber = storage.get_subscriber(email)
                assert paths[email] == return_path(SECRET, edition_id, subscriber.id)  # what the message carried
                with smtplib.SMTP("127.0.0.1", receiver.port, timeout=10) as client:
                    client.sendmail("", [paths[email]], sample(name, SECRET, edition_id, subscriber.id, email))

            first, paths = send_edition(None)
            assert sorted(paths) == addresses
            bounce("rfc3464_hard", first, paths, addresses[0])
            bounce("gmail_delay_soft", first, paths, addresses[1])
            bounce("arf_complaint", first, paths, addresses[2])
            assert storage.get_subscriber(addresses[2]).status == "unsubscribed"

            second, paths = send_edition("second")
            assert sorted(paths) == [addresses[1], addresses[3]]
            bounce("gmail_delay_soft", second, paths, addresses[1])
            assert storage.active_suppression(storage.get_subscriber(addresses[1]).id) is None  # two so far

            third, paths = send_edition("third")
            assert sorted(paths) == [addresses[1], addresses[3]]
            bounce("gmail_delay_soft", third, paths, addresses[1])

            fourth, paths = send_edition("fourth")
            assert sorted(paths) == [addresses[3]]
            assert storage.suppression_counts() == {"hard-bounce": 1, "soft-bounces": 1, "complaint": 1}
        finally:
            receiver.stop()
            storage.close()
    status = run_cli(project, "status", check=True).stdout
    # 4 + 2 + 2 + 1 messages sent; one complaint among them.
    assert "Last 30 days: 9 sent, 1 hard bounces, 3 soft bounces, 1 complaints (complaint rate 11.11%" in status
    assert "Suppressed: 1 complaint, 1 hard-bounce, 1 soft-bounces (3 in all)" in status
    shown = run_cli(project, "subscribers", "show", addresses[1], check=True).stdout
    assert shown.count("soft        via receiver") == 3 and "suppressed: soft-bounces since" in shown


def test_serve_bounces_runs_until_sigterm(project, secret):
    import signal
    import socket
    import subprocess
    import sys
    import time

    config = load_config(set_config(project, **{"bounces.domain": BOUNCE_DOMAIN}))
    add_subscribers(config, 1)
    with open_storage(config) as storage:
        _edition(storage, "f" * 16)
        subscriber = storage.get_subscriber("reader00000@example.org")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"),
                                "serve-bounces", "--port", str(port)], cwd=project,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # wait for the receiver's greeting, not for a fixed time
            assert process.poll() is None, process.communicate()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    if sock.recv(4).startswith(b"220"):
                        break
            except OSError:
                assert time.monotonic() < deadline, "serve-bounces did not start"
                try:
                    process.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    pass
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("", [return_path(SECRET, "f" * 16, subscriber.id)],
                            sample("exim_hard", SECRET, "f" * 16, subscriber.id, "reader00000@example.org"))
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert f"receiving bounces on 127.0.0.1:{port}" in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with open_storage(config) as storage:
        assert storage.active_suppression(subscriber.id).reason == "hard-bounce"


def test_when_everyone_is_suppressed_no_edition_uses_up_the_new_items(project, config, secret):
    add_subscribers(config, 1)
    with open_storage(config) as storage:
        record_bounce(storage, config.bounces.policy, "reader00000@example.org", "hard", "550 5.1.1", "mailbox")
    outcome = usecases.run(config, progress=False)
    assert outcome.edition.edition_id is None and outcome.edition.reason == "no subscribers"
    with open_storage(config) as storage:
        assert storage.sent_item_ids() == set()


def test_a_row_already_claimed_by_a_sender_is_withdrawn_when_its_address_is_suppressed(config):
    add_subscribers(config, 2)
    with open_storage(config) as storage:
        _edition(storage, "9" * 16)
        claims = storage.claim("9" * 16, 10, "worker-a")
        assert len(claims) == 2
        record_bounce(storage, config.bounces.policy, claims[0].email, "hard", "550 5.1.1", "webhook:ses")
        assert storage.begin_attempt(claims[0]) is False  # the sender finds it withdrawn and sends nothing
        assert storage.begin_attempt(claims[1]) is True
        assert storage.ledger_counts("9" * 16)[SKIPPED] == 1


def test_the_smtp_receiver_offers_starttls_when_given_a_certificate(project, secret, tmp_path):
    import ssl

    from .smtp_sink import self_signed_certificate

    cert, key = self_signed_certificate(tmp_path)
    config = load_config(set_config(project, **{"bounces.domain": BOUNCE_DOMAIN, "bounces.receiver.tls_cert": str(cert),
                                                "bounces.receiver.tls_key": str(key)}))
    add_subscribers(config, 1)
    with open_storage(config) as storage:
        _edition(storage, "7" * 16)
        subscriber = storage.get_subscriber("reader00000@example.org")
        controller = make_bounce_receiver(config, storage, "127.0.0.1", free_port())
        controller.start()
        try:
            with smtplib.SMTP("127.0.0.1", controller.port, timeout=10) as client:
                client.ehlo()
                assert client.has_extn("starttls")
                client.starttls(context=ssl.create_default_context(cafile=str(cert)))
                client.sendmail("", [return_path(SECRET, "7" * 16, subscriber.id)],
                                sample("gmail_hard", SECRET, "7" * 16, subscriber.id, "reader00000@example.org"))
        finally:
            controller.stop()
        assert storage.active_suppression(subscriber.id).reason == "hard-bounce"
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        load_config(set_config(project, **{"bounces.receiver.tls_key": None}))

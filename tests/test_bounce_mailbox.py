"""The bounce mailbox on a real Dovecot IMAP server on loopback: hand-written DSNs in the styles of
RFC 3464, Postfix, Exim, Exchange and Gmail, an ARF complaint, a delay notice, an auto-reply, a forged
bounce and a mailto unsubscribe; each message is counted once, however often the mailbox is read."""

from __future__ import annotations

import pytest

from pipeline import usecases
from pipeline.bounces.mailbox import PROCESSED_KEYWORD
from pipeline.config import load_config
from pipeline.state.storage import StoredDigest
from pipeline.usecases import open_storage

from .bounce_helpers import BOUNCE_DOMAIN, HARD_SAMPLES, sample
from .conftest import SECRET, add_subscribers, run_cli, set_config
from .imap_server import append, require_dovecot, start_dovecot, stop_dovecot

EDITION = "5eed5eed5eed5eed"


@pytest.fixture
def dovecot():
    require_dovecot()
    server = start_dovecot()
    try:
        yield server
    finally:
        stop_dovecot(server)


@pytest.fixture
def mailbox_config(project, secret, dovecot, monkeypatch):
    monkeypatch.setenv("PIPELINE_BOUNCE_PASSWORD", dovecot.password)
    set_config(project, **{"bounces.domain": BOUNCE_DOMAIN,
                           "bounces.mailbox": {"protocol": "imap", "host": dovecot.host, "port": dovecot.port,
                                               "security": "none", "username": dovecot.user},
                           "schedule.jobs.read-bounces": {"cron": "*/5 * * * *", "action": "bounces"}})
    config = load_config(project / "config.yaml")
    add_subscribers(config, 10)
    with open_storage(config) as storage:
        storage.create_edition(EDITION, ["item-a"], StoredDigest("s", "<p>h</p>", "t"))
    return config


def _ids(config) -> dict[str, int]:
    with open_storage(config) as storage:
        return {sub.email: sub.id for sub in storage.iter_subscribers()}


def test_reading_the_mailbox_suppresses_the_right_addresses_and_a_second_read_counts_nothing(
        project, dovecot, mailbox_config):
    config = mailbox_config
    ids = _ids(config)
    hard = {name: f"reader{n:05d}@example.org" for n, name in enumerate(HARD_SAMPLES)}  # readers 0-4
    for name, email in hard.items():
        append(dovecot, sample(name, SECRET, EDITION, ids[email], email))
    append(dovecot, sample("arf_complaint", SECRET, EDITION, ids["reader00005@example.org"], "reader00005@example.org"))
    append(dovecot, sample("gmail_delay_soft", SECRET, EDITION, ids["reader00006@example.org"],
                           "reader00006@example.org"))
    append(dovecot, sample("out_of_office", SECRET, EDITION, ids["reader00007@example.org"], "reader00007@example.org"))
    append(dovecot, sample("mailto_unsubscribe", SECRET, EDITION, 0, "reader00008@example.org"))
    forged = sample("exim_hard", "not-our-secret-0123456789", EDITION, ids["reader00009@example.org"],
                    "reader00009@example.org")
    append(dovecot, forged)

    first = run_cli(project, "bounces", "fetch", check=True)
    assert "10 new messages (0 seen before)" in first.stdout, first.stdout
    with open_storage(config) as storage:
        assert storage.suppression_counts() == {"hard-bounce": 5, "complaint": 1}
        for email in hard.values():
            assert storage.active_suppression(ids[email]).reason == "hard-bounce", email
        assert storage.get_subscriber("reader00005@example.org").status == "unsubscribed"
        assert storage.active_suppression(ids["reader00005@example.org"]).reason == "complaint"
        assert storage.active_suppression(ids["reader00006@example.org"]) is None  # one soft bounce: counted only
        assert [e.kind for e in storage.bounce_history(ids["reader00006@example.org"])[0]] == ["soft"]
        assert storage.bounce_history(ids["reader00007@example.org"])[0] == []  # an auto-reply is nothing
        assert storage.get_subscriber("reader00008@example.org").status == "unsubscribed"
        assert storage.active_suppression(ids["reader00008@example.org"]) is None
        assert storage.bounce_history(ids["reader00009@example.org"]) == ([], [])  # the forged bounce
        events_before = sum(len(storage.bounce_history(i)[0]) for i in ids.values())

    second = run_cli(project, "bounces", "fetch", check=True)
    assert "0 new messages" in second.stdout and "nothing to do" in second.stdout
    with open_storage(config) as storage:
        assert sum(len(storage.bounce_history(i)[0]) for i in ids.values()) == events_before
        assert storage.suppression_counts() == {"hard-bounce": 5, "complaint": 1}

    import imap_tools

    with imap_tools.MailBoxUnencrypted(dovecot.host, dovecot.port).login(dovecot.user, dovecot.password) as box:
        assert len(box.uids(imap_tools.AND(keyword=PROCESSED_KEYWORD))) == 10  # marked, never deleted
        assert box.uids(imap_tools.AND(no_keyword=PROCESSED_KEYWORD)) == []


def test_the_scheduled_job_reads_new_messages_only_and_records_a_run(project, dovecot, mailbox_config):
    config = mailbox_config
    ids = _ids(config)
    append(dovecot, sample("gmail_hard", SECRET, EDITION, ids["reader00001@example.org"], "reader00001@example.org"))
    outcome = usecases.run(config, job="read-bounces")
    assert outcome.notes == {"bounce_messages": 1, "bounce_outcomes": {"suppressed": 1}}
    append(dovecot, sample("postfix_hard", SECRET, EDITION, ids["reader00002@example.org"], "reader00002@example.org"))
    again = usecases.run(config, job="read-bounces")
    assert again.notes == {"bounce_messages": 1, "bounce_outcomes": {"suppressed": 1}}
    append(dovecot, sample("exim_hard", SECRET, EDITION, ids["reader00003@example.org"], "reader00003@example.org"))
    by_cron = run_cli(project, "run", "--job", "read-bounces", check=True)  # what cron and timers run
    assert by_cron.stdout.strip() == "bounce mailbox: 1 new messages: suppressed 1"
    with open_storage(config) as storage:
        runs = storage.recent_runs(3)[1:]
        assert [(r.job, r.status, r.summary["bounce_messages"]) for r in runs] == [("read-bounces", "ok", 1)] * 2
        assert storage.suppression_counts() == {"hard-bounce": 3}


def test_a_wrong_password_is_one_clear_error(project, dovecot, mailbox_config, monkeypatch):
    monkeypatch.setenv("PIPELINE_BOUNCE_PASSWORD", "wrong-password")
    result = run_cli(project, "bounces", "fetch")
    assert result.returncode == 1 and result.stderr.startswith("Error: bounce mailbox 127.0.0.1:")
    assert "wrong-password" not in result.stderr + result.stdout


def test_the_mailbox_can_be_read_over_pop3_too(project, dovecot, mailbox_config):
    config = load_config(set_config(project, **{"bounces.mailbox.protocol": "pop3",
                                                 "bounces.mailbox.port": dovecot.pop3_port}))
    ids = _ids(config)
    append(dovecot, sample("exim_hard", SECRET, EDITION, ids["reader00003@example.org"], "reader00003@example.org"))
    append(dovecot, sample("arf_complaint", SECRET, EDITION, ids["reader00004@example.org"], "reader00004@example.org"))
    first = usecases.fetch_bounces(config)
    assert (first.fetched, first.already, first.counts()) == (2, 0, {"suppressed": 1, "unsubscribed, suppressed": 1})
    append(dovecot, sample("gmail_delay_soft", SECRET, EDITION, ids["reader00005@example.org"],
                           "reader00005@example.org"))
    second = usecases.fetch_bounces(config)
    assert (second.fetched, second.already, second.counts()) == (1, 2, {"counted": 1})
    with open_storage(config) as storage:
        assert storage.suppression_counts() == {"hard-bounce": 1, "complaint": 1}

"""The state database: schema versions, and ledger claims that several workers can share."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy.dialects import postgresql

from pipeline.state.storage import SCHEMA_VERSION, Storage, StoredDigest, claim_statement


def _storage(backend) -> Storage:
    if backend.name == "sqlite":
        Path(backend.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return Storage(backend.url)


def test_a_new_database_is_migrated_to_the_current_schema_once(backend):
    first = _storage(backend)
    assert first.schema_version() == SCHEMA_VERSION
    first.close()
    again = _storage(backend)  # opening again changes nothing
    assert again.schema_version() == SCHEMA_VERSION
    again.close()


def test_claims_never_overlap_and_cover_every_row(backend):
    store = _storage(backend)
    store.merge_subscribers([(f"r{n}@example.org", None, {}) for n in range(25)])
    assert store.create_edition("e1", ["urn:x:1"], StoredDigest("Subject", "<p>x</p>", "x"))
    assert not store.create_edition("e1", ["urn:x:1"], StoredDigest("Subject", "<p>x</p>", "x"))  # a rerun of the same edition
    first = store.claim("e1", 10, "worker-a")
    second = store.claim("e1", 10, "worker-b")
    third = store.claim("e1", 10, "worker-c")
    ids = [c.subscriber_id for c in first + second + third]
    assert len(ids) == len(set(ids)) == 25
    assert store.claim("e1", 10, "worker-d") == []
    assert store.ledger_counts("e1")["sending"] == 25
    store.close()


def test_unsubscribing_skips_the_queued_message(backend):
    store = _storage(backend)
    store.merge_subscribers([("a@example.org", None, {}), ("b@example.org", None, {})])
    store.create_edition("e1", ["urn:x:1"], StoredDigest("Subject", "<p>x</p>", "x"))
    store.unsubscribe("b@example.org")
    assert store.ledger_counts("e1") == {"pending": 1, "sending": 0, "sent": 0, "failed": 0, "deferred": 0,
                                         "skipped": 1}
    assert [c.email for c in store.claim("e1", 10, "w")] == ["a@example.org"]
    store.close()


def test_on_postgresql_the_claim_skips_rows_other_workers_hold():
    statement = claim_statement("e1", 10, "worker-a", datetime(2021, 11, 4, tzinfo=timezone.utc))
    sql = " ".join(str(statement.compile(dialect=postgresql.dialect())).split())
    assert "UPDATE deliveries SET status=" in sql
    assert "FOR UPDATE SKIP LOCKED" in sql and sql.endswith("RETURNING deliveries.subscriber_id, deliveries.attempts, "
                                                                "deliveries.first_attempt_at")


def test_an_unsubscribe_withdraws_a_row_a_sender_already_claimed(backend):
    store = _storage(backend)
    store.merge_subscribers([("a@example.org", None, {}), ("b@example.org", None, {})])
    store.create_edition("e1", ["urn:x:1"], StoredDigest("Subject", "<p>x</p>", "x"))
    claims = {c.email: c for c in store.claim("e1", 10, "w1")}
    store.unsubscribe("b@example.org")
    assert store.begin_attempt(claims["a@example.org"]) is True
    assert store.begin_attempt(claims["b@example.org"]) is False  # the sender must not send it
    assert store.ledger_counts("e1")["skipped"] == 1
    store.close()


def test_only_the_worker_that_holds_a_row_records_its_outcome(backend):
    from pipeline.state.storage import SENT, Outcome

    store = _storage(backend)
    store.merge_subscribers([("a@example.org", None, {})])
    store.create_edition("e1", ["urn:x:1"], StoredDigest("Subject", "<p>x</p>", "x"))
    (claim,) = store.claim("e1", 10, "w1")
    impostor = type(claim)(claim.edition_id, claim.subscriber_id, claim.email, claim.attempts, "w2")
    store.record_results([Outcome(impostor, SENT, "250 OK", 1)])
    assert store.ledger_counts("e1")["sending"] == 1  # w2 does not own it: nothing changed
    store.record_results([Outcome(claim, SENT, "250 OK", 1)])
    assert store.ledger_counts("e1")["sent"] == 1
    store.close()
def _claim_plan(store: Storage) -> str:
    from datetime import datetime, timezone

    statement = claim_statement("e1", 500, "w1", datetime.now(timezone.utc), store.dialect)
    compiled = statement.compile(dialect=store.engine.dialect)
    explain = "EXPLAIN QUERY PLAN" if store.dialect == "sqlite" else "EXPLAIN"
    args = tuple(compiled.params[name] for name in compiled.positiontup) if compiled.positional else compiled.params
    with store.engine.begin() as conn:
        rows = conn.exec_driver_sql(f"{explain} {compiled}", args).all()
        conn.rollback()
    return "\n".join(str(row[-1]) for row in rows)


def test_claims_read_the_unsettled_rows_index_however_many_rows_were_sent(backend):
    """Constant-time claims: the subquery walks the partial index of unsettled rows in subscriber
    order, never the rows already sent (EXPLAIN on SQLite and PostgreSQL)."""
    from sqlalchemy import text

    store = _storage(backend)
    try:
        store.merge_subscribers([(f"r{n:05d}@example.org", None, {}) for n in range(20_000)])
        store.create_edition("e1", ["urn:x:1"], StoredDigest("S", "<p>x</p>", "x"))
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE deliveries SET status = 'sent' WHERE subscriber_id % 20 <> 0"))
            conn.execute(text("ANALYZE"))
        plan = _claim_plan(store)
        assert "deliveries_unsettled" in plan, plan
        claims = store.claim("e1", 500, "w1")
        assert len(claims) == 500 and all(c.subscriber_id % 20 == 0 for c in claims)
    finally:
        store.close()


def test_a_schema_4_database_gets_the_unsettled_rows_index(backend):
    from sqlalchemy import inspect, text

    store = _storage(backend)
    with store.engine.begin() as conn:
        conn.execute(text("DROP INDEX deliveries_unsettled"))
        conn.execute(text("UPDATE schema_info SET version = 4"))
    store.close()
    store = _storage(backend)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        with store.engine.connect() as conn:
            assert "deliveries_unsettled" in {i["name"] for i in inspect(conn).get_indexes("deliveries")}
    finally:
        store.close()


def test_a_ledger_write_that_fails_halfway_changes_nothing(backend, monkeypatch):
    """record_and_begin is one transaction: the outcome is not stored if beginning the next fails."""
    import pytest

    from pipeline.state.storage import SENT, Outcome

    store = _storage(backend)
    store.merge_subscribers([("a@example.org", None, {}), ("b@example.org", None, {})])
    store.create_edition("e1", ["urn:x:1"], StoredDigest("Subject", "<p>x</p>", "x"))
    first, second = store.claim("e1", 10, "w1")
    assert store.begin_attempt(first)
    begin = store._prepared()[1]
    monkeypatch.setattr(begin, "run", lambda cursor, params: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError):
        store.record_and_begin(Outcome(first, SENT, "250 OK", 1), second)
    monkeypatch.undo()
    assert store.ledger_counts("e1")["sending"] == 2 and store.ledger_counts("e1")["sent"] == 0
    assert store.record_and_begin(Outcome(first, SENT, "250 OK", 1), second)  # the connection went back clean
    assert store.ledger_counts("e1")["sent"] == 1
    store.close()


def test_a_processed_key_is_claimed_once_on_either_database(backend):
    """Webhook events, bounce mails and form stamps are handled once: the second claim of a key fails
    (on PostgreSQL the driver reports -1 rows for a skipped insert, so the claim reads RETURNING)."""
    storage = _storage(backend)
    try:
        assert storage.mark_processed("webhook:mailgun-token", "5f1c0e") is True
        assert storage.mark_processed("webhook:mailgun-token", "5f1c0e") is False
        assert storage.mark_processed("form-stamp", "5f1c0e") is True  # another source, another key
    finally:
        storage.close()

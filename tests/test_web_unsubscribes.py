"""Many one-click unsubscribes at once: each answered only once stored, each recorded once, none lost."""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from datetime import datetime, timezone

import pytest

from pipeline.mail.tokens import make_token
from pipeline.service.web import make_web_server
from pipeline.state.unsubscribes import UnsubscribeGroups
from pipeline.usecases import open_storage

from .conftest import SECRET

ONE_CLICK = b"List-Unsubscribe=One-Click"


@pytest.fixture
def server(config, secret):
    storage = open_storage(config)
    web = make_web_server(config, storage, "127.0.0.1", 0)
    thread = threading.Thread(target=web.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield web.server_port, storage
    web.shutdown()
    web.server_close()
    storage.close()


def _post_all(port: int, addresses: list[str], clients: int = 8) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()

    def client(mine: list[str]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for address in mine:
            token = urllib.parse.urlencode({"token": make_token(SECRET.encode(), address)})
            connection.request("POST", f"/unsubscribe?{token}", body=ONE_CLICK,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
            response = connection.getresponse()
            response.read()
            with lock:
                statuses.append(response.status)
        connection.close()

    threads = [threading.Thread(target=client, args=(addresses[n::clients],)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_concurrent_one_click_posts_are_all_stored_with_one_consent_event_each(server):
    port, storage = server
    readers = [f"reader{n:03d}@mesems.example.org" for n in range(60)]
    for address in readers:
        storage.add_subscriber(address)
    statuses = _post_all(port, readers + readers[:20])  # 20 readers press the button twice
    assert statuses == [200] * 80
    assert {storage.get_subscriber(a).status for a in readers} == {"unsubscribed"}
    ids = storage.ids_for(readers)
    histories = storage.consent_histories(list(ids.values()))
    assert all([(e.action, e.method) for e in histories[i]] == [("unsubscribe", "one-click")] for i in ids.values())


def test_a_group_keeps_the_rules_of_a_single_unsubscribe(config, secret):
    storage = open_storage(config)
    now = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    storage.add_subscriber("ada@mesems.example.org")
    _state, pending = storage.start_signup("grace@mesems.example.org", None, "", now)
    groups = UnsubscribeGroups(storage)
    assert groups.unsubscribe("ada@mesems.example.org", "one-click", now) is True
    assert groups.unsubscribe("ada@mesems.example.org", "one-click", now) is False  # already: nothing recorded
    assert groups.unsubscribe("grace@mesems.example.org", "one-click", now) is True  # pending: withdrawn
    assert groups.unsubscribe("nobody@mesems.example.org", "one-click", now) is False
    assert storage.profile(email="grace@mesems.example.org").status == "unsubscribed"
    ada = storage.profile(email="ada@mesems.example.org")
    assert ada.status == "unsubscribed"
    histories = storage.consent_histories([ada.id, pending.id])
    assert [(e.method, e.at) for e in histories[ada.id]] == [("one-click", now)]
    assert ada.unsubscribed_at == now
    assert [e.action for e in histories[pending.id]] == ["unsubscribe"]
    storage.close()


def test_one_group_of_mixed_requests_keeps_every_rule_at_once(config, secret):
    """Requests that arrive during a commit are committed together, each statement over the whole group:
    a subscriber's queued message is skipped, a pending signup withdrawn, a repeat and a stranger change
    nothing, and each change has its one consent event at its own request's time."""
    from pipeline.state.storage import StoredDigest
    from pipeline.state.unsubscribes import _Request

    storage = open_storage(config)
    now = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    storage.merge_subscribers([("ada@mesems.example.org", None, {}), ("lin@mesems.example.org", None, {})])
    storage.create_edition("e1", ["urn:mesems:1"], StoredDigest("MESEMS trial", "<p>x</p>", "x"))
    _state, grace = storage.start_signup("grace@mesems.example.org", None, "", now)
    group = [_Request("ada@mesems.example.org", "one-click", now),
             _Request("grace@mesems.example.org", "one-click", now.replace(second=1)),
             _Request("ada@mesems.example.org", "one-click", now.replace(second=2)),  # pressed twice
             _Request("nobody@mesems.example.org", "one-click", now)]
    UnsubscribeGroups(storage)._commit(group)
    assert [(request.done, request.changed) for request in group] == [(True, True), (True, True), (True, False),
                                                                      (True, False)]
    assert storage.ledger_counts("e1")["skipped"] == 1 and storage.ledger_counts("e1")["pending"] == 1  # lin's
    assert {storage.profile(email=a).status for a in ("ada@mesems.example.org", "grace@mesems.example.org")} == \
        {"unsubscribed"}
    ada = storage.profile(email="ada@mesems.example.org")
    histories = storage.consent_histories([ada.id, grace.id])
    assert [(e.action, e.at) for e in histories[ada.id]] == [("unsubscribe", now)]
    assert [(e.action, e.at) for e in histories[grace.id]][-1] == ("unsubscribe", now.replace(second=1))
    storage.close()

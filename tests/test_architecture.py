"""The state layer stays in small pieces: one store per domain, each module and class small enough to read."""

import ast
from pathlib import Path

import pipeline.state

STATE = Path(pipeline.state.__file__).parent


def _methods(cls: ast.ClassDef) -> list[str]:
    return [node.name for node in cls.body if isinstance(node, ast.FunctionDef)]


def test_every_state_module_is_at_most_500_lines():
    sizes = {path.name: len(path.read_text().splitlines()) for path in STATE.glob("*.py")}
    assert {name: size for name, size in sizes.items() if size > 500} == {}


def test_every_store_class_defines_at_most_25_methods():
    counts = {}
    for path in STATE.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                counts[f"{path.name}:{node.name}"] = len(_methods(node))
    assert {name: n for name, n in counts.items() if n > 25} == {}
    assert counts["ledger.py:LedgerStore"] >= 10  # the split classes are found, not an empty walk


def test_storage_is_the_facade_of_the_domain_stores():
    from pipeline.state.bounce_store import BounceStore
    from pipeline.state.edition_store import EditionStore
    from pipeline.state.ledger import LedgerStore
    from pipeline.state.signup_store import SignupStore
    from pipeline.state.source_store import SourceStore
    from pipeline.state.storage import Storage
    from pipeline.state.subscriber_store import SubscriberStore

    stores = (SubscriberStore, SignupStore, EditionStore, LedgerStore, BounceStore, SourceStore)
    assert all(issubclass(Storage, store) for store in stores)
    assert Storage.claim is LedgerStore.claim and Storage.record_bounce_event is BounceStore.record_bounce_event

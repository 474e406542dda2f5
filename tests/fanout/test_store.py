"""The fan-out's memory store remembers how far its partitions are in their changelogs, so a
rebalance that gives a partition back reads only what was written since (services/fanout/store.py).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from services.fanout.faust_compat import App
from services.fanout.store import SCHEME, MemoryStore

CHANGELOG = "t-registry-changelog"


def _event(partition: int, offset: int, key: str, value: dict[str, Any] | None) -> Any:
    message = SimpleNamespace(tp=TP(CHANGELOG, partition), partition=partition, offset=offset,
                              value=None if value is None else b"{}")
    return SimpleNamespace(key=key, value=value, message=message)


def _store() -> MemoryStore:
    app = App("store-test", store=f"{SCHEME}://", web_enabled=False, autodiscover=False)
    table = app.Table("registry", partitions=2)
    store = table.data
    assert isinstance(store, MemoryStore)
    return store


def test_a_new_store_has_read_nothing() -> None:
    assert _store().persisted_offset(TP(CHANGELOG, 0)) is None


def test_recovery_and_acknowledged_writes_move_the_offset_forward_only() -> None:
    store = _store()
    store.apply_changelog_batch(
        [_event(0, 4, "E1", {"n": 1}), _event(0, 7, "E2", {"n": 2}), _event(1, 2, "E3", None)],
        to_key=lambda k: k, to_value=lambda v: v)
    assert store["E2"] == {"n": 2} and "E3" not in store
    assert store.persisted_offset(TP(CHANGELOG, 0)) == 7
    assert store.persisted_offset(TP(CHANGELOG, 1)) == 2
    store.set_persisted_offset(TP(CHANGELOG, 0), 12)  # the fan-out's own write, acknowledged
    store.set_persisted_offset(TP(CHANGELOG, 0), 9)  # an older report changes nothing
    assert store.persisted_offset(TP(CHANGELOG, 0)) == 12


def test_a_partition_taken_away_is_read_from_the_start_when_it_comes_back() -> None:
    store = _store()
    store.apply_changelog_batch([_event(0, 3, "E1", {"n": 1}), _event(1, 5, "E2", {"n": 2})],
                                to_key=lambda k: k, to_value=lambda v: v)
    asyncio.run(store.on_recovery_completed({TP(CHANGELOG, 0)}, set()))
    assert store.persisted_offset(TP(CHANGELOG, 0)) == 3
    assert store.persisted_offset(TP(CHANGELOG, 1)) is None
    assert "E2" not in store  # faust dropped its keys: nothing may claim to hold them

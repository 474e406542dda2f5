"""RecentIds (services/correlator/recent.py): the correlator's fixed-memory recent job ids.

Checked against a reference model, an OrderedDict in first-remembered order (remember = set,
which keeps a held key's place; evict from the oldest end past capacity), with capacities small
enough that ids share home slots of the index and the backward-shift deletion runs on every
eviction."""

from __future__ import annotations

import random
import tracemalloc
from collections import OrderedDict

import pytest

from services.correlator.recent import RecentIds

TAGS = ("DEAD_LETTERED", "FAILED")


def test_evicts_the_oldest_first_at_capacity() -> None:
    ids = RecentIds(3)
    for job in ("a", "b", "c", "d"):
        ids.remember(job)
    assert [job in ids for job in ("a", "b", "c", "d")] == [False, True, True, True]
    assert len(ids) == 3


def test_remembering_again_keeps_an_ids_place() -> None:
    ids = RecentIds(3)
    for job in ("a", "b", "c", "a", "d"):
        ids.remember(job)
    # "a" was first remembered before "b": it is the oldest and goes first.
    assert ["a" in ids, "b" in ids, "c" in ids, "d" in ids] == [False, True, True, True]
    assert len(ids) == 3


def test_keeps_the_last_tag_of_each_id() -> None:
    ids = RecentIds(4, TAGS)
    ids.remember("j1", "FAILED")
    ids.remember("j2", "DEAD_LETTERED")
    ids.remember("j1", "DEAD_LETTERED")
    assert (ids.get("j1"), ids.get("j2"), ids.get("j3")) == ("DEAD_LETTERED", "DEAD_LETTERED",
                                                            None)
    with pytest.raises(KeyError):
        ids.remember("j4", "SENT")


def test_refuses_a_capacity_below_one() -> None:
    with pytest.raises(ValueError, match="capacity"):
        RecentIds(0)


@pytest.mark.parametrize("capacity", [1, 2, 7, 64, 1000])
def test_matches_the_ordered_dict_it_replaces(capacity: int) -> None:
    rng = random.Random(capacity)
    ids = RecentIds(capacity, TAGS)
    model: OrderedDict[str, str | None] = OrderedDict()
    universe = [f"req-{n}/E{n % 97}" for n in range(capacity * 3 + 5)]
    for step in range(capacity * 40 + 200):
        job = rng.choice(universe)
        tag = rng.choice((None, *TAGS))
        ids.remember(job, tag)
        model[job] = tag
        while len(model) > capacity:
            model.popitem(last=False)
        if step % 7 == 0:
            assert len(ids) == len(model)
            for probe in rng.sample(universe, min(len(universe), 20)):
                assert (probe in ids) == (probe in model), (step, probe)
                assert ids.get(probe) == model.get(probe), (step, probe)
    assert {job for job in universe if job in ids} == set(model)


def test_no_id_outside_the_window_is_taken_for_one_inside() -> None:
    ids = RecentIds(50_000)
    for n in range(120_000):
        ids.remember(f"request-{n}/enrollment-{n}")
    held = [n for n in range(120_000) if f"request-{n}/enrollment-{n}" in ids]
    assert held == list(range(70_000, 120_000))
    assert not any(f"other-{n}/enrollment-{n}" in ids for n in range(100_000))


def test_memory_is_allocated_once_at_construction() -> None:
    tracemalloc.start()
    try:
        ids = RecentIds(5_000, TAGS)
        built = tracemalloc.get_traced_memory()[0]
        for n in range(20_000):
            ids.remember(f"request-{n}/enrollment-{n}", TAGS[n % 2])
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # 8 + 1 bytes of ring and 2 x 4 bytes of index per id of capacity; the loop's own
    # temporaries are freed by the end.
    assert built >= 5_000 * 17
    assert after - built < 4096

"""Once set up, the agent keeps the cyclic collector off its start-up objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from otelbpf.agent import GC_YOUNG_THRESHOLD, settle_garbage_collector


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    older = gc.get_threshold()[1:]
    kept = [object() for _ in range(3)], {"a": [1]}  # objects alive at start-up
    settle_garbage_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *older)
    assert not any(gc.is_tracked(x) and x in gc.get_objects(0) for x in kept)


@pytest.mark.usefixtures("restored_gc")
def test_cycles_made_later_are_still_collected() -> None:
    settle_garbage_collector()

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    first, second = Node(), Node()
    first.other, second.other = second, first
    del first, second
    assert gc.collect() >= 2

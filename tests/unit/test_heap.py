"""A settled process sets its start-up heap aside and still collects what it makes later."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from skyloom.core import heap


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored")
def test_settle_sets_the_heap_aside_and_later_cycles_are_still_collected() -> None:
    kept = [object() for _ in range(10)]
    heap.settle()
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, heap.OLDER_THRESHOLD, heap.OLDER_THRESHOLD)

    class Node:
        other: object

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle made after settling
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None

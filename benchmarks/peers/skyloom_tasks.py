"""Skyloom's side of the workloads: the task functions, in a module the workers import by name."""

from __future__ import annotations

from typing import Any

import skyloom
from benchmarks.peers import common


@skyloom.task
def work(seconds: float) -> int:
    return common.work(seconds)


@skyloom.task
def add(a: int, b: int) -> int:
    return a + b


@skyloom.task
def tree_sum(lo: int, hi: int, leaf: int) -> Any:
    """A recursive task: a leaf sums its range, an inner node submits its two halves and a join
    that takes over its output (delegation)."""
    if hi - lo <= leaf:
        return sum(range(lo, hi))
    mid = (lo + hi) // 2
    return add.submit(tree_sum.submit(lo, mid, leaf), tree_sum.submit(mid, hi, leaf))

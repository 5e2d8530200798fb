"""Dask's side of the workloads: task functions in a module the workers import by name."""

from __future__ import annotations

from distributed import worker_client

from benchmarks.peers import common


def work(seconds: float) -> int:
    return common.work(seconds)


def add(a: int, b: int) -> int:
    return a + b


def tree_sum(lo: int, hi: int, leaf: int) -> int:
    """A leaf sums its range; an inner node submits its two halves and a join from the worker
    (``worker_client`` secedes from the worker's thread pool while it waits), as Dask documents for
    tasks that launch tasks."""
    if hi - lo <= leaf:
        return sum(range(lo, hi))
    mid = (lo + hi) // 2
    with worker_client() as client:
        left = client.submit(tree_sum, lo, mid, leaf, pure=False)
        right = client.submit(tree_sum, mid, hi, leaf, pure=False)
        value: int = client.submit(add, left, right, pure=False).result()
        return value

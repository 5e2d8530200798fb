"""Dask's driver: a ``LocalCluster`` of N worker processes with one thread each, on loopback, no
dashboard, started and closed here. ``client.submit(..., pure=False)`` per task (identical zero-work
calls would otherwise share one key) and ``client.gather``. Runs in ``benchmarks/.peer-venv/dask``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from distributed import Client, LocalCluster

from benchmarks.peers import common, dask_tasks


class DaskSystem:
    def __init__(self, client: Client) -> None:
        self._client = client

    def wait_ready(self, workers: int, timeout: float) -> None:
        self._client.wait_for_workers(workers, timeout=min(timeout, 120.0))

    def run_batch(self, n: int, seconds: float, timeout: float) -> Sequence[Any]:
        futures = [self._client.submit(dask_tasks.work, seconds, pure=False) for _ in range(n)]
        values: list[Any] = self._client.gather(futures)
        return values

    def tree_sum(self, lo: int, hi: int, leaf: int, timeout: float) -> int:
        value: int = self._client.submit(dask_tasks.tree_sum, lo, hi, leaf, pure=False).result(timeout=timeout)
        return value


@contextmanager
def start(args: argparse.Namespace) -> Iterator[DaskSystem]:
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield DaskSystem(client)


if __name__ == "__main__":
    sys.exit(common.main(start))

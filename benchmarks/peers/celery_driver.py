"""Celery's driver: the client side. The orchestrator (``benchmarks/side_by_side.py``) starts the
emulator, Redis and the ``celery worker`` processes, and tells this driver where they are through
the environment read by :mod:`benchmarks.peers.celery_app`.

Submission: one ``delay()`` per task; gathering: ``AsyncResult.get()`` of each, in order (the
Redis backend subscribes to each result when the task is sent, so a value already in is not fetched
again). Not ``ResultSet.get()``/``GroupResult.get()``: their join polls every 0.5 s by default,
which adds ~0.5 s to every batch here. Runs in ``benchmarks/.peer-venv/celery``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.peers import common
from benchmarks.peers.celery_app import app, tree_sum, work


class CelerySystem:
    def wait_ready(self, workers: int, timeout: float) -> None:
        ready_dir = Path(os.environ["SIDE_BY_SIDE_READY_DIR"])
        for _ in common.deadline_iter(min(timeout, 120.0)):
            if len(list(ready_dir.glob("ready-*"))) >= workers:
                return
        raise TimeoutError(f"{workers} Celery workers did not report ready in {ready_dir}")

    def run_batch(self, n: int, seconds: float, timeout: float) -> Sequence[Any]:
        results = [work.delay(seconds) for _ in range(n)]
        end = time.monotonic() + timeout
        return [r.get(timeout=max(0.001, end - time.monotonic())) for r in results]

    def tree_sum(self, lo: int, hi: int, leaf: int, timeout: float) -> int:
        value: int = tree_sum.delay(lo, hi, leaf).get(timeout=timeout)
        return value


@contextmanager
def start(args: argparse.Namespace) -> Iterator[CelerySystem]:
    try:
        yield CelerySystem()
    finally:
        app.close()


if __name__ == "__main__":
    sys.exit(common.main(start))

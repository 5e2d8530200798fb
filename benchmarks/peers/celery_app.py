"""Celery's side of the workloads: the app (its defaults, but for where the broker and the result
backend are) and its tasks. Workers run ``celery -A benchmarks.peers.celery_app worker -c 1``.

Broker: SQS on the emulator ``benchmarks/side_by_side.py`` starts (the moto server Skyloom's local
stack runs, on a loopback port), reached over plain HTTP (``is_secure``: the emulator has no TLS).
Result backend: Redis on a loopback port. Both come from the environment:

- ``SIDE_BY_SIDE_SQS``: ``host:port`` of the emulator;
- ``SIDE_BY_SIDE_REDIS``: the Redis URL;
- ``SIDE_BY_SIDE_READY_DIR``: where each worker drops a file once it consumes (``worker_ready``),
  so that the driver starts no clock before every worker is up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery, chord
from celery.signals import worker_ready

from benchmarks.peers import common

#: Any key works on the emulator; these are the local stack's dummy ones.
ACCESS_KEY, SECRET_KEY = "skyloom-local", "skyloom-local-secret"

app = Celery("side_by_side")
app.conf.update(
    broker_url=f"sqs://{ACCESS_KEY}:{SECRET_KEY}@{os.environ.get('SIDE_BY_SIDE_SQS', '127.0.0.1:5000')}",
    broker_transport_options={"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"), "is_secure": False},
    result_backend=os.environ.get("SIDE_BY_SIDE_REDIS", "redis://127.0.0.1:6379/0"),
)


@app.task
def work(seconds: float) -> int:
    return common.work(seconds)


@app.task
def add_pair(values: list[int]) -> int:
    return sum(values)


@app.task(bind=True)
def tree_sum(self: Any, lo: int, hi: int, leaf: int) -> Any:
    """A leaf sums its range; an inner node replaces itself by a chord of its two halves and a join
    (the chord's body takes over this task's id, so the caller's result is the join's)."""
    if hi - lo <= leaf:
        return sum(range(lo, hi))
    mid = (lo + hi) // 2
    return self.replace(chord([tree_sum.s(lo, mid, leaf), tree_sum.s(mid, hi, leaf)], add_pair.s()))


@worker_ready.connect
def _announce_ready(sender: Any = None, **_: Any) -> None:
    ready_dir = os.environ.get("SIDE_BY_SIDE_READY_DIR")
    if ready_dir:
        Path(ready_dir, f"ready-{os.getpid()}").touch()

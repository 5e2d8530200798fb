"""Wall-clock time and fresh ids in one place, so timers and leases agree and tests can reason about them."""

from __future__ import annotations

import random
import time
import uuid
import zlib


def now() -> float:
    return time.time()


def new_id() -> str:
    """A random id, valid for every kind of object (session, task, result) on both sides of the API."""
    return uuid.uuid4().hex


def backoff(attempt: int, bounds: tuple[float, float]) -> float:
    """The pause after failed try ``attempt`` (1-based): doubling from ``bounds[0]`` up to
    ``bounds[1]``, drawn from the upper half so that callers who failed together do not retry
    together."""
    ceiling = min(bounds[1], bounds[0] * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + random.random() * ceiling / 2


def due_shard(task_id: str, shards: int) -> str:
    """Stable shard of the timer index for a task (crc32 spreads uuid-like ids evenly)."""
    return str(zlib.crc32(task_id.encode()) % shards)

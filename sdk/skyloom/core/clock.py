"""Wall-clock time in one place, so timers and leases agree and tests can reason about them."""

from __future__ import annotations

import time
import uuid
import zlib


def now() -> float:
    return time.time()


def new_id() -> str:
    return uuid.uuid4().hex


def due_shard(task_id: str, shards: int) -> str:
    """Stable shard of the timer index for a task (crc32 spreads uuid-like ids evenly)."""
    return str(zlib.crc32(task_id.encode()) % shards)

"""What the end-to-end tests with a stack of their own share: starting workers again after a test
killed some, waiting for a condition, and a client signing with the local credentials."""

from __future__ import annotations

import time
from collections.abc import Callable

import skyloom
from skyloom.local import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, LocalStack

#: How long a test waits for what it expects of a stack before failing.
TIMEOUT = 120.0


def connect(stack: LocalStack) -> skyloom.Client:
    """A client of ``stack``, signing with the local credentials (the caller closes it)."""
    return skyloom.connect(stack.endpoint, credentials=(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY))


def wait_until(cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def wait_for_agents(stack: LocalStack, indexes: list[int] | None = None, *,
                    log_sizes: dict[int, int] | None = None) -> None:
    """Wait until each worker (all by default) has started its agent since its log had
    ``log_sizes[i]`` bytes: a test that wants one task per agent must not race one still booting."""
    pool = stack.workers
    for i in range(len(pool.pids)) if indexes is None else indexes:
        start = (log_sizes or {}).get(i, 0)
        wait_until(lambda i=i, start=start: b"agent starting" in _log(stack, i)[start:])  # type: ignore[misc]


def restart_and_wait(stack: LocalStack) -> None:
    """Start the workers a test killed, and wait until each has started its agent."""
    pool = stack.workers
    dead = [i for i in range(len(pool.pids)) if not pool.alive(i)]
    sizes = {i: len(_log(stack, i)) for i in dead}
    pool.start()
    wait_for_agents(stack, dead, log_sizes=sizes)


def _log(stack: LocalStack, index: int) -> bytes:
    path = stack.workers.log_path(index)
    return path.read_bytes() if path.exists() else b""

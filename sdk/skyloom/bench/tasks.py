"""The benchmark's task functions: zero-work, sleep or busy compute, and a nested fork-join.

Defined in an installed module (not ``__main__``) so that they are pickled by reference: a worker
imports them instead of unpickling code, as a user's installed package would be.
"""

from __future__ import annotations

import time
from typing import Any

import skyloom


def _work(mode: str, seconds: float) -> None:
    if seconds <= 0 or mode == "zero":
        return
    if mode == "sleep":
        time.sleep(seconds)
        return
    end = time.perf_counter() + seconds  # "compute": keep a core busy
    x = 0
    while time.perf_counter() < end:
        for i in range(1000):
            x += i * i


@skyloom.task
def work(payload: bytes, out_size: int, mode: str, seconds: float) -> bytes:
    """One unit of benchmark work: reads its payload, works, returns ``out_size`` bytes."""
    _work(mode, seconds)
    return bytes(out_size)


@skyloom.task
def join(*parts: bytes) -> int:
    """The fan-in of a fork-join: the total size of its inputs."""
    return sum(len(p) for p in parts)


@skyloom.task
def fork(n: int, payload: bytes, out_size: int, mode: str, seconds: float) -> Any:
    """A nested fork-join: ``n`` work subtasks and a join that takes over this task's output."""
    return join.submit(*[work.submit(payload, out_size, mode, seconds) for _ in range(n)])


@skyloom.task
def steps(n: int, seconds: float, checkpoints: bool, ledger: str) -> int:
    """A long task of the preemption benchmark: ``n`` steps of ``seconds`` each, each one noted as a
    byte appended to ``ledger`` (what the benchmark counts: steps run in all attempts). With
    ``checkpoints``, it checkpoints after every step and on a reclaim notice, and an attempt starts
    from the last checkpoint; without, every attempt starts over. Returns the steps of the last one."""
    done = int(skyloom.restore(default=0)) if checkpoints else 0
    first = done
    if checkpoints:
        skyloom.on_preempt(lambda: skyloom.checkpoint(done))
    while done < n:
        time.sleep(seconds)
        with open(ledger, "ab") as f:
            f.write(b".")
        done += 1
        if checkpoints:
            skyloom.checkpoint(done)
    return done - first

"""What every driver shares: the workloads, the one timing rule, and the report line.

Only the standard library here: this module runs in Skyloom's venv and in each peer's.

The timing rule, the same for every system: a workload's clock starts just before the first task is
submitted and stops once the client holds the value of every task it waits for (results received,
not only known to be done). Before any clock starts, the driver waits until all its workers are up
and runs one zero-work task round trip (warm-up), so start-up is never timed.

A driver provides a :class:`System`; :func:`main` parses the workload the orchestrator asked for,
runs it on that system, and prints one ``SIDE-BY-SIDE-RESULT {json}`` line on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

RESULT_PREFIX = "SIDE-BY-SIDE-RESULT "
WORKLOADS = ("throughput", "latency", "utilisation", "treesum")
#: Pause between two latency samples, so that each one meets an idle system.
LATENCY_GAP_SECONDS = 0.5
#: Samples of a lone task's latency at the least: each is cheap, and its p50 is the one noise moves
#: most (five samples gave 0.048-0.084 s on one stack where thirty gave 0.043-0.051).
LONE_TASK_SAMPLES = 20


# ------------------------------------------------------------------------- the tasks' bodies
def work(seconds: float) -> int:
    """One benchmark task: nothing (zero-work) or a sleep of ``seconds``."""
    if seconds > 0:
        time.sleep(seconds)
    return 0


def tree_tasks(lo: int, hi: int, leaf: int) -> int:
    """Tasks of the tree sum of ``range(lo, hi)``: each node is a task, each inner node adds one
    more (the join that sums its two halves). 0..512 with leaves of 8: 64 leaves, 63 inner nodes
    and 63 joins, 190 tasks."""
    if hi - lo <= leaf:
        return 1
    mid = (lo + hi) // 2
    return 2 + tree_tasks(lo, mid, leaf) + tree_tasks(mid, hi, leaf)


# ------------------------------------------------------------------------------ the interface
class System(Protocol):
    """One system under test, started by the driver (workers included) and ready to use."""

    def wait_ready(self, workers: int, timeout: float) -> None:
        """Return once ``workers`` workers are up and can take tasks."""

    def run_batch(self, n: int, seconds: float, timeout: float) -> Sequence[Any]:
        """Submit ``n`` independent :func:`work` tasks, then return the value of every one."""

    def tree_sum(self, lo: int, hi: int, leaf: int, timeout: float) -> int:
        """The value of the recursive tree sum of ``range(lo, hi)`` (see :func:`tree_tasks`)."""


StartSystem = Callable[[argparse.Namespace], AbstractContextManager[System]]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="One workload of the side-by-side benchmark on one system.")
    p.add_argument("--workload", choices=WORKLOADS, required=True)
    p.add_argument("--workers", type=int, default=2, help="worker processes, one task at a time each")
    p.add_argument("--tasks", type=int, default=1000, help="throughput and utilisation: tasks")
    p.add_argument("--seconds", type=float, default=0.0, help="each task's sleep (utilisation)")
    p.add_argument("--batches", default="1,10,100", help="latency: batch sizes")
    p.add_argument("--repeats", type=int, default=5,
                   help=f"latency: samples per batch size (a batch of 1: at least {LONE_TASK_SAMPLES})")
    p.add_argument("--tree", default="0,512,8", help="tree sum: lo,hi,leaf")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds any one wait may take")
    p.add_argument("--run-dir", default=None, help="where the system may write its logs")
    return p.parse_args(argv)


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


def pct(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[rank]


def run_workload(system: System, args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then time the workload as the module docstring says."""
    system.wait_ready(args.workers, args.timeout)
    warm = system.run_batch(1, 0.0, args.timeout)
    if len(warm) != 1:
        raise RuntimeError(f"warm-up returned {len(warm)} values")
    out: dict[str, Any] = {"workload": args.workload, "workers": args.workers}
    if args.workload in ("throughput", "utilisation"):
        seconds = args.seconds if args.workload == "utilisation" else 0.0
        values, wall = _timed(lambda: system.run_batch(args.tasks, seconds, args.timeout))
        if len(values) != args.tasks:
            raise RuntimeError(f"{len(values)} values for {args.tasks} tasks")
        out.update(tasks=args.tasks, task_seconds=seconds, wall_seconds=round(wall, 4),
                   tasks_per_s=round(args.tasks / wall, 2))
        if args.workload == "utilisation":
            out["utilisation"] = round(args.tasks * seconds / (args.workers * wall), 4)
    elif args.workload == "latency":
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
        out["batches"] = {}
        for batch in batches:
            samples: list[float] = []
            for _ in range(max(args.repeats, LONE_TASK_SAMPLES) if batch == 1 else args.repeats):
                time.sleep(LATENCY_GAP_SECONDS)
                values, wall = _timed(lambda b=batch: system.run_batch(b, 0.0, args.timeout))  # type: ignore[misc]
                if len(values) != batch:
                    raise RuntimeError(f"{len(values)} values for a batch of {batch}")
                samples.append(wall)
            out["batches"][str(batch)] = {
                "p50": round(pct(samples, 50), 4), "p90": round(pct(samples, 90), 4),
                "min": round(min(samples), 4), "max": round(max(samples), 4), "n": len(samples),
            }
    else:
        lo, hi, leaf = (int(x) for x in args.tree.split(","))
        value, wall = _timed(lambda: system.tree_sum(lo, hi, leaf, args.timeout))
        if value != sum(range(lo, hi)):
            raise RuntimeError(f"tree sum of {lo}..{hi} gave {value}, not {sum(range(lo, hi))}")
        out.update(tree=[lo, hi, leaf], tasks=tree_tasks(lo, hi, leaf), value=value, wall_seconds=round(wall, 4),
                   tasks_per_s=round(tree_tasks(lo, hi, leaf) / wall, 2))
    return out


def _sigterm_exits() -> None:
    """SIGTERM (the orchestrator stopping this driver) unwinds like Ctrl-C, so ``with`` blocks
    stop what they started."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(start: StartSystem, argv: Sequence[str] | None = None) -> int:
    _sigterm_exits()
    args = parse_args(argv)
    with start(args) as system:
        report = run_workload(system, args)
    print(RESULT_PREFIX + json.dumps(report), flush=True)
    return 0


def deadline_iter(timeout: float, step: float = 0.1) -> Iterator[float]:
    """Yields the time left, every ``step`` seconds, until ``timeout`` has passed."""
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        yield left
        time.sleep(step)


if __name__ == "__main__":  # pragma: no cover - a library
    sys.exit("run a driver: python -m benchmarks.peers.<system>_driver")

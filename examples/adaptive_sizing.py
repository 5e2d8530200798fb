"""Size Monte Carlo tasks from the history of earlier runs, so that each takes about a target time.

A bank's pricing library wants every task between ~0.5 s and ~30 s: shorter ones drown in overhead,
longer ones lose too much on a Spot reclaim. How many paths make 5 s depends on the trade (its
payoff, its maturity) and on the machine, and is only known once it has run. So each chunk of paths
records how long its paths took, and the task that sums a run's chunks records the run's time per
path under the trade's id (``skyloom.metrics.record``), smoothed with the previous value so that one
noisy run does not swing the next one. The next run of the same trade, in any later session, reads
it at start (``skyloom.metrics.latest``, asked for in the task's ``metrics`` option: no call is
made) and cuts its paths into chunks of ``target / seconds_per_path``. The first run knows nothing
and probes with small chunks; the runs after it land near the target.

Run it on the local stack: ``skyloom local run -- python examples/adaptive_sizing.py`` (or with
``SKYLOOM_ENDPOINT`` set). Each session prints, per trade, the paths per task it chose and how long
its tasks took against the target.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from typing import NamedTuple

import skyloom

METRIC = "seconds_per_path"
#: Each chunk's own time per path, kept as history (``skyloom metrics history TRADE chunk_seconds_per_path``).
CHUNK_METRIC = "chunk_seconds_per_path"
#: Weight of the newest run in the smoothed time per path.
SMOOTHING = 0.5
#: Paths per task when a trade has no history yet: small, so that the first run is a cheap probe.
PROBE_PATHS = 20_000
#: Never fewer paths than this per task, whatever the history says.
MIN_PATHS = 500


class Trade(NamedTuple):
    trade_id: str
    spot: float
    strike: float
    vol: float
    rate: float
    maturity: float
    notional: float


class Chunk(NamedTuple):
    """What one task of paths sends back: the payoff sums, its paths and its run time."""

    total: float
    total_sq: float
    paths: int
    seconds: float


class Priced(NamedTuple):
    trade_id: str
    value: float
    stderr: float
    paths_per_task: int
    task_seconds: list[float]


@skyloom.task
def simulate(trade: Trade, paths: int, seed: int) -> Chunk:
    """Discounted payoffs of a European call over ``paths`` geometric Brownian paths, and the time
    they took (recorded under the trade's id as this chunk's time per path)."""
    started = time.perf_counter()
    rng = random.Random(seed)
    drift = (trade.rate - 0.5 * trade.vol ** 2) * trade.maturity
    spread = trade.vol * math.sqrt(trade.maturity)
    discount = math.exp(-trade.rate * trade.maturity)
    total = total_sq = 0.0
    for _ in range(paths):
        payoff = discount * max(trade.spot * math.exp(drift + spread * rng.gauss(0.0, 1.0)) - trade.strike, 0.0)
        total += payoff
        total_sq += payoff * payoff
    seconds = time.perf_counter() - started
    skyloom.metrics.record(trade.trade_id, CHUNK_METRIC, seconds / paths)
    return Chunk(total, total_sq, paths, seconds)


@skyloom.task
def combine(trade: Trade, paths_per_task: int, *chunks: Chunk) -> Priced:
    """The price from every chunk's sums, and the run's time per path for the next run to size from
    (this task inherits its parent's ``metrics`` option: the previous value is in memory)."""
    n = sum(c.paths for c in chunks)
    measured = sum(c.seconds for c in chunks) / n
    previous = skyloom.metrics.latest(trade.trade_id, METRIC)
    smoothed = measured if previous is None else SMOOTHING * measured + (1 - SMOOTHING) * previous
    skyloom.metrics.record(trade.trade_id, METRIC, smoothed)
    mean = sum(c.total for c in chunks) / n
    variance = max(0.0, sum(c.total_sq for c in chunks) / n - mean * mean)
    return Priced(trade.trade_id, mean * trade.notional, math.sqrt(variance / n) * trade.notional, paths_per_task,
                  [c.seconds for c in chunks])


def paths_per_task(seconds_per_path: float | None, target: float, total_paths: int) -> int:
    """The chunk size that should take ``target`` seconds, from the last measured time per path."""
    if seconds_per_path is None or seconds_per_path <= 0:
        return min(PROBE_PATHS, total_paths)
    return max(MIN_PATHS, min(total_paths, round(target / seconds_per_path)))


@skyloom.task
def price(trade: Trade, total_paths: int, target: float):  # type: ignore[no-untyped-def]
    """Cut the trade's paths into tasks of about ``target`` seconds and sum them up (delegation).

    Submitted with ``metrics=[(trade_id, METRIC)]``: the worker read the last time per path with
    this task's inputs, so ``latest`` answers from memory."""
    size = paths_per_task(skyloom.metrics.latest(trade.trade_id, METRIC), target, total_paths)
    counts = [size] * (total_paths // size) + ([total_paths % size] if total_paths % size else [])
    chunks = [simulate.submit(trade, n, seed) for seed, n in enumerate(counts)]
    return combine.submit(trade, size, *chunks)


def make_trades(prefix: str, n: int) -> list[Trade]:
    rng = random.Random(11)
    return [Trade(f"{prefix}-{i}", 100.0, round(rng.uniform(90, 110), 2), round(rng.uniform(0.15, 0.4), 3), 0.03,
                  round(rng.uniform(0.5, 2.0), 2), 1_000_000.0) for i in range(n)]


def run_session(client: skyloom.Client, trades: Sequence[Trade], total_paths: int, target: float) -> list[Priced]:
    """One pricing run (one session): every trade sized from what earlier sessions recorded."""
    with client.session(name="adaptive-sizing") as _:
        futures = [price.options(metrics=[(t.trade_id, METRIC)]).submit(t, total_paths, target) for t in trades]
    return [f.result(timeout=900) for f in futures]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=4, help="pricing runs, one session each")
    p.add_argument("--target", type=float, default=1.0, help="seconds each task should take")
    p.add_argument("--paths", type=int, default=2_000_000, help="Monte Carlo paths per trade")
    p.add_argument("--trades", type=int, default=3)
    p.add_argument("--prefix", default="MC-EUR-CALL", help="trade id prefix: the business keys of the history")
    args = p.parse_args(argv)
    trades = make_trades(args.prefix, args.trades)
    with skyloom.connect() as client:
        for run in range(1, args.sessions + 1):
            print(f"session {run} (target {args.target:g} s per task)")
            for r in run_session(client, trades, args.paths, args.target):
                mean = statistics.fmean(r.task_seconds)
                print(f"  {r.trade_id}: {r.value:,.2f} ± {r.stderr:,.2f}  {r.paths_per_task:>8} paths/task x "
                      f"{len(r.task_seconds):>3} tasks, {mean:6.3f} s per task ({mean / args.target:4.0%} of target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Price a small option portfolio with a graph that shapes itself while it runs.

``portfolio`` splits the trades by counterparty at run time and submits one ``counterparty`` task
each; every ``counterparty`` submits one ``price`` task per trade and returns
``total.submit(*prices)``, handing its own result over to that sum (delegation), and ``portfolio``
does the same with the counterparty totals. No task ever waits for another: each returns as soon as
it has submitted its children.

Run it against the local stack (``make demo`` does ``skyloom local run python examples/portfolio.py``)
or any endpoint in ``SKYLOOM_ENDPOINT``. It recomputes the answer sequentially with the functions'
plain Python bodies and exits 1 if the two disagree.
"""

from __future__ import annotations

import math
import random
import sys
import time
from typing import NamedTuple

import skyloom

COUNTERPARTIES = ("ACME", "Globex", "Initech", "Umbrella")


class Trade(NamedTuple):
    trade_id: int
    counterparty: str
    kind: str  # "call" or "put"
    spot: float
    strike: float
    vol: float
    rate: float
    maturity: float  # years
    notional: float


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@skyloom.task
def price(trade: Trade) -> float:
    """Black-Scholes value of a European option, times its notional."""
    t, s, k, v, r = trade.maturity, trade.spot, trade.strike, trade.vol, trade.rate
    d1 = (math.log(s / k) + (r + 0.5 * v * v) * t) / (v * math.sqrt(t))
    d2 = d1 - v * math.sqrt(t)
    if trade.kind == "call":
        unit = s * _norm_cdf(d1) - k * math.exp(-r * t) * _norm_cdf(d2)
    else:
        unit = k * math.exp(-r * t) * _norm_cdf(-d2) - s * _norm_cdf(-d1)
    return unit * trade.notional


@skyloom.task
def total(*values: float) -> float:
    # fsum is exactly rounded, so the answer does not depend on the order values arrive in.
    return math.fsum(values)


def by_counterparty(trades: list[Trade]) -> dict[str, list[Trade]]:
    groups: dict[str, list[Trade]] = {}
    for trade in trades:
        groups.setdefault(trade.counterparty, []).append(trade)
    return groups


@skyloom.task
def counterparty(trades: list[Trade]):  # type: ignore[no-untyped-def]
    # Returning a future delegates: whoever reads this task's result gets the sum's value.
    return total.submit(*[price.submit(t) for t in trades])


@skyloom.task
def portfolio(trades: list[Trade]):  # type: ignore[no-untyped-def]
    return total.submit(*[counterparty.submit(group) for group in by_counterparty(trades).values()])


def make_trades(n: int = 30, seed: int = 7) -> list[Trade]:
    rng = random.Random(seed)
    return [
        Trade(
            trade_id=i,
            counterparty=COUNTERPARTIES[rng.randrange(len(COUNTERPARTIES))],
            kind=rng.choice(("call", "put")),
            spot=100.0,
            strike=round(rng.uniform(80, 120), 2),
            vol=round(rng.uniform(0.1, 0.5), 3),
            rate=0.03,
            maturity=round(rng.uniform(0.25, 3.0), 2),
            notional=float(rng.choice((1_000, 5_000, 10_000))),
        )
        for i in range(n)
    ]


def sequential(trades: list[Trade]) -> float:
    """The same computation, in this process, with the same grouping and the same sums."""
    return total(*[total(*[price(t) for t in group]) for group in by_counterparty(trades).values()])


def main() -> int:
    trades = make_trades()
    started = time.perf_counter()
    with skyloom.connect() as client:
        value = portfolio.submit(trades).result(timeout=600)
    elapsed = time.perf_counter() - started
    expected = sequential(trades)
    groups = len(by_counterparty(trades))
    print(f"portfolio of {len(trades)} trades over {groups} counterparties: {value:,.6f}")
    print(f"computed by Skyloom at {client.endpoint} in {elapsed:.2f} s")
    if not math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-9):
        print(f"MISMATCH: sequential recomputation gives {expected:,.6f}", file=sys.stderr)
        return 1
    print(f"matches the sequential recomputation ({expected:,.6f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How a long-lived process of the stack (a worker agent, a function's container) keeps Python's
garbage collector out of its hot path.

Such a process builds most of its objects while it starts (boto3's service models and clients,
pynamodb's models, Powertools, the routes) and keeps them until it exits; its requests then make
short-lived objects by the thousand. CPython's collector walked the start-up heap again and again
in its older generations: 6 % of an agent's CPU and of a submit container's in a run of zero-work
tasks (benchmarks/README.md). :func:`settle` sets that heap aside once (``gc.freeze``, the
technique CPython documents for forking servers) and makes the young collections rarer; objects
made later are collected as before, cycles included. Never called in a user's process.
"""

from __future__ import annotations

import gc

#: Allocations between two young collections (CPython's default: 700). Fewer passes over the
#: request's short-lived objects; the few that sit in cycles wait a little longer.
YOUNG_THRESHOLD = 10_000
#: Young collections per middle one, and middle ones per full one (CPython's: 10 and 10).
OLDER_THRESHOLD = 20


def settle() -> None:
    """Collect what starting left as garbage, then set everything alive aside from later walks."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)

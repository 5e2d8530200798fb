"""The agent's decisions, as pure functions: what to report about an attempt, how many messages
to receive, in which order to poll, how long to back off. Kept apart from the threads and AWS calls
of :mod:`fargate_worker.agent` so that each rule is unit-tested on its own.
"""

from __future__ import annotations

import math
import os
import random
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from skyloom.runtime.outcome import RemoteError, TaskInput, TaskLog, TaskOutcome
from skyloom_server.fargate_worker.child import ChildResult, Ending, outcome_bytes

#: SQS returns at most 10 messages per receive.
MAX_RECEIVE = 10
#: Error type of an attempt stopped because AWS stayed unreachable or busy (its inputs could not be
#: read): AWS's doing, not the task's, so the task is given back uncounted.
AWS_UNAVAILABLE = "AwsUnavailable"


class Action(StrEnum):
    COMPLETE = "complete"  # commit the outcome
    FAIL = "fail"  # record a failed attempt (fail() retries or finalizes)
    RELEASE = "release"  # give the task back uncounted: we stopped it, it did nothing wrong
    DROP = "drop"  # the lease is lost: another worker may own the task, so write nothing


@dataclass(frozen=True)
class Verdict:
    action: Action
    outcome: TaskOutcome | None = None  # for COMPLETE
    error: RemoteError | None = None  # for FAIL
    timed_out: bool = False
    log: TaskLog | None = None  # what the attempt printed, stored with its record (COMPLETE, FAIL)


def verdict(ran: ChildResult | RemoteError, *, lease_lost: bool) -> Verdict:
    """What to report about an attempt: the agent's whole crash/timeout/lease policy in one place.

    ``ran`` is how the child run ended, or the error that stopped the attempt before it ran.
    """
    if lease_lost:
        return Verdict(Action.DROP)
    if isinstance(ran, RemoteError) and ran.type == AWS_UNAVAILABLE:
        return Verdict(Action.RELEASE)
    if isinstance(ran, RemoteError):
        return Verdict(Action.FAIL, error=ran)
    if ran.ending is Ending.KILLED:  # we kill only on a lost lease (above) or a forced stop
        return Verdict(Action.RELEASE)
    if ran.ending is Ending.TIMEOUT:
        return Verdict(Action.FAIL, error=ran.outcome.error, timed_out=True, log=ran.log)
    if ran.outcome.error is not None:  # the task raised, or its child died
        return Verdict(Action.FAIL, error=ran.outcome.error, log=ran.log)
    return Verdict(Action.COMPLETE, outcome=ran.outcome, log=ran.log)


def receive_budget(slots: int, in_flight: int, max_tasks: int | None = None, finished: int = 0) -> int:
    """How many messages to receive now: one per free slot, and no more than ``max_tasks`` allows,
    so that no message sits received (invisible to other agents) without a slot to run it."""
    free = slots - in_flight
    if max_tasks is not None:
        free = min(free, max_tasks - finished - in_flight)
    return max(0, min(free, MAX_RECEIVE))


#: Seconds of work per slot an agent keeps received ahead of its slots, once it knows how long its
#: tasks take. Enough to hide a receive's round trip behind work; small, because a message held
#: here is one another (idle) agent cannot have: what it holds is the tail of a run's imbalance.
BACKLOG_SECONDS = 0.15
#: The most an agent holds received ahead of its slots: three receives' worth, so that a refill of
#: ten is under way while twenty tasks still wait (a receive costs as long as many short tasks).
MAX_BACKLOG = 3 * MAX_RECEIVE


def in_flight_limit(slots: int, prefetch: int, seconds_per_task: float | None,
                    horizon: float = BACKLOG_SECONDS) -> int:
    """How many messages an agent may hold: one per slot, plus a backlog worth ``horizon`` seconds
    of work per slot, in whole tasks (at least ``prefetch``, at most :data:`MAX_BACKLOG`).

    Short tasks are then received ten at a time instead of one per free slot, which is what makes
    ReceiveMessage a fraction of a call per task; long ones keep ``slots + prefetch``.
    ``seconds_per_task`` is what a slot spends per task (None until one is measured). ``prefetch``
    0 turns every read-ahead off: the agent then holds exactly one task per slot.
    """
    base = slots + prefetch
    if not prefetch or not seconds_per_task or seconds_per_task <= 0:
        return base
    # Whole tasks within the horizon, rounded down: a 100 ms task is not received ahead twice, which
    # at the end of a run would leave one agent with two queued while the others idle.
    ahead = math.floor(slots * horizon / seconds_per_task + 1e-9)  # 0.15 / 0.05 is 2.999... in floats
    return max(base, min(slots + MAX_BACKLOG, slots + ahead))


def refill_budget(limit: int, slots: int, held: int) -> int:
    """How many messages to receive now, holding ``held`` of at most ``limit`` (0: not yet).

    The agent waits until there is room for a full receive (or, for a small backlog, until it has
    run down to a third) before asking again, at once when a slot may be idle: each call then
    fills most of a batch instead of fetching the one or two messages that just finished.
    """
    room = max(0, limit - held)
    backlog = limit - slots
    unstarted = held - slots
    if unstarted > 0 and backlog > 1 and room < min(MAX_RECEIVE, backlog - backlog // 3):
        return 0
    return min(room, MAX_RECEIVE)


def poll_plan(urls: Sequence[str], wait: int, *, upper: bool = True) -> list[tuple[str, int]]:
    """The receive calls of one poll round, as (queue URL, WaitTimeSeconds); the round stops at the
    first call that returns messages.

    With ``upper``, every level above the bottom without waiting, highest first; then a long poll of
    ``wait`` seconds on the bottom level, which is where priority 0 (the default) lands: the common
    case is picked up the moment it is sent. The agent asks for ``upper`` only when idle: each upper
    level also has a long poll of its own (empty checks of every level on every round were most of
    its receive calls), and on SQS a short poll samples only some servers anyway.
    """
    if not urls:
        return []
    return ([(u, 0) for u in urls[:-1]] if upper else []) + [(urls[-1], wait)]


@dataclass
class Backoff:
    """Exponential backoff for failing AWS calls: 0.5 s doubling to 30 s, each delay drawn from the
    upper half of its range so that a fleet of agents does not retry in lockstep.

    Not tenacity: the agent's loops never give up (they retry until told to stop) and wait on the
    stop event, so what they need from a library is this formula alone; botocore's own retries
    (adaptive mode, see ``core/aws.py``) stay the first line for each call."""

    base: float = 0.5
    cap: float = 30.0
    failures: int = 0

    def next(self, rand: Callable[[], float] = random.random) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(self.failures, 16))
        self.failures += 1
        return ceiling / 2 + rand() * ceiling / 2

    def reset(self) -> None:
        self.failures = 0


def max_duration(options: Mapping[str, Any]) -> float | None:
    """The task's time limit in seconds, or None for none."""
    raw = options.get("max_duration")
    try:
        value = float(raw) if raw is not None else 0.0
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def bytes_in(inp: TaskInput) -> int:
    return len(inp.payload) + sum(len(v) for v in inp.dependencies.values())


def bytes_out(outcome: TaskOutcome) -> int:
    """Bytes the attempt hands to storage: outputs, data of staged results, payloads of subtasks."""
    return outcome_bytes(outcome)


def new_worker_id() -> str:
    """``<hostname>-<pid>-<8 hex>``: readable in the attempt history, unique across restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

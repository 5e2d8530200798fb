"""The agent's decisions as pure functions: verdict, receive budget, poll plan, backoff, metrics."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

from skyloom.runtime.outcome import RemoteError, StagedResult, StagedTask, TaskInput, TaskOutcome
from skyloom_server.fargate_worker.child import DIED_ERROR, TIMEOUT_ERROR, ChildResult, Ending
from skyloom_server.fargate_worker.policy import (
    AWS_UNAVAILABLE,
    MAX_RECEIVE,
    Action,
    Backoff,
    bytes_in,
    bytes_out,
    in_flight_limit,
    max_duration,
    new_worker_id,
    poll_plan,
    receive_budget,
    refill_budget,
    verdict,
)

ERR = RemoteError("ValueError", "boom", "tb")


def _result(ending: Ending, error: RemoteError | None = None) -> ChildResult:
    return ChildResult(TaskOutcome(outputs={"o": b"v"} if error is None else {}, error=error), ending, 1.0)


@pytest.mark.parametrize(
    ("ran", "lost", "action", "timed_out"),
    [
        (_result(Ending.RETURNED), False, Action.COMPLETE, False),
        (_result(Ending.RETURNED, ERR), False, Action.FAIL, False),
        (_result(Ending.DIED, RemoteError(DIED_ERROR, "exit 3", "")), False, Action.FAIL, False),
        (_result(Ending.TIMEOUT, RemoteError(TIMEOUT_ERROR, "slow", "")), False, Action.FAIL, True),
        (_result(Ending.KILLED, RemoteError("TaskKilled", "", "")), False, Action.RELEASE, False),
        (ERR, False, Action.FAIL, False),  # inputs could not be loaded
        (RemoteError(AWS_UNAVAILABLE, "unreachable", ""), False, Action.RELEASE, False),  # AWS's doing
        # A lost lease wins over everything: another worker may own the task, write nothing.
        (_result(Ending.RETURNED), True, Action.DROP, False),
        (_result(Ending.KILLED, RemoteError("TaskKilled", "", "")), True, Action.DROP, False),
        (ERR, True, Action.DROP, False),
    ],
)
def test_verdict(ran: ChildResult | RemoteError, lost: bool, action: Action, timed_out: bool) -> None:
    v = verdict(ran, lease_lost=lost)
    assert v.action is action
    assert v.timed_out is timed_out
    if action is Action.COMPLETE:
        assert v.outcome is not None and v.outcome.ok
    if action is Action.FAIL:
        assert v.error is not None


@pytest.mark.parametrize(
    ("slots", "in_flight", "max_tasks", "finished", "budget"),
    [
        (1, 0, None, 0, 1),
        (1, 1, None, 0, 0),
        (4, 1, None, 0, 3),
        (32, 0, None, 0, MAX_RECEIVE),  # SQS returns at most 10
        (4, 0, 2, 0, 2),  # never receive what max_tasks will not run
        (4, 1, 3, 1, 1),
        (4, 0, 3, 3, 0),
        (1, 3, None, 0, 0),  # never negative
    ],
)
def test_receive_budget(slots: int, in_flight: int, max_tasks: int | None, finished: int, budget: int) -> None:
    assert receive_budget(slots, in_flight, max_tasks, finished) == budget


def test_poll_plan_checks_upper_levels_then_long_polls_the_default_level() -> None:
    assert poll_plan(["p2", "p1", "p0"], 1) == [("p2", 0), ("p1", 0), ("p0", 1)]
    assert poll_plan(["p2", "p1", "p0"], 1, upper=False) == [("p0", 1)]
    assert poll_plan(["only"], 5) == [("only", 5)]
    assert poll_plan([], 5) == []


def test_backoff_grows_to_a_cap_with_jitter_and_resets() -> None:
    b = Backoff(base=0.5, cap=4.0)
    top = [b.next(rand=lambda: 1.0) for _ in range(6)]
    assert top == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next(rand=lambda: 0.0) == 0.25  # the lower half of the first range
    many = Backoff()
    for _ in range(5000):  # no overflow however long an outage lasts
        delay = many.next()
    assert 15.0 <= delay <= 30.0


@pytest.mark.parametrize(
    ("options", "expected"),
    [({}, None), ({"max_duration": 2.5}, 2.5), ({"max_duration": 0}, None), ({"max_duration": "x"}, None),
     ({"max_duration": None}, None)],
)
def test_max_duration(options: dict[str, Any], expected: float | None) -> None:
    assert max_duration(options) == expected


def test_bytes_moved() -> None:
    inp = TaskInput("t", "s", "h", b"1234", {"a": b"12", "b": b"1"}, ["o"], {})
    assert bytes_in(inp) == 7
    out = TaskOutcome(
        outputs={"o": b"123"},
        staged_results=[StagedResult("r1", data=b"12"), StagedResult("r2")],
        staged_tasks=[StagedTask("t2", "h", b"1", [], [])],
    )
    assert bytes_out(out) == 6


def test_worker_id_names_host_and_pid_and_is_unique() -> None:
    a, b = new_worker_id(), new_worker_id()
    assert a.startswith(f"{socket.gethostname()}-{os.getpid()}-") and a != b


def test_short_tasks_are_received_a_batch_ahead_long_ones_one_per_slot() -> None:
    # Unmeasured: one per slot plus prefetch, as before any task ran.
    assert in_flight_limit(slots=2, prefetch=1, seconds_per_task=None) == 3
    # Zero-work tasks: three receives ahead, never more.
    assert in_flight_limit(slots=1, prefetch=1, seconds_per_task=0.001) == 1 + 3 * MAX_RECEIVE
    # 100 ms tasks: the horizon's worth per slot, in whole tasks (one ahead).
    assert in_flight_limit(slots=1, prefetch=1, seconds_per_task=0.1, horizon=0.15) == 2
    assert in_flight_limit(slots=1, prefetch=1, seconds_per_task=0.05, horizon=0.15) == 4
    # No prefetch: one task per slot, however short.
    assert in_flight_limit(slots=2, prefetch=0, seconds_per_task=0.005) == 2
    # One-second tasks: nothing more than prefetch (the tail of a run stays balanced).
    assert in_flight_limit(slots=4, prefetch=1, seconds_per_task=1.0, horizon=0.15) == 5


@pytest.mark.parametrize(
    ("limit", "slots", "held", "budget"),
    [
        (31, 1, 0, 10),  # idle: a full batch
        (31, 1, 21, 10),  # room for a full receive while twenty wait: refill
        (31, 1, 23, 0),  # not yet: a receive of eight would waste part of a call
        (11, 1, 0, 10),  # a backlog of ten:
        (11, 1, 1, 10),  # one running, nothing ahead: refill at once
        (11, 1, 9, 0),  # eight ahead: not yet (a receive for two messages would waste a call)
        (11, 1, 4, 7),  # run down to three ahead: refill
        (3, 2, 2, 1),  # a small backlog refills as soon as it has room
        (3, 2, 3, 0),
    ],
)
def test_refill_waits_for_the_backlog_to_run_down(limit: int, slots: int, held: int, budget: int) -> None:
    assert refill_budget(limit, slots, held) == budget

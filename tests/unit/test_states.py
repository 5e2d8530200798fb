"""The state machines: every legal edge, no edge out of a final state, and the retry arithmetic."""

from __future__ import annotations

import itertools

import pytest

from skyloom.core.states import (
    RESULT_FINAL,
    TASK_FINAL,
    ResultStatus,
    SessionStatus,
    TaskStatus,
    can_result,
    can_session,
    can_task,
    is_ready,
    retry_decision,
    session_accepts_submissions,
    task_sources,
)


@pytest.mark.parametrize("final", sorted(TASK_FINAL))
def test_final_task_states_have_no_way_out(final: TaskStatus) -> None:
    assert not any(can_task(final, t) for t in TaskStatus)


def test_task_lifecycle_happy_path() -> None:
    path = [TaskStatus.CREATING, TaskStatus.PENDING, TaskStatus.SUBMITTED, TaskStatus.PROCESSING,
            TaskStatus.COMPLETED]
    for a, b in itertools.pairwise(path):
        assert can_task(a, b), (a, b)


def test_retry_goes_back_to_submitted_and_only_from_processing() -> None:
    assert task_sources(TaskStatus.PROCESSING) == {TaskStatus.SUBMITTED}
    assert can_task(TaskStatus.PROCESSING, TaskStatus.SUBMITTED)
    assert not can_task(TaskStatus.PENDING, TaskStatus.PROCESSING)  # never run with inputs missing


def test_a_result_is_written_once() -> None:
    assert can_result(ResultStatus.CREATED, ResultStatus.COMPLETED)
    assert not can_result(ResultStatus.COMPLETED, ResultStatus.COMPLETED)
    assert not can_result(ResultStatus.ABORTED, ResultStatus.COMPLETED)
    assert all(not can_result(f, ResultStatus.CREATED) for f in RESULT_FINAL)


def test_sessions() -> None:
    assert can_session(SessionStatus.RUNNING, SessionStatus.PAUSED)
    assert can_session(SessionStatus.PAUSED, SessionStatus.RUNNING)
    assert not can_session(SessionStatus.CLOSED, SessionStatus.RUNNING)
    assert session_accepts_submissions(SessionStatus.PAUSED)
    assert not session_accepts_submissions(SessionStatus.CLOSED)


def test_ready_needs_pending_and_nothing_remaining() -> None:
    assert is_ready(TaskStatus.PENDING, None)
    assert is_ready(TaskStatus.PENDING, set())
    assert not is_ready(TaskStatus.PENDING, {"r"})
    assert not is_ready(TaskStatus.CREATING, None)


@pytest.mark.parametrize(("attempt", "retries", "expected"), [(1, 0, False), (1, 2, True), (3, 2, False), (2, 2, True)])
def test_retry_decision_counts_retries_not_attempts(attempt: int, retries: int, expected: bool) -> None:
    assert retry_decision(attempt, retries) is expected


def test_outcomes_are_enums_that_read_as_the_statuses_they_write() -> None:
    from skyloom.core.states import AttemptFate, Repair

    # A re-queued or ended attempt reads as the status it wrote; a lost one wrote nothing.
    assert AttemptFate.RETRIED == TaskStatus.SUBMITTED and AttemptFate.ERROR == TaskStatus.ERROR
    assert AttemptFate.TIMEOUT == TaskStatus.TIMEOUT and AttemptFate.LOST not in set(TaskStatus)
    # The sweeper's metric names are the repairs' values, one word each (no parsing).
    assert all(":" not in r.value for r in Repair)

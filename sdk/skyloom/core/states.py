"""The state machines of sessions, tasks and results, as pure functions over ``str`` enums.

DynamoDB holds the truth; every transition below is applied with a conditional write whose
condition is "the item is still in one of :func:`task_sources` (state)". Keeping the legal edges in
one table lets the store build those conditions and lets unit tests enumerate every edge.
"""

from __future__ import annotations

from enum import StrEnum


class SessionStatus(StrEnum):
    RUNNING = "Running"
    PAUSED = "Paused"
    CANCELLED = "Cancelled"
    CLOSED = "Closed"
    PURGED = "Purged"
    DELETED = "Deleted"


class TaskStatus(StrEnum):
    CREATING = "Creating"  # staged by a running parent; not live until the parent succeeds
    PENDING = "Pending"  # live, waiting on data dependencies
    SUBMITTED = "Submitted"  # ready: a queue message exists (or the sweeper will re-send it)
    PROCESSING = "Processing"  # claimed by a worker holding a lease
    COMPLETED = "Completed"
    ERROR = "Error"
    TIMEOUT = "Timeout"
    CANCELLED = "Cancelled"


class ResultStatus(StrEnum):
    CREATED = "Created"
    COMPLETED = "Completed"
    ABORTED = "Aborted"
    DELETED = "Deleted"


class AttemptFate(StrEnum):
    """What recording a failed attempt did to its task (``retries.fail``, ``expire_lease``)."""

    RETRIED = TaskStatus.SUBMITTED.value  # re-queued, after its retry delay
    ERROR = TaskStatus.ERROR.value  # ended, outputs aborted
    TIMEOUT = TaskStatus.TIMEOUT.value
    LOST = "lost"  # the attempt no longer held the task: nothing was written


class Repair(StrEnum):
    """What the sweeper did to an overdue task (``functions/dispatch/sweeper.repair``); the metric
    ``Sweeper_<value>`` counts each."""

    REDISPATCHED = "redispatched"  # Submitted, its message re-sent
    RACED = "raced"  # another writer moved it first
    LEASE_ALIVE = "lease_alive"
    LEASE_EXPIRED = "lease_expired"  # the worker presumed dead: a failed attempt (see AttemptFate)
    FINALIZED = "finalized"  # a committed parent's children made live
    UNPARKED = "unparked"
    PARKED = "parked"
    CLEARED = "cleared"  # its timer, no longer needed
    SKIPPED = "skipped"
    ERROR = "error"  # the repair failed; the next pass tries again


TASK_FINAL: frozenset[TaskStatus] = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.ERROR, TaskStatus.TIMEOUT, TaskStatus.CANCELLED}
)
RESULT_FINAL: frozenset[ResultStatus] = frozenset(
    {ResultStatus.COMPLETED, ResultStatus.ABORTED, ResultStatus.DELETED}
)

_TASK_EDGES: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.CREATING: frozenset({TaskStatus.PENDING, TaskStatus.SUBMITTED, TaskStatus.CANCELLED}),
    TaskStatus.PENDING: frozenset({TaskStatus.SUBMITTED, TaskStatus.CANCELLED}),
    # Submitted -> Submitted is the sweeper re-sending a lost message; Submitted -> Completed is the
    # commit of a short task that ran on its message's receipt, never claimed (claims.take);
    # Submitted -> Pending parks a task whose session is paused (claims.park); Submitted -> Error
    # ends a task whose message could not be delivered (retries.fail_undeliverable).
    TaskStatus.SUBMITTED: frozenset(
        {TaskStatus.SUBMITTED, TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.COMPLETED, TaskStatus.ERROR,
         TaskStatus.CANCELLED}
    ),
    # Processing -> Submitted is a retry (failed attempt, expired lease, released on drain).
    TaskStatus.PROCESSING: frozenset(
        {
            TaskStatus.SUBMITTED,
            TaskStatus.COMPLETED,
            TaskStatus.ERROR,
            TaskStatus.TIMEOUT,
            TaskStatus.CANCELLED,
        }
    ),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.ERROR: frozenset(),
    TaskStatus.TIMEOUT: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}

_RESULT_EDGES: dict[ResultStatus, frozenset[ResultStatus]] = {
    ResultStatus.CREATED: frozenset({ResultStatus.COMPLETED, ResultStatus.ABORTED, ResultStatus.DELETED}),
    ResultStatus.COMPLETED: frozenset({ResultStatus.DELETED}),
    ResultStatus.ABORTED: frozenset({ResultStatus.DELETED}),
    ResultStatus.DELETED: frozenset(),
}

_SESSION_EDGES: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.RUNNING: frozenset({SessionStatus.PAUSED, SessionStatus.CANCELLED, SessionStatus.CLOSED}),
    SessionStatus.PAUSED: frozenset({SessionStatus.RUNNING, SessionStatus.CANCELLED, SessionStatus.CLOSED}),
    SessionStatus.CANCELLED: frozenset({SessionStatus.CLOSED, SessionStatus.PURGED, SessionStatus.DELETED}),
    SessionStatus.CLOSED: frozenset({SessionStatus.PURGED, SessionStatus.DELETED}),
    SessionStatus.PURGED: frozenset({SessionStatus.DELETED}),
    SessionStatus.DELETED: frozenset(),
}


def can_task(source: TaskStatus, target: TaskStatus) -> bool:
    return target in _TASK_EDGES[source]


def can_result(source: ResultStatus, target: ResultStatus) -> bool:
    return target in _RESULT_EDGES[source]


def can_session(source: SessionStatus, target: SessionStatus) -> bool:
    return target in _SESSION_EDGES[source]


def task_sources(target: TaskStatus) -> frozenset[TaskStatus]:
    """The states a task may be in for a conditional write to move it to ``target``."""
    return frozenset(s for s, targets in _TASK_EDGES.items() if target in targets)


def result_sources(target: ResultStatus) -> frozenset[ResultStatus]:
    return frozenset(s for s, targets in _RESULT_EDGES.items() if target in targets)


def session_sources(target: SessionStatus) -> frozenset[SessionStatus]:
    return frozenset(s for s, targets in _SESSION_EDGES.items() if target in targets)


def session_accepts_submissions(status: SessionStatus) -> bool:
    """Paused sessions still accept work (it just does not start); closed ones do not."""
    return status in (SessionStatus.RUNNING, SessionStatus.PAUSED)


def session_starts_work(status: SessionStatus) -> bool:
    return status is SessionStatus.RUNNING


def is_ready(status: TaskStatus, remaining: frozenset[str] | set[str] | None) -> bool:
    """A live task with no unresolved data dependency is ready to be queued."""
    return status is TaskStatus.PENDING and not remaining


def retry_decision(attempts_done: int, max_retries: int) -> bool:
    """True if a failed attempt number ``attempts_done`` (1-based) leaves a retry.

    ``max_retries`` counts retries, not attempts: 2 retries means 3 attempts in all.
    """
    return attempts_done <= max_retries

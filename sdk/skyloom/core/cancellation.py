"""Cancelling tasks, and aborting what they would have produced.

Used by resolve when a dependency is aborted (the cascade travels through the results stream: each
aborted output triggers the next level), and by users cancelling tasks or whole sessions. A running
task is cancelled in DynamoDB only; its worker notices at the next heartbeat (the lease condition
fails), kills the child process and writes nothing.
"""

from __future__ import annotations

from typing import Any

from skyloom.core import clock
from skyloom.core.models import TaskModel
from skyloom.core.settlement import abort_output, ending_actions, settle
from skyloom.core.states import TaskStatus, task_sources
from skyloom.core.transitions import task_move

#: States a task can be cancelled from without stopping a worker.
WAITING = task_sources(TaskStatus.CANCELLED) - {TaskStatus.PROCESSING}
#: ... and with stopping one.
CANCELLABLE = task_sources(TaskStatus.CANCELLED)


def cancellation_error(task: TaskModel, by: str) -> dict[str, Any]:
    """The root error of a task cancelled on request (a protocol.ResultError)."""
    return {
        "task_id": task.task_id,
        "handler": task.handler,
        "status": TaskStatus.CANCELLED.value,
        "attempts": int(task.attempt or 0),
        "type": "TaskCancelled",
        "message": f"task {task.task_id} was cancelled by {by}",
        "traceback": None,
    }


def cancel_task(
    task_id: str,
    root_error: dict[str, Any] | None,
    reason: str,
    *,
    running_too: bool = False,
    by: str = "",
) -> bool:
    """Cancel a task and abort its outputs with the root failure (its own, if ``root_error`` is None).

    True if this call cancelled it; False if it had already ended or was not cancellable (idempotent
    under replay). ``running_too`` also cancels a task being processed.
    """
    try:
        t = TaskModel.get(task_id, consistent_read=True)
    except TaskModel.DoesNotExist:
        return False
    allowed = CANCELLABLE if running_too else WAITING
    if t.status not in allowed:
        return False
    root = root_error if root_error is not None else cancellation_error(t, by)
    err = {**root, "cancelled_because": reason}
    return settle(
        task_id,
        actions=ending_actions(TaskStatus.CANCELLED, err, clock.now()),
        condition=task_move(allowed, TaskStatus.CANCELLED).guard,
        outputs={rid: abort_output(rid, task_id, root) for rid in t.expected_outputs or []},
    )


def cancel_dependent(task_id: str, result_id: str, error: dict[str, Any] | None) -> bool:
    """Cancel a task that has not started because its dependency ``result_id`` was aborted with
    ``error`` (the root failure, passed down the cascade). True if this call cancelled it."""
    root = error or {"task_id": "unknown", "status": "Aborted", "message": f"result {result_id} was aborted"}
    return cancel_task(task_id, root, f"dependency {result_id} was aborted")

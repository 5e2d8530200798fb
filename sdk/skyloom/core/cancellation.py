"""Cancelling tasks, and aborting what they would have produced.

Used by resolve when a dependency is aborted (the cascade travels through the results stream: each
aborted output triggers the next level), and by users cancelling tasks or whole sessions. A running
task is cancelled in DynamoDB only; its worker notices at the next heartbeat (the lease condition
fails), kills the child process and writes nothing.
"""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from skyloom.core import clock
from skyloom.core.ddb import Op, failed_indexes, transact
from skyloom.core.models import ResultModel, TaskModel
from skyloom.core.states import ResultStatus, TaskStatus, task_sources

#: States a task can be cancelled from without stopping a worker.
WAITING = [s.value for s in task_sources(TaskStatus.CANCELLED) if s is not TaskStatus.PROCESSING]
#: ... and with stopping one.
CANCELLABLE = [s.value for s in task_sources(TaskStatus.CANCELLED)]


def abort_output(rid: str, task_id: str, err: dict[str, Any]) -> Op:
    now = clock.now()

    def op(tx: TransactWrite) -> None:
        tx.update(
            ResultModel(rid),
            actions=[ResultModel.status.set(ResultStatus.ABORTED.value), ResultModel.error.set(err),
                     ResultModel.completed_at.set(now), ResultModel.updated_at.set(now)],
            condition=(ResultModel.status == ResultStatus.CREATED.value) & (ResultModel.owner_task_id == task_id),
        )

    return op


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
    now = clock.now()
    root = root_error if root_error is not None else cancellation_error(t, by)
    err = {**root, "cancelled_because": reason}

    def end(tx: TransactWrite) -> None:
        tx.update(
            TaskModel(task_id),
            actions=[
                TaskModel.status.set(TaskStatus.CANCELLED.value),
                TaskModel.error.set(err),
                TaskModel.ended_at.set(now),
                TaskModel.updated_at.set(now),
                TaskModel.lease_owner.remove(),
                TaskModel.lease_expires.remove(),
                TaskModel.due_shard.remove(),
                TaskModel.due_at.remove(),
            ],
            condition=TaskModel.status.is_in(*allowed),
        )

    ops: list[Op] = [end, *(abort_output(rid, task_id, root) for rid in t.expected_outputs or [])]
    try:
        transact(ops)
    except TransactWriteError as exc:
        if 0 in failed_indexes(exc):
            return False
        transact([end])  # some output is no longer this task's (delegated or already aborted)
    return True


def cancel_waiting_task(task_id: str, root_error: dict[str, Any], reason: str) -> bool:
    """Cancel a task that has not started (a dependency of it was aborted)."""
    return cancel_task(task_id, root_error, reason)

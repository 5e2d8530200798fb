"""Cancelling tasks that can no longer run, and aborting what they would have produced.

Used by resolve when a dependency is aborted (the cascade travels through the results stream: each
aborted output triggers the next level), and by explicit cancellation later.
"""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from skyloom.core import clock
from skyloom.core.ddb import Op, failed_indexes, transact
from skyloom.core.execution import abort_output
from skyloom.core.models import TaskModel
from skyloom.core.states import TaskStatus, task_sources

#: States a task can be cancelled from without stopping a worker.
_WAITING = [s.value for s in task_sources(TaskStatus.CANCELLED) if s is not TaskStatus.PROCESSING]


def cancel_waiting_task(task_id: str, root_error: dict[str, Any], reason: str) -> bool:
    """Cancel a task that has not started, aborting its outputs with the root failure.

    True if this call cancelled it; False if it was already past waiting (idempotent under replay).
    """
    try:
        t = TaskModel.get(task_id, consistent_read=True)
    except TaskModel.DoesNotExist:
        return False
    if t.status not in _WAITING:
        return False
    now = clock.now()
    err = {**root_error, "cancelled_because": reason}

    def end(tx: TransactWrite) -> None:
        tx.update(
            TaskModel(task_id),
            actions=[
                TaskModel.status.set(TaskStatus.CANCELLED.value),
                TaskModel.error.set(err),
                TaskModel.ended_at.set(now),
                TaskModel.updated_at.set(now),
                TaskModel.due_shard.remove(),
                TaskModel.due_at.remove(),
            ],
            condition=TaskModel.status.is_in(*_WAITING),
        )

    ops: list[Op] = [end, *(abort_output(rid, task_id, root_error) for rid in t.expected_outputs or [])]
    try:
        transact(ops)
    except TransactWriteError as exc:
        if 0 in failed_indexes(exc):
            return False
        transact([end])  # some output is no longer this task's (delegated or already aborted)
    return True

"""Settling a task: ending it in the same transaction as the results it owes.

A task that ends (a final failure, a timeout, a cancellation, an undeliverable message) must abort
its expected outputs in the same write, or whoever waits on those results waits forever. Its
outputs may no longer all be its own, though: one may have been delegated to a subtask, or aborted
already by a cancellation racing this ending. :func:`settle` is the one operation every ending
path uses, so they all read DynamoDB's answer the same way:

- the task's own condition refused it: the task is not this caller's to end (a worker claimed it,
  another actor ended or retried it) -> False, nothing written;
- an output's condition refused it (``ConditionalCheckFailed``): that output is no longer this
  task's -> the transaction runs again without it, and only without it;
- a cancellation for the moment only (``TransactionConflict``, throttling): :func:`~skyloom.core.ddb.transact`
  runs the same transaction again, outputs included;
- anything else raises, and the caller's own redelivery (the sweeper's next pass, the message or
  stream record coming back) runs the whole ending again: every write in it is conditional.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pynamodb.exceptions import TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from skyloom.core import clock
from skyloom.core.ddb import Op, failed_indexes, transact
from skyloom.core.models import ResultModel, TaskModel
from skyloom.core.states import ResultStatus, TaskStatus
from skyloom.core.transitions import result_move, task_move

log = logging.getLogger(__name__)


def abort_output(rid: str, task_id: str, err: dict[str, Any]) -> Op:
    """The write that aborts result ``rid`` with ``err``, if it is still Created and owned by ``task_id``."""
    now = clock.now()
    move = result_move(ResultStatus.CREATED, ResultStatus.ABORTED)

    def op(tx: TransactWrite) -> None:
        tx.update(
            ResultModel(rid),
            actions=[move.set, ResultModel.error.set(err), ResultModel.completed_at.set(now),
                     ResultModel.updated_at.set(now)],
            condition=move.guard & (ResultModel.owner_task_id == task_id),
        )

    return op


def ending_actions(
    status: TaskStatus, error: dict[str, Any], now: float, *, attempts: list[dict[str, Any]] | None = None
) -> list[Action]:
    """What every ending writes on the task: its final status and root error, its end time, and no
    lease or timer left (removing an attribute the item lacks is a no-op)."""
    actions: list[Action] = [
        task_move(None, status).set,
        TaskModel.error.set(error),
        TaskModel.ended_at.set(now),
        TaskModel.updated_at.set(now),
        TaskModel.lease_owner.remove(),
        TaskModel.lease_expires.remove(),
        TaskModel.due_shard.remove(),
        TaskModel.due_at.remove(),
    ]
    if attempts is not None:
        actions.append(TaskModel.attempts.set(attempts))
    return actions


def settle(task_id: str, *, actions: Sequence[Action], condition: Condition, outputs: Mapping[str, Op]) -> bool:
    """End task ``task_id`` (``actions`` if ``condition`` holds) together with its ``outputs``
    (result id -> the write that aborts or completes it), in one transaction.

    Returns True if this call ended the task, False if its condition refused (not ours to end).
    Outputs refused by their own condition are left out and the rest written with the task; see
    the module docstring for every other answer.
    """

    def end(tx: TransactWrite) -> None:
        tx.update(TaskModel(task_id), actions=list(actions), condition=condition)

    remaining = dict(outputs)
    while True:
        ids = list(remaining)
        try:
            transact([end, *(remaining[rid] for rid in ids)])
            return True
        except TransactWriteError as exc:
            refused = failed_indexes(exc)
            if not refused:
                raise
            if 0 in refused:
                return False
            gone = [ids[i - 1] for i in refused]
            log.info("task %s ends without output(s) %s: no longer its own (delegated or aborted)", task_id, gone)
            for rid in gone:
                del remaining[rid]

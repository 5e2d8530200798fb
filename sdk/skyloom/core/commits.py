"""The end of a successful attempt: one transaction writes the task Completed with its outputs
(completed, or re-owned by the subtask they were delegated to) and, when they fit, its subtasks.

Every commit item is conditioned on the attempt still holding the task (:func:`claims.held_by`), so
the first of two copies of a task to commit wins and a result is written once. Commits of several
attempts share one TransactWriteItems; one refused by its conditions is written again without the
attempts whose items were refused. An attempt that reports a failure is recorded by :mod:`retries`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from skyloom.core import clock, measurements, readiness, tasklogs
from skyloom.core.claims import claimed, held_by
from skyloom.core.config import Settings
from skyloom.core.ddb import (
    TRANSACTION_MAX_ITEMS,
    Op,
    failed_indexes,
    transact,
)
from skyloom.core.models import ResultModel, TaskModel, path
from skyloom.core.results import remember_values
from skyloom.core.retries import attempt_record, fail
from skyloom.core.staging import (
    ContractViolation,
    check_contract,
    finalize,
    finalize_live,
    staged_bytes,
    staged_in_commit,
    staged_items,
    store_values,
    write_staged,
)
from skyloom.core.states import AttemptFate, ResultStatus, TaskStatus
from skyloom.core.transitions import result_in, result_move, task_move
from skyloom.runtime.outcome import RemoteError, TaskLog, TaskOutcome

log = logging.getLogger(__name__)


@dataclass
class Commit:
    """One finished attempt, to be committed alone or with others (:func:`commit_many`)."""

    task: TaskModel
    worker_id: str
    outcome: TaskOutcome
    metrics: dict[str, float]
    #: What the attempt printed, stored with its attempt record.
    log: TaskLog | None = None


@dataclass
class _Prepared:
    """A commit ready to join a transaction: its items, and what to do once it is written."""

    task: TaskModel
    ops: list[Op]
    staged_results: list[ResultModel]
    staged_tasks: list[TaskModel]
    #: Bytes it puts in the transaction (inline values): DynamoDB takes at most 4 MB per call.
    size: int
    #: The staged subtasks are written by the commit itself, already Pending or Submitted.
    staged_live: bool = False
    #: The outputs the commit completes, with their values (the ones it delegates are the
    #: subtasks' to complete).
    outputs: dict[str, bytes] = field(default_factory=dict)


#: What every commit removes: the lease, and the sweeper's timer unless children await
#: finalization (actions are immutable expressions: built once, shared by every commit).
_LEASE_REMOVED = (path(TaskModel.lease_owner).remove(), path(TaskModel.lease_expires).remove())
_TIMER_REMOVED = (path(TaskModel.due_shard).remove(), path(TaskModel.due_at).remove())

#: A grouped commit stays under DynamoDB's 4 MB per TransactWriteItems, with room for the rest.
GROUP_MAX_BYTES = 3 * 1024 * 1024


def commit(
    settings: Settings, task: TaskModel, worker_id: str, outcome: TaskOutcome, metrics: dict[str, float],
    log: TaskLog | None = None,
) -> bool:
    """Commit an attempt's outcome (and what it printed): its outputs and subtasks if it succeeded;
    if it reported a failure (``outcome.error``), a failed attempt, as :func:`retries.fail`. False if
    the attempt no longer held the task (lease lost, cancelled, another attempt committed first)."""
    return commit_many(settings, [Commit(task, worker_id, outcome, metrics, log)])[0]


def commit_many(settings: Settings, commits: Sequence[Commit]) -> list[bool]:
    """Commit attempts' outcomes (:func:`commit`), in as few transactions as DynamoDB's limits allow;
    for each, False if it was no longer ours (lease lost, cancelled, another attempt committed first).

    Per attempt: upload large values -> write staged children (not live) -> commit items -> make
    children live. The commit items of several attempts share one TransactWriteItems: an agent's
    finished short tasks cost one write call together instead of one each. A transaction refused by
    some items' conditions is written again without the attempts those items belong to (the
    cancellation reasons say which). A crash before the commit leaves only unreachable staged
    items; after it, the sweeper sees ``finalize_pending`` and activates the children.
    """
    # A taken task's attempt number is advanced in memory for its commit: put it back if this call
    # fails, so that a retry (the agent outlasts AWS's failures) builds the same commit again.
    read_attempts = [c.task.attempt for c in commits]
    try:
        return _commit_many(settings, commits)
    except BaseException:
        for c, attempt in zip(commits, read_attempts, strict=True):
            c.task.attempt = attempt
        raise


def _commit_many(settings: Settings, commits: Sequence[Commit]) -> list[bool]:
    results: list[bool] = [False] * len(commits)
    prepared: dict[int, _Prepared] = {}
    seen: set[str] = set()
    for i, c in enumerate(commits):
        if c.task.task_id in seen:
            continue  # the same task twice in one group (a duplicate delivery): one transaction
            # cannot write an item twice, and only one of them could commit anyway
        seen.add(c.task.task_id)
        ready = _prepare_commit(settings, c)
        if isinstance(ready, bool):
            results[i] = ready
        else:
            prepared[i] = ready
    pending = list(prepared)
    while pending:
        group: list[int] = []
        items = size = 0
        for i in pending:
            p = prepared[i]
            if group and (items + len(p.ops) > TRANSACTION_MAX_ITEMS or size + p.size > GROUP_MAX_BYTES):
                break
            group.append(i)
            items += len(p.ops)
            size += p.size
        refused = _commit_group([prepared[i] for i in group])
        for k, i in enumerate(group):
            if k in refused:
                log.warning("commit of task %s refused: lease lost, cancelled or outputs changed",
                            prepared[i].task.task_id)
                continue
            results[i] = True
            p = prepared[i]
            remember_values(p.task.session_id, p.outputs)  # now Completed, as written
            if p.staged_tasks:
                flagged = {r.result_id for r in p.staged_results if r.has_dependents}
                if p.staged_live:
                    finalize_live(settings, p.task, p.staged_tasks, flagged=flagged,
                                  committed={r.result_id for r in p.staged_results})
                else:
                    finalize(settings, p.task, p.staged_tasks, flagged=flagged)
        _release_dependents(settings, [prepared[i] for k, i in enumerate(group) if k not in refused])
        pending = pending[len(group):]
    return results


def _release_dependents(settings: Settings, committed: Sequence[_Prepared]) -> None:
    """Release and queue the dependents the committed tasks' items name (a dependency hop with no
    stream poll in between). Best effort: the results stream releases every dependent anyway, so a
    failure here (or a crash before it) only costs that hop its speed."""
    pairs = [pair for p in committed for pair in readiness.released_by(p.task, p.outputs)]
    if not pairs:
        return
    try:
        readiness.enqueue_tasks(settings, readiness.release_and_ready(settings, pairs), whole=True)
    except Exception:  # the stream's resolve is the safety net for exactly this
        log.warning("releasing %d dependents after a commit failed; the results stream will", len(pairs),
                    exc_info=True)


def _commit_group(group: Sequence[_Prepared]) -> set[int]:
    """Write the commit items of ``group`` in one transaction; the positions (in ``group``) of the
    attempts refused by their conditions. The others are written, in a retry if need be."""
    refused: set[int] = set()
    while True:
        live = [k for k in range(len(group)) if k not in refused]
        if not live:
            return refused
        owner = [k for k in live for _ in group[k].ops]
        try:
            transact([op for k in live for op in group[k].ops])
            return refused
        except TransactWriteError as exc:
            failed = {owner[j] for j in failed_indexes(exc) if j < len(owner)}
            if not failed:
                raise
            refused |= failed


def _prepare_commit(settings: Settings, c: Commit) -> _Prepared | bool:
    """Everything of a commit but the transaction; a bool when the attempt ends here instead (a
    failure it reported, or an output contract it broke, recorded as a failed attempt)."""
    task, worker_id, outcome = c.task, c.worker_id, c.outcome
    if outcome.error is not None:
        return fail(settings, task, worker_id, outcome.error, log=c.log) is not AttemptFate.LOST
    held = held_by(task, worker_id, TaskStatus.COMPLETED)
    taken = not claimed(task)
    read_attempt = int(task.attempt or 0)
    if taken:  # this commit writes the attempt number (and the status) in one go
        task.attempt = read_attempt + 1
    token = f"a{task.attempt}-{clock.new_id()[:12]}"
    started = time.monotonic()
    try:
        moved = check_contract(task, outcome)
        staged_results, staged_tasks = staged_items(settings, task, outcome, moved, token)
    except ContractViolation as exc:
        task.attempt = read_attempt
        err = RemoteError(type="OutputContractViolation", message=str(exc), traceback="", retryable=False)
        return fail(settings, task, worker_id, err, log=c.log) is not AttemptFate.LOST
    keys = store_values(settings, task.session_id, outcome.outputs, token)
    staged_ops = staged_in_commit(settings, staged_results, staged_tasks,
                                   commit_items=1 + len(outcome.outputs) + len(moved))
    if staged_ops is None:
        write_staged(staged_results, staged_tasks)
    measurements.record(settings, owner=task.owner, session_id=task.session_id, task_id=task.task_id,
                        attempt=int(task.attempt or 0), values=outcome.measurements)
    metrics = {**c.metrics, "upload": round(time.monotonic() - started, 6)}

    now = clock.now()
    actions: list[Any] = [
        task_move(None, TaskStatus.COMPLETED).set,
        path(TaskModel.ended_at).set(now),
        path(TaskModel.updated_at).set(now),
        path(TaskModel.metrics).set(metrics),
        path(TaskModel.attempts).set([*(task.attempts or []), attempt_record(
            task, worker_id, "completed", log=tasklogs.attempt_fields(settings, task, c.log),
            machine=settings.machine)]),
        *_LEASE_REMOVED,
    ]
    if taken:
        actions += [path(TaskModel.attempt).set(task.attempt),
                    path(TaskModel.started_at).set(task.started_at or now)]
    if staged_tasks:
        actions += [
            path(TaskModel.finalize_pending).set(now),
            path(TaskModel.due_at).set(now + settings.finalize_after_seconds),
        ]
    else:
        actions += _TIMER_REMOVED

    def commit_task(tx: TransactWrite) -> None:
        tx.update(TaskModel(task.task_id), actions=actions, condition=held)

    ops: list[Op] = [commit_task]
    for rid, data in outcome.outputs.items():
        ops.append(_complete_output(rid, task.task_id, data, keys.get(rid), now))
    for rid, sub in moved.items():
        ops.append(_delegate_output(rid, task.task_id, sub))
    ops += staged_ops or []
    inline = sum(len(data) for rid, data in outcome.outputs.items() if rid not in keys)
    inline += staged_bytes(staged_results, staged_tasks) if staged_ops else 0
    return _Prepared(task, ops, staged_results, staged_tasks, size=inline + 4096 * len(ops),
                     staged_live=staged_ops is not None, outputs=dict(outcome.outputs))


def _complete_output(rid: str, task_id: str, data: bytes, key: str | None, now: float) -> Op:
    move = result_move(ResultStatus.CREATED, ResultStatus.COMPLETED)
    actions: list[Any] = [
        move.set,
        path(ResultModel.size).set(len(data)),
        path(ResultModel.completed_at).set(now),
        path(ResultModel.updated_at).set(now),
        path(ResultModel.s3_key).set(key) if key else path(ResultModel.inline).set(data),
    ]

    def op(tx: TransactWrite) -> None:
        tx.update(
            ResultModel(rid),
            actions=actions,
            condition=move.guard & (ResultModel.owner_task_id == task_id),
        )

    return op


def _delegate_output(rid: str, task_id: str, subtask_id: str) -> Op:
    def op(tx: TransactWrite) -> None:
        tx.update(
            ResultModel(rid),
            actions=[ResultModel.owner_task_id.set(subtask_id), ResultModel.updated_at.set(clock.now())],
            condition=result_in(ResultStatus.CREATED) & (ResultModel.owner_task_id == task_id),
        )

    return op

"""A worker's hold on a task: take it on receipt, claim it, keep it (heartbeat), give it back.

A short task runs on its message's receipt, with no write: the SQS visibility timeout is its lease
and its commit, conditioned on the task being still Submitted at the attempt read, is its one write
(:func:`take`). A task that runs long enough to heartbeat is claimed then (Submitted -> Processing,
with a DynamoDB lease), so that the sweeper and cancellations see it running; a task is claimed at
once when the agent is told to (:func:`claim`). Every later write of the attempt is conditioned on
:func:`held_by`, so a worker presumed dead (SIGKILL, partition) that comes back changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pynamodb.exceptions import TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from skyloom.core import clock, readiness, sessions
from skyloom.core.cancellation import cancel_task
from skyloom.core.config import Settings
from skyloom.core.ddb import failed_indexes, transact, update_if
from skyloom.core.dispatching import TaskMessage
from skyloom.core.models import SessionModel, TaskModel
from skyloom.core.states import SessionStatus, TaskStatus
from skyloom.core.transitions import session_in, task_in, task_move

log = logging.getLogger(__name__)


#: A retry's message may come back up to this early (SQS delays are whole seconds, clocks differ).
NOT_BEFORE_SLACK_SECONDS = 0.25


def read_tasks(task_ids: Sequence[str]) -> dict[str, TaskModel]:
    """The items of a batch of received messages' tasks: one BatchGetItem per 100 (consistent)."""
    return {t.task_id: t for t in TaskModel.batch_get(list(dict.fromkeys(task_ids)), consistent_read=True)}


def take(settings: Settings, message: TaskMessage, task: TaskModel | None) -> TaskModel | None:
    """Whether a received message's task is to run now, judged from its item as read: no write.

    A short task runs on its message's receipt: the SQS visibility timeout is its lease, and its
    commit, conditioned on the task being still Submitted at the attempt read here, is the one
    write it must make (a duplicate delivery may run it twice; the first commit wins and its
    outputs are written once). A task that runs long enough to heartbeat is claimed then
    (:func:`heartbeat`), so that the sweeper and cancellations see it Processing. None: nothing
    to run (a duplicate, finished, cancelled, not due yet, or parked because its session is paused).
    """
    if task is None or not _session_allows(settings, message):
        return None
    if task.status != TaskStatus.SUBMITTED.value:
        return None
    if task.not_before is not None and task.not_before > clock.now() + NOT_BEFORE_SLACK_SECONDS:
        return None  # a duplicate of a retry's delayed message, which comes when the backoff is over
    task.started_at = clock.now()
    return task


def _session_allows(settings: Settings, message: TaskMessage) -> bool:
    """False if the task's session says not to run it: parked when paused, cancelled when ended."""
    session_status = sessions.cached_status(message.session_id)
    if session_status == SessionStatus.PAUSED.value and park(settings, message):
        return False
    if session_status not in (SessionStatus.RUNNING.value, SessionStatus.CLOSED.value, SessionStatus.PAUSED.value):
        cancel_task(message.task_id, None, f"session is {session_status or 'gone'}", by="skyloom")
        return False
    return True


def _due(now: float) -> Condition:
    due: Condition = TaskModel.not_before.does_not_exist() | (TaskModel.not_before <= now + NOT_BEFORE_SLACK_SECONDS)
    return due


#: A claim: a queued task to Processing, under a lease.
CLAIM = task_move(TaskStatus.SUBMITTED, TaskStatus.PROCESSING)


def _claim_actions(settings: Settings, task_id: str, worker_id: str, now: float) -> list[Any]:
    return [
        CLAIM.set,
        TaskModel.lease_owner.set(worker_id),
        TaskModel.lease_expires.set(now + settings.lease_seconds),
        TaskModel.due_shard.set(clock.due_shard(task_id, settings.due_shards)),
        TaskModel.due_at.set(now + settings.lease_seconds),
        TaskModel.updated_at.set(now),
    ]


def claim(settings: Settings, message: TaskMessage, worker_id: str) -> TaskModel | None:
    """Submitted -> Processing with a lease, reading the task in the same write. None: not
    claimable (duplicate message, done, cancelled, not due, or parked because its session is paused)."""
    if not _session_allows(settings, message):
        return None
    now = clock.now()
    t = TaskModel(message.task_id)
    actions = [*_claim_actions(settings, message.task_id, worker_id, now), TaskModel.attempt.add(1),
               TaskModel.started_at.set(now)]
    return t if update_if(t, actions, CLAIM.guard & _due(now)) else None


def claimed(task: TaskModel) -> bool:
    """Whether the attempt holds a lease (Processing), or runs on its message's receipt (Submitted)."""
    return task.status != TaskStatus.SUBMITTED.value


def claim_taken(settings: Settings, task: TaskModel, worker_id: str) -> bool:
    """Claim, in place, a task taken by :func:`take` that runs longer than a heartbeat: Submitted at
    the attempt read -> Processing at the next attempt. False: another attempt or a cancellation
    came first (the running copy is then to be stopped).

    A refusal is checked once against the item: when AWS applied the claim but its answer was lost,
    botocore's retry of the same write is refused by its own first success, and the task is ours.
    """
    now = clock.now()
    number = int(task.attempt or 0) + 1
    actions = [*_claim_actions(settings, task.task_id, worker_id, now), TaskModel.attempt.set(number),
               TaskModel.started_at.set(task.started_at or now)]
    if not update_if(task, actions, held_by(task, worker_id, TaskStatus.PROCESSING) & _due(now)):
        try:
            stored = TaskModel.get(task.task_id, consistent_read=True)
        except TaskModel.DoesNotExist:
            return False
        if not (stored.status == TaskStatus.PROCESSING.value and stored.lease_owner == worker_id
                and stored.attempt == number):
            return False
        task.refresh(consistent_read=True)
    return True


def park(settings: Settings, message: TaskMessage) -> bool:
    """Put a queued task of a paused session back to Pending (nothing remaining), atomically with a
    check that the session is still paused. Resume (or the sweeper, via the timer) re-queues it."""
    now = clock.now()

    def check_paused(tx: TransactWrite) -> None:
        tx.condition_check(SessionModel, message.session_id, condition=session_in(SessionStatus.PAUSED))

    parking = task_move(TaskStatus.SUBMITTED, TaskStatus.PENDING)

    def to_pending(tx: TransactWrite) -> None:
        tx.update(
            TaskModel(message.task_id),
            actions=[
                parking.set,
                TaskModel.updated_at.set(now),
                TaskModel.due_shard.set(clock.due_shard(message.task_id, settings.due_shards)),
                TaskModel.due_at.set(now + settings.redispatch_after_seconds),
            ],
            condition=parking.guard & TaskModel.remaining.does_not_exist(),
        )

    try:
        transact([check_paused, to_pending])
    except TransactWriteError as exc:
        if failed_indexes(exc):
            return False
        raise
    return True


def held_by(task: TaskModel, worker_id: str, target: TaskStatus | None) -> Condition:
    """The attempt is still ours, for a write that moves the task to ``target`` (None: keeps its
    status): its lease, or for a task run on its receipt, still Submitted at the attempt it was read
    at (no other attempt was written, it was not cancelled)."""
    source = TaskStatus.PROCESSING if claimed(task) else TaskStatus.SUBMITTED
    where = task_in(source) if target is None else task_move(source, target).guard
    if source is TaskStatus.SUBMITTED:
        taken: Condition = where & (TaskModel.attempt == task.attempt)
        return taken
    held: Condition = where & (TaskModel.lease_owner == worker_id) & (TaskModel.attempt == task.attempt)
    return held


def heartbeat(settings: Settings, task: TaskModel, worker_id: str) -> bool:
    """Extend the lease (claiming, in place, a task that ran on its receipt so far). False means it
    was lost: another worker may be running the task now, or it was cancelled."""
    if not claimed(task):
        return claim_taken(settings, task, worker_id)
    now = clock.now()
    until = now + settings.lease_seconds
    extended = [TaskModel.lease_expires.set(until), TaskModel.due_at.set(until)]
    return update_if(TaskModel(task.task_id), extended, held_by(task, worker_id, None))



def give_back(settings: Settings, task: TaskModel, worker_id: str) -> bool:
    """Give a claimed task back without counting the attempt (a draining worker). A task run on its
    message's receipt holds nothing to give back but the message."""
    if not claimed(task):
        return True
    now = clock.now()
    requeue = [TaskModel.attempt.add(-1), TaskModel.lease_owner.remove(), TaskModel.lease_expires.remove(),
               *readiness.queued_actions(settings, task.task_id, now)]
    return update_if(TaskModel(task.task_id), requeue, held_by(task, worker_id, TaskStatus.SUBMITTED))  # type: ignore[arg-type]

"""A failed attempt: the task is retried (re-queued after a backoff) while retries remain, else
it ends in Error or Timeout and its outputs are aborted in the same transaction, so that whoever
waits on them learns why. Also the sweeper's verdict on an expired lease (the worker is presumed
lost: a failed attempt) and the end of a task whose message went to the dead-letter queue.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from pynamodb.expressions.condition import Condition

from skyloom.core import clock, readiness, tasklogs
from skyloom.core.claims import claim_taken, claimed, held_by
from skyloom.core.config import Settings
from skyloom.core.ddb import (
    update_if,
)
from skyloom.core.machine import Machine
from skyloom.core.models import TaskModel
from skyloom.core.settlement import abort_output, ending_actions, settle
from skyloom.core.states import AttemptFate, TaskStatus, retry_decision
from skyloom.core.transitions import task_move
from skyloom.runtime.outcome import RemoteError, TaskLog

log = logging.getLogger(__name__)


#: Tracebacks are kept on the task item; DynamoDB items are capped at 400 KB.
MAX_TRACEBACK_CHARS = 16_000


def attempt_record(task: TaskModel, worker_id: str, outcome: str, error: RemoteError | None = None,
                    log: dict[str, Any] | None = None, machine: Machine | None = None) -> dict[str, Any]:
    """One ended attempt, as the task item keeps it; ``log``: its log's fields (``tasklogs``);
    ``machine``: where it ran (the writing worker's; the sweeper, which writes a lost worker's
    record, does not know it)."""
    rec: dict[str, Any] = {
        "number": int(task.attempt or 0),
        "worker": worker_id,
        "started_at": task.started_at,
        "ended_at": clock.now(),
        "outcome": outcome,
    }
    if error is not None:
        rec.update(
            error_type=error.type, message=error.message[:4000], traceback=error.traceback[-MAX_TRACEBACK_CHARS:]
        )
    rec.update(log or {})
    if machine is not None:
        rec["machine"] = machine.model_dump()
    return rec



def root_error(task: TaskModel, status: str, error: RemoteError) -> dict[str, Any]:
    """What dependents and the client are told about a final failure (a protocol.ResultError)."""
    return {
        "task_id": task.task_id,
        "handler": task.handler,
        "status": status,
        "attempts": int(task.attempt or 0),
        "type": error.type,
        "message": error.message[:4000],
        "traceback": error.traceback[-MAX_TRACEBACK_CHARS:],
        "args": error.args,
    }


def _record_failure(
    settings: Settings, task: TaskModel, error: RemoteError, *, timed_out: bool, worker: str,
    held: Callable[[TaskStatus], Condition], log: dict[str, Any] | None = None,
) -> AttemptFate:
    """Retry or end the task; ``held(target)``: the condition that the attempt still holds it, for
    a write that moves it to ``target``."""
    attempts = [*(task.attempts or []), attempt_record(task, worker, "timeout" if timed_out else "error", error, log,
                                                        machine=settings.machine)]
    max_retries = int((task.options or {}).get("max_retries", settings.default_max_retries))
    now = clock.now()
    if error.retryable and retry_decision(int(task.attempt or 0), max_retries):
        delay = retry_delay(settings, int(task.attempt or 1))
        requeue = [
            TaskModel.attempts.set(attempts),
            TaskModel.lease_owner.remove(),
            TaskModel.lease_expires.remove(),
            *readiness.queued_actions(settings, task.task_id, now, delay=delay),
        ]
        if not update_if(TaskModel(task.task_id), requeue, held(TaskStatus.SUBMITTED)):  # type: ignore[arg-type]
            return AttemptFate.LOST
        readiness.enqueue_tasks(settings, [task], delay_seconds=delay)
        return AttemptFate.RETRIED

    status = TaskStatus.TIMEOUT if timed_out else TaskStatus.ERROR
    err = root_error(task, status.value, error)
    ended = settle(
        task.task_id,
        actions=ending_actions(status, err, now, attempts=attempts),
        condition=held(status),
        outputs={rid: abort_output(rid, task.task_id, err) for rid in task.expected_outputs or []},
    )
    if not ended:
        return AttemptFate.LOST
    return AttemptFate.TIMEOUT if timed_out else AttemptFate.ERROR


def retry_delay(settings: Settings, attempt: int) -> int:
    """Exponential backoff before retry ``attempt + 1``, in whole seconds (SQS DelaySeconds, <= 900)."""
    return int(min(900.0, settings.retry_backoff_seconds * 2 ** max(0, attempt - 1)))


def fail(settings: Settings, task: TaskModel, worker_id: str, error: RemoteError, *, timed_out: bool = False,
         log: TaskLog | None = None) -> AttemptFate:
    """Record a failed attempt (and what it printed): re-queue it if retries remain, else end it
    and abort its outputs. LOST if the attempt no longer held the task (nothing written).
    """
    if not claimed(task) and not claim_taken(settings, task, worker_id):
        return AttemptFate.LOST  # a failure of a task run on its receipt is recorded as any other: claim it first
    return _record_failure(settings, task, error, timed_out=timed_out, worker=worker_id,
                           held=functools.partial(held_by, task, worker_id),
                           log=tasklogs.attempt_fields(settings, task, log))


def expire_lease(settings: Settings, task: TaskModel) -> AttemptFate:
    """The sweeper's verdict on a lease that ran out: the worker is presumed dead; a failed attempt."""
    now = clock.now()

    def held(target: TaskStatus) -> Condition:
        expired: Condition = (task_move(TaskStatus.PROCESSING, target).guard & (TaskModel.attempt == task.attempt)
                              & (TaskModel.lease_expires < now))
        return expired

    error = RemoteError(
        type="WorkerLost",
        message=f"worker {task.lease_owner} stopped heartbeating on attempt {task.attempt} (lease expired)",
        traceback="",
    )
    return _record_failure(settings, task, error, timed_out=False, worker=str(task.lease_owner), held=held)



def fail_undeliverable(settings: Settings, task_id: str, reason: str) -> bool:
    """End a queued task whose message could not be processed (it reached the dead-letter queue).

    Only a task still Submitted is touched: one that is Processing has a worker (or the lease
    sweeper) taking care of it, and one already final was a stale duplicate. Ends it in Error with
    ``reason`` and aborts its outputs, exactly as a final failed attempt would, so dependents are
    cancelled and the client learns why. True if this call ended the task (idempotent under replay).
    """
    try:
        t = TaskModel.get(task_id, consistent_read=True)
    except TaskModel.DoesNotExist:
        return False
    if t.status != TaskStatus.SUBMITTED.value:
        return False
    err = root_error(t, TaskStatus.ERROR.value, RemoteError(type="UndeliverableMessage", message=reason, traceback=""))
    # Still queued, and queued by the same attempt: a claim in between means it was deliverable.
    queued: Condition = task_move(TaskStatus.SUBMITTED, TaskStatus.ERROR).guard & (TaskModel.attempt == t.attempt)
    return settle(
        task_id,
        actions=ending_actions(TaskStatus.ERROR, err, clock.now()),
        condition=queued,
        outputs={rid: abort_output(rid, task_id, err) for rid in t.expected_outputs or []},
    )

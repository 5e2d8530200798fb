"""The dispatch sweeper: repairs what crashes leave behind, driven by the tasks' timer index.

Every task that something must happen to by a deadline carries ``due_shard``/``due_at`` (see
``skyloom.core.resources.TASKS``): queued tasks (their message may be lost), claimed tasks (their
worker may be dead), and completed parents whose children are not live yet. The sweeper reads only
overdue entries, so its cost follows the number of repairs, not the size of the system.
"""

from __future__ import annotations

import logging
from collections import Counter

from skyloom.core import clock, readiness, sessions
from skyloom.core.config import Settings
from skyloom.core.ddb import update_if
from skyloom.core.dispatching import redispatch_interval
from skyloom.core.models import TaskModel
from skyloom.core.retries import expire_lease
from skyloom.core.staging import finalize, staged_children
from skyloom.core.states import TASK_FINAL, AttemptFate, Repair, SessionStatus, TaskStatus
from skyloom.core.transitions import task_in

log = logging.getLogger(__name__)


def overdue(settings: Settings, now: float, limit: int) -> list[TaskModel]:
    found: list[TaskModel] = []
    for shard in range(settings.due_shards):
        found.extend(TaskModel.by_due.query(str(shard), TaskModel.due_at <= now, limit=limit))
    return found


def _arm_resend(settings: Settings, task: TaskModel, now: float) -> float | None:
    """Claim this re-send: move a queued task's timer to the next pass due after ``base``. Only the
    sweeper that wins this write sends; it returns the new ``due_at`` (None if another won, or the
    task was claimed). The timer is short on purpose: if the send then fails, or this process dies
    before it, the message is tried again soon, not after the task's whole wait."""
    due = now + settings.redispatch_after_seconds
    armed = update_if(
        TaskModel(task.task_id),
        [TaskModel.due_at.set(due)],
        task_in(TaskStatus.SUBMITTED) & (TaskModel.due_at == task.due_at),
    )
    return due if armed else None


def _defer_next_resend(settings: Settings, task: TaskModel, now: float, armed: float) -> None:
    """After a successful send, check again later each time: after as long again as the task has
    waited (see :func:`~skyloom.core.dispatching.redispatch_interval`). Conditional on the timer this
    pass armed, so a claim or another sweeper's pass in between wins."""
    waited = now - float(task.submitted_at if task.submitted_at is not None else now)
    due = now + redispatch_interval(settings.redispatch_after_seconds, waited)
    if due > armed:
        update_if(
            TaskModel(task.task_id),
            [TaskModel.due_at.set(due)],
            task_in(TaskStatus.SUBMITTED) & (TaskModel.due_at == armed),
        )


def _clear_timer(task: TaskModel) -> None:
    update_if(TaskModel(task.task_id), [TaskModel.due_shard.remove(), TaskModel.due_at.remove()],
              TaskModel.due_at == task.due_at)


def _unpark(settings: Settings, task: TaskModel, now: float) -> Repair:
    """A task parked while its session was paused: queue it once the session runs again."""
    session_status = sessions.cached_status(task.session_id, ttl=0)
    if session_status in (SessionStatus.RUNNING.value, SessionStatus.CLOSED.value):
        if readiness.try_ready(settings, task):
            readiness.enqueue_tasks(settings, [task])
            return Repair.UNPARKED
        return Repair.RACED
    if session_status == SessionStatus.PAUSED.value:
        _rearm(settings, task, now)
        return Repair.PARKED
    _clear_timer(task)
    return Repair.CLEARED


def _rearm(settings: Settings, task: TaskModel, now: float) -> None:
    update_if(TaskModel(task.task_id), [TaskModel.due_at.set(now + settings.redispatch_after_seconds)],
              TaskModel.due_at == task.due_at)


def repair(settings: Settings, task: TaskModel, now: float) -> Repair:
    """Do what an overdue task needs; returns what was done (for logs and metrics)."""
    status = task.status
    if status == TaskStatus.SUBMITTED.value:
        armed = _arm_resend(settings, task, now)
        if armed is None:
            return Repair.RACED
        readiness.enqueue_tasks(settings, [task])  # a failure raises with the short timer armed
        _defer_next_resend(settings, task, now, armed)
        return Repair.REDISPATCHED
    if status == TaskStatus.PROCESSING.value:
        if task.lease_expires is not None and task.lease_expires < now:
            fate = expire_lease(settings, task)
            log.info("lease of task %s expired: %s", task.task_id, fate.name.lower())
            return Repair.LEASE_EXPIRED if fate is not AttemptFate.LOST else Repair.RACED
        return Repair.LEASE_ALIVE
    if status == TaskStatus.COMPLETED.value and task.finalize_pending is not None:
        finalize(settings, task, staged_children(task))
        return Repair.FINALIZED
    if status == TaskStatus.PENDING.value and not task.remaining:
        return _unpark(settings, task, now)
    if status in {s.value for s in TASK_FINAL} or status in (TaskStatus.PENDING.value, TaskStatus.CREATING.value):
        _clear_timer(task)
        return Repair.CLEARED
    return Repair.SKIPPED


def sweep(settings: Settings, *, limit: int = 200) -> Counter[str]:
    """One pass over overdue tasks. A failure on one task is logged and the pass goes on."""
    now = clock.now()
    done: Counter[str] = Counter()
    for task in overdue(settings, now, limit):
        try:
            done[repair(settings, task, now)] += 1
        except Exception:
            log.exception("sweeper could not repair task %s", task.task_id)
            done[Repair.ERROR] += 1
    return done

"""Session lifecycle beyond create/close: cancel, pause, resume, purge, delete; and task cancellation.

Each session transition is one conditional write (:func:`skyloom.core.sessions.transition_session`);
the work it implies on the session's tasks and data follows and is idempotent, so a call that dies
half-way is completed by calling it again (and, for parked tasks, by the sweeper).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pynamodb.expressions.condition import Condition

from skyloom.core import blobs, checkpoints, clock, readiness, tasklogs
from skyloom.core.aws import client
from skyloom.core.cancellation import cancel_task
from skyloom.core.config import Settings
from skyloom.core.ddb import update_if
from skyloom.core.models import EdgeModel, ResultModel, SessionModel, TaskModel
from skyloom.core.protocol import SessionInfo, TaskInfo
from skyloom.core.sessions import load_session, session_info, transition_session
from skyloom.core.states import TASK_FINAL, ResultStatus, SessionStatus, TaskStatus
from skyloom.core.tasks import load_tasks, task_info
from skyloom.core.transitions import result_move
from skyloom.errors import Conflict

_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="skyloom-lifecycle")
_OPEN = [s.value for s in TaskStatus if s not in TASK_FINAL]


def _each(fn: Any, items: Iterable[Any]) -> list[Any]:
    return list(_pool.map(fn, items))


def session_tasks(session_id: str, *statuses: str) -> list[TaskModel]:
    cond = TaskModel.status.is_in(*statuses) if statuses else None
    return list(TaskModel.by_session.query(session_id, filter_condition=cond))


def session_results(session_id: str, *statuses: str) -> list[ResultModel]:
    cond = ResultModel.status.is_in(*statuses) if statuses else None
    return list(ResultModel.by_session.query(session_id, filter_condition=cond))


# -------------------------------------------------------------------------------------- tasks
def cancel_tasks(settings: Settings, owner: str, session_id: str, ids: list[str]) -> tuple[list[TaskInfo], int]:
    """Cancel tasks of the caller's session: queued ones never start, running ones are stopped by
    their worker at its next heartbeat; outputs are aborted and dependents cancelled (via resolve).

    Returns the tasks' states and how many this call cancelled (a repeated call cancels none)."""
    session = load_session(owner, session_id)
    found = load_tasks(session, ids)
    done = _each(lambda t: cancel_task(t, None, f"cancelled by {owner}", running_too=True, by=owner), list(found))
    return [task_info(t) for t in load_tasks(session, ids).values()], sum(map(bool, done))


# ------------------------------------------------------------------------------------ sessions
def cancel_session(settings: Settings, owner: str, session_id: str) -> tuple[SessionInfo, int]:
    """Cancel every unfinished task and abort every result still waiting for a value.

    Returns the session and how many tasks this call cancelled."""
    s = transition_session(owner, session_id, SessionStatus.CANCELLED)
    open_tasks = [t.task_id for t in session_tasks(session_id, *_OPEN)]
    done = _each(lambda t: cancel_task(t, None, "session cancelled", running_too=True, by=owner), open_tasks)
    err = {"task_id": "-", "status": "Cancelled", "message": f"session {session_id} was cancelled by {owner}",
           "type": "SessionCancelled", "attempts": 0, "handler": None, "traceback": None}
    _each(lambda r: _abort_unowned(r.result_id, err), session_results(session_id, ResultStatus.CREATED.value))
    return session_info(s), sum(map(bool, done))


def _abort_unowned(result_id: str, err: dict[str, Any]) -> None:
    now = clock.now()
    move = result_move(ResultStatus.CREATED, ResultStatus.ABORTED)
    update_if(
        ResultModel(result_id),
        [move.set, ResultModel.error.set(err), ResultModel.completed_at.set(now), ResultModel.updated_at.set(now)],
        move.guard,
    )


def pause_session(settings: Settings, owner: str, session_id: str) -> SessionInfo:
    """Nothing new starts: workers park the session's queued tasks instead of claiming them."""
    return session_info(transition_session(owner, session_id, SessionStatus.PAUSED))


def resume_session(settings: Settings, owner: str, session_id: str) -> SessionInfo:
    """Back to Running, then queue every task that became ready (or was parked) while paused."""
    s = transition_session(owner, session_id, SessionStatus.RUNNING)
    ready_parked(settings, session_id)
    return session_info(s)


def ready_parked(settings: Settings, session_id: str) -> int:
    parked = [t for t in session_tasks(session_id, TaskStatus.PENDING.value) if not t.remaining]
    winners = [t for t in _each(lambda t: t if readiness.try_ready(settings, t) else None, parked) if t]
    readiness.enqueue_tasks(settings, winners)
    return len(winners)


def _require_ended(s: SessionModel, action: str) -> None:
    if s.status in (SessionStatus.RUNNING.value, SessionStatus.PAUSED.value):
        raise Conflict(
            f"session {s.session_id} is {s.status}: close or cancel it before you {action} it",
            field="session_id",
            details={"status": s.status},
        )


def purge_session(settings: Settings, owner: str, session_id: str) -> SessionInfo:
    """Delete every value of the session (S3 objects, inline values, payloads, task logs, checkpoints);
    metadata stays."""
    _require_ended(load_session(owner, session_id), "purge")
    s = transition_session(owner, session_id, SessionStatus.PURGED)
    _purge_data(settings, session_id)
    return session_info(s)


def delete_session(settings: Settings, owner: str, session_id: str) -> SessionInfo:
    """Delete the session's data and metadata; the session item stays as a Deleted tombstone."""
    _require_ended(load_session(owner, session_id), "delete")
    s = transition_session(owner, session_id, SessionStatus.DELETED)
    _purge_data(settings, session_id)
    results = session_results(session_id)
    with EdgeModel.batch_write() as batch:
        for r in results:
            for e in EdgeModel.query(r.result_id):
                batch.delete(e)
    with ResultModel.batch_write() as batch:
        for r in results:
            batch.delete(r)
    with TaskModel.batch_write() as batch:
        for t in session_tasks(session_id):
            batch.delete(t)
    return session_info(s)


def _purge_data(settings: Settings, session_id: str) -> None:
    _delete_prefix(settings, blobs.session_prefix(session_id))

    def forget_value(r: ResultModel) -> None:
        actions: list[Any] = [ResultModel.inline.remove(), ResultModel.s3_key.remove(),
                              ResultModel.updated_at.set(clock.now())]
        condition: Condition = ResultModel.result_id.exists()
        if r.status == ResultStatus.COMPLETED.value:
            move = result_move(ResultStatus.COMPLETED, ResultStatus.DELETED)
            actions.append(move.set)
            condition = move.guard
        ResultModel(r.result_id).update(actions=actions, condition=condition)

    def forget_payload(t: TaskModel) -> None:
        TaskModel(t.task_id).update(actions=[TaskModel.payload.remove()], condition=TaskModel.task_id.exists())

    _each(forget_value, [r for r in session_results(session_id) if r.inline is not None or r.s3_key])
    tasks = session_tasks(session_id)
    _each(forget_payload, [t for t in tasks if t.payload])
    _each(tasklogs.forget_logs, [t for t in tasks if tasklogs.has_logs(t)])
    checkpoints.purge(session_id)


def _delete_prefix(settings: Settings, prefix: str) -> None:
    s3 = client("s3", settings)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=settings.bucket, Delete={"Objects": keys, "Quiet": True})

"""Reading tasks back: the API's and the CLI's view of a task item."""

from __future__ import annotations

from collections.abc import Iterable

from skyloom.core.config import Settings
from skyloom.core.models import SessionModel, TaskModel
from skyloom.core.protocol import Attempt, TaskInfo
from skyloom.core.sessions import load_session, require_in_session
from skyloom.errors import TaskNotFound


def task_info(t: TaskModel) -> TaskInfo:
    return TaskInfo(
        task_id=t.task_id,
        session_id=t.session_id,
        status=t.status,
        handler=t.handler,
        label=t.label,
        data_dependencies=list(t.data_dependencies or []),
        optional_dependencies=sorted(t.optional_deps or []),
        lazy_dependencies=sorted(t.lazy_deps or []),
        aborted_inputs=sorted(t.aborted_inputs or []),
        expected_outputs=list(t.expected_outputs or []),
        remaining=sorted(t.remaining or []),
        options=dict(t.options or {}),
        partition=t.partition,
        parent_task_id=t.parent_task_id,
        attempt=int(t.attempt or 0),
        # The log text and its key stay out: the task's view says how much was printed, getTaskLogs reads it.
        attempts=[Attempt(**{k: v for k, v in a.items() if k in Attempt.model_fields}) for a in (t.attempts or [])],
        error=t.error,
        created_at=t.created_at,
        submitted_at=t.submitted_at,
        started_at=t.started_at,
        ended_at=t.ended_at,
        metrics=t.metrics,
    )


def load_tasks(session: SessionModel, ids: Iterable[str], field: str = "ids") -> dict[str, TaskModel]:
    wanted = list(dict.fromkeys(ids))
    found = {t.task_id: t for t in TaskModel.batch_get(wanted, consistent_read=True)}
    require_in_session(session, wanted, found, TaskNotFound, "task", field)
    return found


def get_tasks(settings: Settings, owner: str, session_id: str, ids: list[str]) -> list[TaskInfo]:
    session = load_session(owner, session_id)
    found = load_tasks(session, ids)
    return [task_info(found[i]) for i in dict.fromkeys(ids)]

"""Routes that change a session's or a task's lifecycle: cancel, pause, resume, purge, delete.

Kept apart from ``routes.py`` (reads and submissions) on their own router, which ``routes.py`` includes
in its resolver, so they share its validation, error mapping, identity and OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.metrics import MetricUnit

from skyloom.core import lifecycle
from skyloom.core.protocol import IdsRequest, SessionInfo, TasksResponse
from skyloom_server.functions.submit.shared import CurrentSettings, Owner, SessionId, metrics, responses

router = Router()


def _session_route(path: str, operation: str, summary: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return router.post(
        f"/sessions/<session_id>/{path}",
        operation_id=operation,
        summary=summary,
        tags=["sessions"],
        responses=responses(200, body=False),
    )


@_session_route("cancel", "cancelSession", "Cancel a session and every unfinished task in it")
def cancel_session(session_id: SessionId, owner: Owner, settings: CurrentSettings) -> SessionInfo:
    """Queued tasks never start, running ones are stopped within a heartbeat; outputs are aborted."""
    info, cancelled = lifecycle.cancel_session(settings, owner, session_id)
    metrics.add_metric(name="TasksCancelled", unit=MetricUnit.Count, value=cancelled)
    return info


@_session_route("pause", "pauseSession", "Pause a session: nothing new starts")
def pause_session(session_id: SessionId, owner: Owner, settings: CurrentSettings) -> SessionInfo:
    """Running tasks finish, submissions are still accepted, queued work waits for resume."""
    return lifecycle.pause_session(settings, owner, session_id)


@_session_route("resume", "resumeSession", "Resume a paused session")
def resume_session(session_id: SessionId, owner: Owner, settings: CurrentSettings) -> SessionInfo:
    """Work that became ready while paused is queued again."""
    return lifecycle.resume_session(settings, owner, session_id)


@_session_route("purge", "purgeSession", "Delete all result data of a closed or cancelled session")
def purge_session(session_id: SessionId, owner: Owner, settings: CurrentSettings) -> SessionInfo:
    """Values go (S3 objects, inline values, payloads); metadata stays for inspection."""
    return lifecycle.purge_session(settings, owner, session_id)


@router.delete(
    "/sessions/<session_id>",
    operation_id="deleteSession",
    summary="Delete a closed or cancelled session, its data and its metadata",
    tags=["sessions"],
    responses=responses(200, body=False),
)
def delete_session(session_id: SessionId, owner: Owner, settings: CurrentSettings) -> SessionInfo:
    """Leaves a Deleted tombstone; the session then reads as not found."""
    return lifecycle.delete_session(settings, owner, session_id)


@router.post(
    "/sessions/<session_id>/tasks/cancel",
    operation_id="cancelTasks",
    summary="Cancel tasks",
    tags=["tasks"],
    responses=responses(200, body=True),
)
def cancel_tasks(session_id: SessionId, req: IdsRequest, owner: Owner, settings: CurrentSettings) -> TasksResponse:
    """Queued tasks never start; running ones are stopped at their worker's next heartbeat."""
    tasks, cancelled = lifecycle.cancel_tasks(settings, owner, session_id, req.ids)
    metrics.add_metric(name="TasksCancelled", unit=MetricUnit.Count, value=cancelled)
    return TasksResponse(tasks=tasks)

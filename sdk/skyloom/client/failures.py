"""Turn an aborted result into the exception its reader should see.

The control plane records, on every result it aborts, the task that failed at the root of the
chain and its last error. Rebuilding a typed exception from it lets ``future.result()`` raise
``TaskFailed`` with the remote traceback, as if the function had run locally; when the task's own
exception type is importable here, the exception is an instance of that type too
(:mod:`skyloom.client.native`), so ``except ValueError`` catches a task's ``ValueError``.
"""

from __future__ import annotations

from skyloom.client.native import native_failure
from skyloom.core.protocol import ResultInfo
from skyloom.errors import DependencyAborted, TaskCancelled, TaskFailed, TaskTimedOut

_BY_STATUS: dict[str, type[TaskFailed]] = {
    "Error": TaskFailed,
    "Timeout": TaskTimedOut,
    "Cancelled": TaskCancelled,
}


def failure_of(info: ResultInfo) -> TaskFailed:
    """The exception for an Aborted result, of the task's own exception type too when it can be.

    A root task other than the result's owner means the owner never ran because an input aborted:
    that is :class:`DependencyAborted`, still carrying the root task's error so the real cause is
    one ``print`` away.
    """
    err = info.error
    if err is None:
        return TaskFailed(
            f"result {info.result_id} was aborted (no error was recorded)",
            task_id=info.owner_task_id,
        )
    cls = _BY_STATUS.get(err.status, TaskFailed)
    via = ""
    if info.owner_task_id and err.task_id != info.owner_task_id:
        cls = DependencyAborted
        via = f"task {info.owner_task_id} never ran: an input was aborted because "
    attempts = f"{err.attempts} attempt{'s' if err.attempts != 1 else ''}"
    remote = f"{err.type}: {err.message}" if err.type else err.message
    message = (
        f"result {info.result_id}: {via}task {err.task_id} (handler {err.handler or '?'}) "
        f"ended {err.status} after {attempts}: {remote}"
    )
    if err.traceback:
        message += "\n\nRemote traceback:\n" + err.traceback.rstrip()
    failure = cls(
        message,
        task_id=err.task_id,
        handler=err.handler,
        attempts=err.attempts,
        remote_type=err.type,
        remote_traceback=err.traceback,
        details={"result_id": info.result_id, "status": err.status, "owner_task_id": info.owner_task_id},
    )
    return native_failure(failure, err.type, err.args, remote_message=err.message)

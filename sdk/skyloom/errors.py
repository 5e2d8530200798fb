"""The one error hierarchy of Skyloom.

Every error the SDK raises derives from :class:`SkyloomError`; the control plane maps the same classes
to HTTP status codes in one place (``functions/submit/errors.py``), and the client maps the JSON body
back to the same class, so a user catches the same exception whether the failure happened locally or
on the other side of API Gateway.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SkyloomError(Exception):
    """Root of every Skyloom error."""

    #: HTTP status the API answers with when this error crosses it.
    http_status: ClassVar[int] = 500
    #: Stable machine-readable code carried in the JSON error body.
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body


class InvalidRequest(SkyloomError):
    """The request is malformed or breaks a rule of the model; nothing was written."""

    http_status = 400
    code = "invalid_request"


class InvalidArgument(InvalidRequest, ValueError):
    """The SDK refused to build a request (bad option, limit exceeded) before sending anything.

    Same code, field and details as the API's 400 for the same input; also a ``ValueError``, which
    is what building an invalid request (or options) raised before these checks were typed.
    """


class PayloadTooLarge(InvalidRequest):
    """Inline data or a request body exceeds a named limit."""

    http_status = 413
    code = "payload_too_large"


class GraphCycle(InvalidRequest):
    """Submitted tasks would wait on each other forever."""

    code = "dependency_cycle"


class Unauthorized(SkyloomError):
    """The caller could not be identified."""

    http_status = 401
    code = "unauthorized"


class Forbidden(SkyloomError):
    """The caller is known but may not do this: a partition does not admit the identity or handler.

    Never used for another identity's objects: those are :class:`NotFound`, so ids cannot be probed.
    """

    http_status = 403
    code = "forbidden"


class NotFound(SkyloomError):
    """The object does not exist, or belongs to another identity (we do not tell which)."""

    http_status = 404
    code = "not_found"


class SessionNotFound(NotFound):
    """No session with this id is visible to the caller."""

    code = "session_not_found"


class ResultNotFound(NotFound):
    """A named result id does not exist in the session."""

    code = "result_not_found"


class TaskNotFound(NotFound):
    """A named task id does not exist in the session."""

    code = "task_not_found"


class Conflict(SkyloomError):
    """The object is not in a state that allows the operation."""

    http_status = 409
    code = "conflict"


class InputAborted(Conflict):
    """A running task asked for the value of an optional input that was aborted."""

    code = "input_aborted"


class SessionClosed(Conflict):
    """The session no longer accepts this operation (closed, cancelled, purged)."""

    code = "session_closed"


class ResultAlreadyWritten(Conflict):
    """A result is written at most once."""

    code = "result_already_written"


class ClaimConflict(Conflict):
    """Another worker holds the task, or it is no longer runnable."""

    code = "claim_conflict"


class ConnectionFailed(SkyloomError):
    """The Skyloom endpoint could not be reached."""

    code = "connection_failed"


class EnvironmentMismatch(SkyloomError):
    """The workers run another Python (major.minor) or cloudpickle than this client ships functions with.

    Raised by the client before it submits a function shipped by value, which the workers could not
    load (or would run differently); ``details`` holds both sides' versions and the partition.
    """

    http_status = 409
    code = "environment_mismatch"


class WaitTimeout(SkyloomError, TimeoutError):
    """A wait on results ran out of time before they were ready."""

    http_status = 408
    code = "wait_timeout"


class TaskFailed(SkyloomError):
    """The task that should produce a result failed for good.

    The message names the task, its handler, how many attempts ran and the remote error with its
    traceback, so that nobody needs the AWS console to debug a failure.
    """

    code = "task_failed"

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = None,
        handler: str | None = None,
        attempts: int = 0,
        remote_type: str | None = None,
        remote_traceback: str | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message, details=details)
        self.task_id = task_id
        self.handler = handler
        self.attempts = attempts
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


class TaskTimedOut(TaskFailed):
    """The task ran past its ``max_duration`` on every attempt."""

    code = "task_timed_out"


class TaskCancelled(TaskFailed):
    """The task was cancelled before it produced the result."""

    code = "task_cancelled"


class DependencyAborted(TaskFailed):
    """An input of the task was aborted, so the task never ran."""

    code = "dependency_aborted"


#: Every error class by its wire code, for the client to rebuild the right type.
ERRORS_BY_CODE: dict[str, type[SkyloomError]] = {
    cls.code: cls
    for cls in (
        SkyloomError,
        InvalidRequest,
        PayloadTooLarge,
        GraphCycle,
        Unauthorized,
        Forbidden,
        NotFound,
        SessionNotFound,
        ResultNotFound,
        TaskNotFound,
        Conflict,
        SessionClosed,
        ResultAlreadyWritten,
        ClaimConflict,
        ConnectionFailed,
        EnvironmentMismatch,
        WaitTimeout,
        TaskFailed,
        TaskTimedOut,
        TaskCancelled,
        DependencyAborted,
    )
}

"""Skyloom: dynamic graphs of Python tasks on serverless AWS, or on one laptop.

Example:
    >>> import skyloom
    >>> @skyloom.task
    ... def square(x: int) -> int:
    ...     return x * x
    >>> with skyloom.connect() as client:
    ...     print(square.submit(7).result())
    49
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from skyloom.client import Client, Future, Session, TaskFunction, TaskRequest, connect, task
from skyloom.errors import (
    ClaimConflict,
    Conflict,
    ConnectionFailed,
    DependencyAborted,
    GraphCycle,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ResultAlreadyWritten,
    ResultNotFound,
    SessionClosed,
    SessionNotFound,
    SkyloomError,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TaskTimedOut,
    Unauthorized,
    WaitTimeout,
)
from skyloom.options import TaskOptions
from skyloom.runtime.context import TaskContext, current_context
from skyloom.runtime.registry import handler

try:
    __version__ = _version("skyloom")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "ClaimConflict",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "DependencyAborted",
    "Future",
    "GraphCycle",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "ResultAlreadyWritten",
    "ResultNotFound",
    "Session",
    "SessionClosed",
    "SessionNotFound",
    "SkyloomError",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskFunction",
    "TaskNotFound",
    "TaskOptions",
    "TaskRequest",
    "TaskTimedOut",
    "Unauthorized",
    "WaitTimeout",
    "__version__",
    "connect",
    "current_context",
    "handler",
    "task",
]

"""Skyloom: dynamic graphs of Python tasks on serverless AWS, or on one laptop.

Example:
    >>> import skyloom
    >>> @skyloom.task
    ... def square(x: int) -> int:
    ...     return x * x
    >>> with skyloom.connect() as client:
    ...     print(square.submit(7).result())
    ...     print(sum(square.map(range(100))))                  # like Executor.map
    ...     print(skyloom.gather([square.submit(i) for i in range(3)]))
    49
    328350
    [0, 1, 4]
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

from skyloom import client as _client
from skyloom import metrics
from skyloom.errors import (
    ClaimConflict,
    Conflict,
    ConnectionFailed,
    DependencyAborted,
    EnvironmentMismatch,
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
from skyloom.runtime.checkpointing import checkpoint, on_preempt, restore
from skyloom.runtime.context import TaskContext, current_context
from skyloom.runtime.inputs import Aborted, LazyInput
from skyloom.runtime.registry import handler

if TYPE_CHECKING:
    from skyloom.client import (
        ALL_COMPLETED,
        FIRST_COMPLETED,
        FIRST_EXCEPTION,
        Client,
        Future,
        Session,
        TaskFunction,
        TaskRequest,
        as_completed,
        connect,
        gather,
        lazy,
        optional,
        task,
        wait,
    )


def __getattr__(name: str) -> Any:
    """The client's names load on first use (see :mod:`skyloom.client`): a task's child process
    imports skyloom without the HTTP client."""
    if name in _client.__all__:
        return _client.load(name, globals())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


try:
    __version__ = _version("skyloom")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Aborted",
    "ClaimConflict",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "DependencyAborted",
    "EnvironmentMismatch",
    "Future",
    "GraphCycle",
    "InvalidRequest",
    "LazyInput",
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
    "as_completed",
    "checkpoint",
    "connect",
    "current_context",
    "gather",
    "handler",
    "lazy",
    "metrics",
    "on_preempt",
    "optional",
    "restore",
    "task",
    "wait",
]

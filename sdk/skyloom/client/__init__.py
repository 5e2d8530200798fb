"""The client SDK: connect, submit functions or low-level tasks, and read their results.

The names below load on first use (PEP 562 ``__getattr__``). A worker's child process imports
:mod:`skyloom.client.functions` to run task functions, and user modules ``import skyloom`` for
``@skyloom.task``; neither should load the HTTP client (``connect``, ``Client``, ``Session``,
waiting), which a task never uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skyloom.client.connection import connect
    from skyloom.client.dependencies import lazy, optional
    from skyloom.client.functions import TaskFunction, task
    from skyloom.client.futures import Future
    from skyloom.client.gathering import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed, gather, wait
    from skyloom.client.lowlevel import Client
    from skyloom.client.session import Session
    from skyloom.client.specs import TaskRequest

#: Where each public name lives.
_MODULES = {
    "connect": "skyloom.client.connection",
    "lazy": "skyloom.client.dependencies",
    "optional": "skyloom.client.dependencies",
    "TaskFunction": "skyloom.client.functions",
    "task": "skyloom.client.functions",
    "Future": "skyloom.client.futures",
    "ALL_COMPLETED": "skyloom.client.gathering",
    "FIRST_COMPLETED": "skyloom.client.gathering",
    "FIRST_EXCEPTION": "skyloom.client.gathering",
    "as_completed": "skyloom.client.gathering",
    "gather": "skyloom.client.gathering",
    "wait": "skyloom.client.gathering",
    "Client": "skyloom.client.lowlevel",
    "Session": "skyloom.client.session",
    "TaskRequest": "skyloom.client.specs",
}

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Client",
    "Future",
    "Session",
    "TaskFunction",
    "TaskRequest",
    "as_completed",
    "connect",
    "gather",
    "lazy",
    "optional",
    "task",
    "wait",
]


def load(name: str, namespace: dict[str, Any]) -> Any:
    """The client name ``name``, imported now and kept in ``namespace`` for the next lookups."""
    value = getattr(importlib.import_module(_MODULES[name]), name)
    namespace[name] = value
    return value


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return load(name, globals())

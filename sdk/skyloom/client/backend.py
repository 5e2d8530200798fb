"""Where a high-level submission goes: a client session over HTTP, or the running task's context.

``fn.submit()`` builds the same :class:`~skyloom.client.specs.TaskRequest` everywhere and hands it
to a :class:`Backend`. On a laptop the backend is a :class:`~skyloom.client.session.Session` that
buffers and sends over HTTP; inside a task it is the
:class:`~skyloom.runtime.context.TaskContext`, which only stages. One code path, so a function
behaves the same whether it is submitted by a client or by another task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Protocol

from skyloom.client.specs import TaskRequest

if TYPE_CHECKING:
    from skyloom.client.futures import Future
    from skyloom.client.waiting import SessionWaiter


class Backend(Protocol):
    """What the high level needs from whatever carries its submissions."""

    @property
    def session_id(self) -> str:
        """The session every submission lands in."""
        ...

    def new_id(self) -> str:
        """A fresh id for a task or a result, chosen here so retried requests stay idempotent."""
        ...

    def blob_ref(self, data: bytes) -> str:
        """The id of a Completed result holding ``data``; identical data is stored once."""
        ...

    def enqueue(self, task: TaskRequest, outputs: Mapping[str, str | None]) -> None:
        """Submit ``task``, creating its new ``outputs`` (id -> name) first."""
        ...

    def future(self, result_id: str, task_id: str | None) -> Future[Any]:
        """The future of a result submitted here (a client session also follows it)."""
        ...

    def waiter(self, futures: Sequence[Future[Any]]) -> SessionWaiter:
        """What waits for ``futures`` of this backend, after sending what is buffered; futures whose
        submission was refused are failed with that error first.

        Raises:
            RuntimeError: inside a task, whose subtasks start only after it succeeds.
        """
        ...


_session: ContextVar[Backend | None] = ContextVar("skyloom_session", default=None)
_fallback: Callable[[], Backend] | None = None


def _no_task() -> Backend | None:
    return None


#: Finds the running task's context. :mod:`skyloom.runtime.context` installs its lookup when imported,
#: so the client never imports the runtime: a process that runs no task never loads it.
_task_lookup: Callable[[], Backend | None] = _no_task


def enter_session(backend: Backend) -> Token[Backend | None]:
    """Make ``backend`` receive ``fn.submit()`` calls in this context (``with client.session()``)."""
    return _session.set(backend)


def exit_session(token: Token[Backend | None]) -> None:
    _session.reset(token)


def entered_session() -> Backend | None:
    return _session.get()


def set_fallback(provider: Callable[[], Backend] | None) -> None:
    """Where ``fn.submit()`` goes outside any ``with`` block: the connected client's default session.

    A provider rather than a session so the default session is only created when first used.
    """
    global _fallback
    _fallback = provider


def fallback() -> Callable[[], Backend] | None:
    return _fallback


def set_task_lookup(lookup: Callable[[], Backend | None]) -> None:
    """Install how the running task's context is found (by :mod:`skyloom.runtime.context`)."""
    global _task_lookup
    _task_lookup = lookup


def running_task() -> Backend | None:
    """The running task's context, which takes every ``fn.submit()`` made inside a task; None on a client."""
    return _task_lookup()

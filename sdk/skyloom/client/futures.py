"""Futures: the value a submitted function will produce, named by its result id.

A future is only a result id and the backend it was submitted through. Passing one to another
``submit`` makes a data dependency, so values flow worker to worker and never through the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

import cloudpickle

if TYPE_CHECKING:
    from skyloom.client.backend import Backend

T = TypeVar("T")
_UNSET: Any = object()


class Future(Generic[T]):
    """The eventual return value of ``fn.submit(...)``.

    Example:
        >>> f = price.submit(trade)          # Future[float]
        >>> f.id                              # the result id, usable with the low-level API
        >>> value: float = f.result(timeout=60)
    """

    __slots__ = ("_backend", "_id", "_value")

    def __init__(self, result_id: str, backend: Backend):
        self._id = result_id
        self._backend = backend
        self._value: Any = _UNSET

    @property
    def id(self) -> str:
        """The id of the result this future stands for."""
        return self._id

    @property
    def session_id(self) -> str:
        return self._backend.session_id

    @property
    def backend(self) -> Backend:
        return self._backend

    def result(self, timeout: float | None = None) -> T:
        """Wait for the value, download and unpickle it (once; later calls reuse it).

        Args:
            timeout: seconds to wait at most; ``None`` waits for as long as it takes.

        Raises:
            TaskFailed: the producing task failed for good (``TaskTimedOut``, ``TaskCancelled``,
                ``DependencyAborted`` say how); the message holds the remote traceback.
            WaitTimeout: ``timeout`` passed first.
        """
        if self._value is _UNSET:
            self._value = cloudpickle.loads(self._backend.result_bytes(self._id, timeout))
        value: T = self._value
        return value

    def done(self) -> bool:
        """Whether the value is ready or the task failed for good; never waits."""
        return self._value is not _UNSET or self._backend.is_done(self._id)

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            f"cannot pickle {self!r}: a future is a data dependency only when passed directly as an "
            "argument of fn.submit(), or inside a list, tuple or dict argument; inside any other object "
            "pass future.result() from the client, or restructure so the future is a direct argument"
        )

    def __repr__(self) -> str:
        return f"Future({self._id!r}, session={self._backend.session_id!r})"

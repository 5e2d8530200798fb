"""``skyloom.optional(fut)`` and ``skyloom.lazy(fut)``: kinds of data dependency in the high-level API.

A future passed as an argument is a *mandatory* data dependency: the task waits for it, the worker
downloads it before the task starts, and if it is aborted the task is cancelled. Wrapping it
changes that for this argument:

- ``skyloom.optional(fut)``: if the result is aborted (its producer failed or was cancelled), the
  task runs anyway and receives a :class:`~skyloom.runtime.inputs.Aborted` marker with the reason;
  the failure cascade stops there.
- ``skyloom.lazy(fut)``: not downloaded before the task starts; the task receives a
  :class:`~skyloom.runtime.inputs.LazyInput` and calls ``.get()`` where it needs the value.
- Both: ``skyloom.lazy(skyloom.optional(fut))`` (in either order).

One result passed several times is optional only if every use is, lazy only if every use is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from skyloom.client.futures import Future

T = TypeVar("T")


@dataclass(frozen=True)
class DataDependency(Generic[T]):
    """A future argument with its kind of data dependency; made by :func:`optional` and :func:`lazy`."""

    future: Future[T]
    optional: bool = False
    lazy: bool = False


def optional(dependency: Future[T] | DataDependency[T]) -> DataDependency[T]:
    """Make a future argument an *optional* data dependency: if it is aborted, the task still runs and
    receives a ``skyloom.Aborted`` marker (with the reason) in its place.

    Raises:
        TypeError: ``dependency`` is not a future (or an already wrapped one).

    Example:
        >>> report.submit(price.submit(t), skyloom.optional(risky.submit(t)))
    """
    d = _wrapped(dependency, "optional")
    return DataDependency(d.future, optional=True, lazy=d.lazy)


def lazy(dependency: Future[T] | DataDependency[T]) -> DataDependency[T]:
    """Make a future argument a *lazy* data dependency: not downloaded before the task starts; the
    task receives a ``skyloom.LazyInput`` and fetches the value with ``.get()`` when it needs it.

    Raises:
        TypeError: ``dependency`` is not a future (or an already wrapped one).

    Example:
        >>> pick.submit(flag, small, skyloom.lazy(huge.submit()))
    """
    d = _wrapped(dependency, "lazy")
    return DataDependency(d.future, optional=d.optional, lazy=True)


def _wrapped(dependency: Any, what: str) -> DataDependency[Any]:
    if isinstance(dependency, DataDependency):
        return dependency
    if isinstance(dependency, Future):
        return DataDependency(dependency)
    raise TypeError(
        f"skyloom.{what}() wraps a future passed as an argument (e.g. skyloom.{what}(fn.submit(x))), "
        f"got {type(dependency).__name__}"
    )

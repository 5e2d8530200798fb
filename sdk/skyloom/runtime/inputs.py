"""What a task receives for its optional and lazy data dependencies.

- An optional input that was aborted (its producer failed or was cancelled) arrives as an
  :class:`Aborted` marker, with the reason, instead of the task being cancelled.
- A lazy input arrives as a :class:`LazyInput`: nothing was downloaded before the task started;
  ``.get()`` fetches the value the first time it is called (the fetch is timed and counted in the
  task's input transfers), and returns the :class:`Aborted` marker for an optional one that aborted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Aborted:
    """Stands for an optional input that was aborted: test for it with ``isinstance(x, skyloom.Aborted)``.

    Example:
        >>> @skyloom.task
        ... def report(main: float, extra: float | skyloom.Aborted) -> str:
        ...     if isinstance(extra, skyloom.Aborted):
        ...         return f"{main} (without extra: {extra.reason})"
        ...     return f"{main + extra}"
        >>> report.submit(price.submit(t), skyloom.optional(risky.submit(t)))
    """

    result_id: str
    #: Why, in words: the root failure's type and message.
    reason: str
    #: The root failure as the result records it: the failed task's id, status, type, message.
    error: dict[str, Any] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        return f"Aborted({self.result_id!r}, reason={self.reason!r})"


def aborted_marker(result_id: str, error: dict[str, Any] | None) -> Aborted:
    """The marker of an aborted input, its reason said from the root failure it records."""
    err = dict(error or {})
    kind, message, task = err.get("type"), err.get("message"), err.get("task_id")
    reason = ": ".join(str(p) for p in (kind, message) if p) or "aborted"
    if task:
        reason = f"{reason} (task {task})"
    return Aborted(result_id, reason, err)


class LazyInput(Generic[T]):
    """A lazy input: fetched when :meth:`get` is first called, not before the task started.

    Example:
        >>> @skyloom.task
        ... def pick(use_big: bool, small: int, big: skyloom.LazyInput[list[int]]) -> int:
        ...     return sum(big.get()) if use_big else small        # big is downloaded on one branch only
        >>> pick.submit(flag, s, skyloom.lazy(huge.submit()))
    """

    def __init__(self, result_id: str, load: Callable[[], T | Aborted]) -> None:
        self.result_id = result_id
        self._load = load
        self._loaded = False
        self._value: T | Aborted | None = None

    @property
    def fetched(self) -> bool:
        """Whether :meth:`get` has fetched the value already."""
        return self._loaded

    def get(self) -> T | Aborted:
        """The input's value (fetched once), or the :class:`Aborted` marker of an optional one."""
        if not self._loaded:
            self._value = self._load()
            self._loaded = True
        return self._value  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"LazyInput({self.result_id!r}, fetched={self._loaded})"

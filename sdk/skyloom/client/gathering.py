"""Futures over collections, with the names of ``concurrent.futures``: wait, as_completed, gather.

Waiting on many futures of one session is one server-side wait (a long poll whose answer also
carries the values, see :mod:`skyloom.client.waiting`), never one wait per future. Futures of
several sessions are waited one session at a time (a second at a time when any one may do).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from skyloom.client.futures import Future
from skyloom.client.waiting import SPLIT_ROUND_SECONDS
from skyloom.core.protocol import WAIT_MAX_SECONDS, WaitMode
from skyloom.errors import WaitTimeout

if TYPE_CHECKING:
    from skyloom.client.waiting import SessionWaiter

T = TypeVar("T")

#: ``return_when`` values, equal to those of ``concurrent.futures`` (either module's names work).
FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"
ALL_COMPLETED = "ALL_COMPLETED"
_MODES: dict[str, WaitMode] = {ALL_COMPLETED: "all", FIRST_COMPLETED: "any", FIRST_EXCEPTION: "first_failure"}
#: With a progress bar, the server is asked for rounds this long, so the bar moves at least this often.
PROGRESS_ROUND_SECONDS = 1.0


class DoneAndNotDone(NamedTuple, Generic[T]):
    """What :func:`wait` returns, like ``concurrent.futures.wait``."""

    done: set[Future[T]]
    not_done: set[Future[T]]


def wait(
    fs: Iterable[Future[T]],
    timeout: float | None = None,
    return_when: str = ALL_COMPLETED,
    *,
    progress: bool = False,
) -> DoneAndNotDone[T]:
    """Wait until all, the first, or the first failing of ``fs`` are done; never raises on timeout.

    A future is done when its value is ready or its task failed for good (``future.result()`` then
    raises without waiting).

    Args:
        timeout: seconds to wait at most; ``None`` waits for as long as it takes.
        return_when: ``ALL_COMPLETED``, ``FIRST_COMPLETED`` or ``FIRST_EXCEPTION`` (a failure, or
            else all).
        progress: show a progress bar (rich) on stderr.

    Returns:
        ``(done, not_done)``: two sets of futures.

    Example:
        >>> futures = [price.submit(t) for t in trades]
        >>> done, not_done = skyloom.wait(futures, timeout=60, return_when=skyloom.FIRST_EXCEPTION)
    """
    mode = _MODES.get(return_when)
    if mode is None:
        raise ValueError(f"return_when must be one of {', '.join(_MODES)}, not {return_when!r}")
    futures = list(dict.fromkeys(fs))
    deadline = None if timeout is None else time.monotonic() + timeout
    _settle(futures, deadline, mode, progress)
    done = {f for f in futures if f._status is not None}
    return DoneAndNotDone(done, set(futures) - done)


def as_completed(fs: Iterable[Future[T]], timeout: float | None = None) -> Iterator[Future[T]]:
    """Yield the futures of ``fs`` as they are done (those already done first).

    Each step is one shared server-side wait for any of the rest, whose answer settles every one
    that is done by then.

    Raises:
        WaitTimeout: ``timeout`` seconds (counted from the call) passed before all were yielded.

    Example:
        >>> for f in skyloom.as_completed(futures, timeout=600):
        ...     print(f.task_id, f.result())
    """
    futures = list(dict.fromkeys(fs))
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = futures
    while pending:
        done = [f for f in pending if f._status is not None]
        if not done:
            _settle(pending, deadline, "any", False)
            done = [f for f in pending if f._status is not None]
            if not done:
                raise WaitTimeout(
                    f"{len(pending)} (of {len(futures)}) futures unfinished after {timeout or 0:g} s",
                    details={"pending": [f.id for f in pending[:100]]},
                )
        pending = [f for f in pending if f._status is None]
        yield from done


def gather(fs: Iterable[Future[T]], *, timeout: float | None = None, progress: bool = False) -> list[T]:
    """The values of ``fs``, in order: one server-side wait, values read in as few requests as the
    answers' size allows (large ones downloaded from S3 in parallel).

    Raises:
        TaskFailed: a task failed; the first failed future (in the order of ``fs``) is raised as soon
            as it is known, without waiting for the others.
        WaitTimeout: ``timeout`` passed first.

    Example:
        >>> prices = skyloom.gather([price.submit(t) for t in trades], progress=True)
    """
    futures = list(fs)
    unique = list(dict.fromkeys(futures))
    deadline = None if timeout is None else time.monotonic() + timeout
    _settle(unique, deadline, "first_failure", progress)
    failed = next((f for f in futures if f._failed()), None)
    if failed is not None:
        failed.result()  # raises its failure
    left = [f for f in unique if f._status is None]
    if left:
        raise WaitTimeout(
            f"{len(left)} of {len(unique)} futures still not done after {timeout or 0:g} s",
            details={"pending": [f.id for f in left[:100]]},
        )
    for waiter, group in _by_waiter(unique):
        waiter.load(group)
    return [f.result() for f in futures]


def cancel(fs: Iterable[Future[Any]]) -> list[bool]:
    """Cancel the tasks of many futures in a few requests; whether each is now cancelled."""
    futures = list(fs)
    for waiter, group in _by_waiter(futures):
        waiter.cancel(group)
    return [f.cancelled() for f in futures]


# -------------------------------------------------------------------------------------- steps
def _settle(futures: list[Future[Any]], deadline: float | None, mode: WaitMode, progress: bool) -> None:
    groups = _by_waiter(futures)
    cap = PROGRESS_ROUND_SECONDS if progress else WAIT_MAX_SECONDS
    bar: AbstractContextManager[Callable[[int], None] | None] = nullcontext(None)
    if progress:
        from skyloom.client.progress import progress_bar

        bar = progress_bar(len(futures), sum(f._status is not None for f in futures))
    with bar as report:
        if len(groups) == 1 or mode == "all":
            for waiter, group in groups:
                if not waiter.settle(group, timeout=_left(deadline), mode=mode, round_cap=cap, on_settled=report):
                    return
            return
        while not _holds(futures, mode):
            for waiter, group in groups:
                left = _left(deadline)
                step = SPLIT_ROUND_SECONDS if left is None else min(left, SPLIT_ROUND_SECONDS)
                waiter.settle(group, timeout=step, mode=mode, round_cap=cap, on_settled=report)
                if _holds(futures, mode):
                    return
            if deadline is not None and time.monotonic() >= deadline:
                return


def _holds(futures: Sequence[Future[Any]], mode: WaitMode) -> bool:
    if mode == "any":
        return any(f._status is not None for f in futures)
    if mode == "first_failure" and any(f._failed() for f in futures):
        return True
    return all(f._status is not None for f in futures)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _by_waiter(futures: Sequence[Future[Any]]) -> list[tuple[SessionWaiter, list[Future[Any]]]]:
    """Futures grouped by the waiter of their session (after their backend sent what it buffers)."""
    by_backend: dict[int, list[Future[Any]]] = {}
    for f in futures:
        by_backend.setdefault(id(f.backend), []).append(f)
    groups: dict[int, tuple[SessionWaiter, list[Future[Any]]]] = {}
    for group in by_backend.values():
        waiter = group[0].backend.waiter(group)
        groups.setdefault(id(waiter), (waiter, []))[1].extend(group)
    return list(groups.values())

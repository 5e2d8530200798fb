"""Futures: the value a submitted function will produce, named by its result id.

A future is a result id, the task submitted for it and the backend it was submitted through.
Passing one to another ``submit`` makes a data dependency, so values flow worker to worker and never
through the client. Its final state arrives from the session's waiter
(:class:`~skyloom.client.waiting.SessionWaiter`), often in the answer to a wait for another future:
that is why ``[f.result() for f in futures]`` costs a handful of requests, not one per future.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

import cloudpickle

from skyloom.client.failures import failure_of
from skyloom.core.protocol import ResultData, ResultInfo, b64decode
from skyloom.errors import Conflict, TaskCancelled

if TYPE_CHECKING:
    from skyloom.client.backend import Backend

T = TypeVar("T")
_UNSET: Any = object()
logger = logging.getLogger(__name__)

#: Guards the state of every future: settled by a waiter's thread, read by the user's.
_LOCK = threading.Lock()
#: A presigned URL older than this is asked for again rather than tried (its lifetime is the
#: server's ``SKYLOOM_PRESIGN_SECONDS``, 300 s by default).
URL_FRESH_SECONDS = 30.0

DoneCallback = Callable[["Future[Any]"], object]
#: Result states after which nothing changes but a deletion.
_FINAL = frozenset({"Completed", "Aborted", "Deleted"})


def is_final(status: str) -> bool:
    return status in _FINAL


class Future(Generic[T]):
    """The eventual return value of ``fn.submit(...)``, with the methods of ``concurrent.futures``.

    Example:
        >>> f = price.submit(trade)          # Future[float]
        >>> f.id, f.task_id                   # the result and the task, for the low-level API and CLI
        >>> value: float = f.result(timeout=60)
        >>> f.add_done_callback(lambda f: print("priced", f.id))
        >>> value = await f                   # from asyncio
    """

    __slots__ = (
        "__weakref__",
        "_backend",
        "_callbacks",
        "_data",
        "_failure",
        "_id",
        "_missing",
        "_status",
        "_task_id",
        "_url",
        "_value",
    )

    def __init__(self, result_id: str, backend: Backend, task_id: str | None = None):
        self._id = result_id
        self._backend = backend
        self._task_id = task_id
        self._value: Any = _UNSET
        #: The final status once known (Completed, Aborted, Deleted, or "Failed" for a local failure).
        self._status: str | None = None
        self._data: bytes | None = None
        self._url: tuple[str, float] | None = None
        self._failure: BaseException | None = None
        #: Final, but its value or error did not fit in the answer that said so.
        self._missing = False
        self._callbacks: list[DoneCallback] = []

    @property
    def id(self) -> str:
        """The id of the result this future stands for."""
        return self._id

    @property
    def task_id(self) -> str | None:
        """The id of the task submitted for this future (None for a value stored with ``put``).

        A task that returns a future delegates its result: the subtask then produces it.
        """
        return self._task_id

    @property
    def session_id(self) -> str:
        return self._backend.session_id

    @property
    def backend(self) -> Backend:
        return self._backend

    # ------------------------------------------------------------------------- concurrent.futures
    def result(self, timeout: float | None = None) -> T:
        """Wait for the value, download and unpickle it (once; later calls reuse it).

        Args:
            timeout: seconds to wait at most; ``None`` waits for as long as it takes.

        Raises:
            TaskFailed: the producing task failed for good (``TaskTimedOut``, ``TaskCancelled``,
                ``DependencyAborted`` say how); the message holds the remote traceback.
            WaitTimeout: ``timeout`` passed first (a ``TimeoutError``).
        """
        if self._value is _UNSET:
            self._backend.waiter([self]).settle([self], timeout=timeout, check=True)
            self._load()
            with _LOCK:
                failure, data = self._failure, self._data
            if failure is not None:
                raise failure
            if self._value is _UNSET:
                value = cloudpickle.loads(data or b"")  # outside the lock: values can be large
                with _LOCK:
                    if self._value is _UNSET:
                        self._value, self._data = value, None
        result: T = self._value
        return result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait like :meth:`result`; return the exception it would raise, or None if it succeeded.

        Raises:
            WaitTimeout: ``timeout`` passed first.
        """
        if self._value is _UNSET:
            self._backend.waiter([self]).settle([self], timeout=timeout, check=True)
            self._load()
        return self._failure

    def done(self) -> bool:
        """Whether the value is ready or the task failed for good; asks the server at most once,
        and not at all when the session's waiter asked a moment ago."""
        if self._status is None:
            self._backend.waiter([self]).poll([self])
        return self._status is not None

    def cancel(self) -> bool:
        """Cancel the task producing this result on the server (also when it is running).

        Returns:
            True if the result is now cancelled (by this call or before); False if it was already
            produced or failed, like ``concurrent.futures.Future.cancel``.
        """
        if self._status is None:
            self._backend.waiter([self]).cancel([self])
        return self.cancelled()

    def cancelled(self) -> bool:
        """Whether the task producing this result was cancelled (not one of its inputs)."""
        return isinstance(self._failure, TaskCancelled)

    # ------------------------------------------------------------------------------------- logs
    def logs(self, attempt: int | None = None) -> str:
        """What the task of this future printed on stdout and stderr, as the worker kept it (the last
        64 KiB of each attempt, ``... N bytes cut ...`` first when more was printed).

        An attempt's log is there once the attempt has ended: a retried task shows why it failed
        before it succeeds. Delegation does not follow: a subtask's log is its own future's.

        Args:
            attempt: only this attempt, as printed (1 is the first, -1 the last); None: every ended
                attempt, oldest first, each under a line naming the task and the attempt.

        Returns:
            The text; empty if no attempt has ended or none printed anything.

        Raises:
            ValueError: the future has no task (a value stored with ``put``).

        Example:
            >>> f = price.submit(trade); f.exception()
            >>> print(f.logs())        # every attempt
            >>> print(f.logs(-1))      # the last one only
        """
        if self._task_id is None:
            raise ValueError(f"result {self._id} was stored with put(): no task printed it")
        client = self._backend.waiter([self]).client
        if attempt is not None and attempt < 0:
            every = client.task_logs(self.session_id, self._task_id).attempts
            return every[attempt].text if len(every) >= -attempt else ""
        logs = client.task_logs(self.session_id, self._task_id, attempt=attempt)
        return logs.render() if attempt is None else "".join(a.text for a in logs.attempts)

    def add_done_callback(self, fn: DoneCallback) -> None:
        """Call ``fn(future)`` when the future is done: at once if it is, else from the thread that
        learns it (a background thread of the client when nobody else waits). Exceptions raised by
        ``fn`` are logged and ignored, as in ``concurrent.futures``.
        """
        with _LOCK:
            if self._status is None:
                self._callbacks.append(fn)
                pending = True
            else:
                pending = False
        if pending:
            self._backend.waiter([self]).watch(self)
        else:
            _call(fn, self)

    def __await__(self) -> Generator[Any, None, T]:
        """``await future`` in asyncio: the event loop is never blocked while the task runs."""
        import asyncio

        loop = asyncio.get_running_loop()
        if self._status is None:
            woken: asyncio.Future[None] = loop.create_future()

            def resolve() -> None:
                if not woken.done():
                    woken.set_result(None)

            def wake(_: Future[Any]) -> None:
                loop.call_soon_threadsafe(resolve)

            self.add_done_callback(wake)
            yield from woken.__await__()
        if self._needs_detail() or self._needs_download():
            # A request or a download to make: off the event loop.
            return (yield from loop.run_in_executor(None, self.result).__await__())
        return self.result()

    # ------------------------------------------------------------------------------ for waiters
    def _needs_detail(self) -> bool:
        """Final, but the value or the error must be asked for (left out of an answer, never
        sent, or known only by a URL that has aged)."""
        if self._value is not _UNSET or self._status is None:
            return False
        if self._missing:
            return True
        if self._status != "Completed" or self._data is not None:
            return False
        return self._url is None or time.monotonic() - self._url[1] > URL_FRESH_SECONDS

    def _needs_download(self) -> bool:
        return self._value is _UNSET and self._status == "Completed" and self._data is None and self._url is not None

    def _settle(self, info: ResultInfo, value: ResultData | None, missing: bool) -> list[DoneCallback]:
        """Record a final state; returns the callbacks to run (outside every lock).

        Called again for a settled future to add the value or error an earlier answer left out.
        """
        # Built outside the lock: it may import the task's exception type (native exceptions).
        failure = failure_of(info) if info.status == "Aborted" and not missing else None
        with _LOCK:
            if self._value is not _UNSET or self._status == "Failed":
                return []
            first = self._status is None
            self._status = info.status
            self._missing = missing
            if failure is not None:
                self._failure = failure
            elif info.status == "Deleted":
                self._failure = Conflict(f"result {self._id} is Deleted; its value is gone", field="result_id")
            if value is not None:
                if value.data is not None:
                    self._data = b64decode(value.data, "data")
                elif value.download_url:
                    self._url = (value.download_url, time.monotonic())
            callbacks, self._callbacks = (self._callbacks, []) if first else ([], self._callbacks)
            return callbacks

    def _settle_value(self, data: bytes) -> None:
        """Record a value known here (a ``put``): no request will ever be needed for it."""
        with _LOCK:
            self._status, self._data = "Completed", data

    def _set_data(self, data: bytes) -> None:
        """Record a value downloaded from its presigned URL."""
        with _LOCK:
            self._data, self._url = data, None

    def _forget_url(self) -> None:
        """Drop a URL that failed (expired): the next load asks for a fresh one."""
        with _LOCK:
            self._url = None

    def _fail(self, exc: BaseException) -> list[DoneCallback]:
        """Record a failure found by the client (the batch that should have created it was refused)."""
        with _LOCK:
            if self._status is not None:
                return []
            self._status, self._failure = "Failed", exc
            callbacks, self._callbacks = self._callbacks, []
            return callbacks

    def _load(self) -> None:
        """Bring the value or the error of a settled future into memory."""
        if self._needs_detail() or self._needs_download():
            self._backend.waiter([self]).load([self])

    def _failed(self) -> bool:
        return self._status is not None and self._status != "Completed"

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            f"cannot pickle {self!r}: a future is a data dependency only when passed directly as an "
            "argument of fn.submit(), or inside a list, tuple or dict argument; inside any other object "
            "pass future.result() from the client, or restructure so the future is a direct argument"
        )

    def __repr__(self) -> str:
        state = f", {self._status}" if self._status else ""
        return f"Future({self._id!r}, session={self._backend.session_id!r}{state})"


def _call(fn: DoneCallback, future: Future[Any]) -> None:
    try:
        fn(future)
    except Exception:
        logger.exception("exception calling callback for %r", future)


def run_callbacks(future: Future[Any], callbacks: list[DoneCallback]) -> None:
    """Run ``callbacks`` of ``future`` (what :meth:`Future._settle` returned), in order."""
    for fn in callbacks:
        _call(fn, future)

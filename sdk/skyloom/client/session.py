"""A client-side handle on one session, and the buffer that batches its submissions.

``[price.submit(t) for t in trades]`` must not cost one HTTP round trip per trade, so submissions
are buffered and sent in batches: when the buffer holds a few hundred tasks, when a future is
asked for its result, when the ``with`` block ends, and after a short linger otherwise. Batches
are sent one at a time in submission order, so a result is always created before (or in the same
request as) any task that names it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping, Sequence
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import cloudpickle

from skyloom.client import backend
from skyloom.client.futures import Future, run_callbacks
from skyloom.client.specs import TaskRequest
from skyloom.core.clock import new_id
from skyloom.core.protocol import ResultInfo, ResultSpec, SessionInfo, TaskInfo, WaitMode, b64encode
from skyloom.errors import SkyloomError

if TYPE_CHECKING:
    from skyloom.client.lowlevel import Client
    from skyloom.client.waiting import SessionWaiter

T = TypeVar("T")

#: Buffered tasks that trigger a send from the submitting thread.
FLUSH_AT_TASKS = 500
#: Buffered payload bytes that trigger a send, well below the request size limit.
FLUSH_AT_BYTES = 2 * 1024 * 1024
#: A burst of submissions after a quiet spell sends its first this many tasks at once, from a thread
#: of its own, while the loop goes on building the rest: the workers start on them instead of
#: waiting for the whole burst to be built, sent and validated (tens of ms for a few hundred). Not
#: fewer: a batch just above it pays a second request after the first (8 cost a batch of 10 20 ms).
FIRST_FLUSH_AT_TASKS = 32
#: How long the buffer must sit idle before it is sent: a lone submission leaves after this.
LINGER_SECONDS = 0.03
#: The most a submission waits while others keep arriving (a loop slower than the size trigger).
MAX_LINGER_SECONDS = 0.25


class Session:
    """A session: where tasks run and results live. Get one from :meth:`Client.session`.

    Inside ``with session:``, ``fn.submit()`` submits into it. The handle also offers the
    low-level operations bound to its id.

    Example:
        >>> with client.session(priority=2) as session:
        ...     futures = [price.submit(t) for t in trades]   # a handful of requests
        >>> sum(f.result() for f in futures)
    """

    def __init__(self, client: Client, session_id: str, *, info: SessionInfo | None = None):
        self._client = client
        self._id = session_id
        self._info = info
        self._buf_lock = threading.Lock()
        # Held while a batch is on the wire: batches leave strictly in submission order.
        self._send_lock = threading.Lock()
        self._tasks: list[TaskRequest] = []
        self._results: list[ResultSpec] = []
        self._bytes = 0
        self._timer: threading.Timer | None = None
        #: Sends on the wire or waiting for it, and when the last one ended (monotonic; None: never).
        self._sending = 0
        self._sent_at: float | None = None
        self._first_at = 0.0
        self._last_at = 0.0
        self._blobs: dict[str, str] = {}
        self._failed: dict[str, SkyloomError] = {}
        self._unreported: list[SkyloomError] = []
        self._tokens: list[Token[backend.Backend | None]] = []

    # ------------------------------------------------------------------------------- properties
    @property
    def session_id(self) -> str:
        return self._id

    @property
    def client(self) -> Client:
        return self._client

    @property
    def info(self) -> SessionInfo:
        """The session as the server last described it (fetched on first access)."""
        if self._info is None:
            self._info = self._client.get_session(self._id)
        return self._info

    def _cached_info(self) -> SessionInfo | None:
        """What is known without a request (the client's environment check reads the defaults)."""
        return self._info

    def refresh(self) -> SessionInfo:
        self._info = self._client.get_session(self._id)
        return self._info

    # ------------------------------------------------------------------------------- low level
    def create_results(self, items: Sequence[str | bytes | None]) -> list[str]:
        """Create results: a ``str`` names an empty one for a task to produce, ``bytes`` is data.

        Example:
            >>> out, data = session.create_results(["out", b"input bytes"])
        """
        ids: list[str] = []
        specs: list[ResultSpec] = []
        for item in items:
            if isinstance(item, bytes | bytearray) and len(item) > self._client.inline_limit:
                ids.append(self._client.upload(self._id, bytes(item)))
                continue
            rid = new_id()
            ids.append(rid)
            if isinstance(item, bytes | bytearray):
                specs.append(ResultSpec(id=rid, data=b64encode(bytes(item))))
            else:
                specs.append(ResultSpec(id=rid, name=item))
        if specs:
            self._client.create_results(self._id, specs)
        return ids

    def put(self, value: T) -> Future[T]:
        """Store a Python value once and get a future of it, to pass to many tasks.

        Identical values are stored once; large ones go through S3.

        Example:
            >>> curve = session.put(load_curve())          # uploaded once
            >>> prices = [price.submit(t, curve) for t in trades]
        """
        data = cloudpickle.dumps(value)
        f: Future[T] = Future(self.blob_ref(data), self)
        f._settle_value(data)  # known here: reading it back needs no request
        return f

    def upload(self, data: bytes, *, name: str | None = None) -> str:
        """Store ``data`` as a Completed result; returns its id. See :meth:`Client.upload`."""
        return self._client.upload(self._id, data, name=name)

    def submit_tasks(self, tasks: Sequence[TaskRequest]) -> list[str]:
        """Submit low-level tasks now (after anything buffered); returns their ids.

        Example:
            >>> (out,) = session.create_results(["out"])
            >>> session.submit_tasks([TaskRequest("echo", expected_outputs=[out], payload=b"hi")])
        """
        filled = [t if t.task_id else _with_id(t, new_id()) for t in tasks]
        self.flush()
        self._client.submit_tasks(self._id, filled, answer=False)
        return [t.task_id or "" for t in filled]

    def wait(
        self,
        results: Sequence[str | Future[Any]],
        *,
        timeout: float | None = None,
        mode: WaitMode = "all",
    ) -> list[ResultInfo]:
        """Wait for results (ids or futures) to be final; see :meth:`Client.wait_results`."""
        self.flush()
        ids = [r.id if isinstance(r, Future) else r for r in results]
        return self._client.wait_results(self._id, ids, timeout=timeout, mode=mode)

    def download(self, result_id: str) -> bytes:
        """The raw bytes of a Completed result."""
        return self._client.download(self._id, result_id)

    def get_results(self, ids: Sequence[str]) -> list[ResultInfo]:
        self.flush()
        return self._client.get_results(self._id, ids)

    def get_tasks(self, ids: Sequence[str]) -> list[TaskInfo]:
        self.flush()
        return self._client.get_tasks(self._id, ids)

    def close(self) -> SessionInfo:
        """Send what is buffered, then close the session to new submissions (running tasks too)."""
        self.flush()
        self._info = self._client.close_session(self._id)
        return self._info

    def flush(self) -> None:
        """Send buffered submissions now.

        Raises:
            SkyloomError: a batch was rejected, now or by an earlier background send.
        """
        self._send_buffer()
        with self._buf_lock:
            errors, self._unreported = self._unreported, []
        if errors:
            raise errors[0]

    # ----------------------------------------------------------------------- backend (high level)
    def new_id(self) -> str:
        return new_id()

    def blob_ref(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        with self._buf_lock:
            known = self._blobs.get(key)
            if known is not None:
                return known
            if len(data) <= self._client.inline_limit:
                # Rides in the next batch, before the tasks that read it: no extra request.
                rid = new_id()
                self._results.append(ResultSpec(id=rid, data=b64encode(data)))
                self._bytes += len(data)
                self._blobs[key] = rid
                if self._timer is None:
                    self._last_at = self._first_at = time.monotonic()
                    self._arm(LINGER_SECONDS)
                return rid
        rid = self._client.upload(self._id, data)
        with self._buf_lock:
            return self._blobs.setdefault(key, rid)

    def enqueue(self, task: TaskRequest, outputs: Mapping[str, str | None]) -> None:
        with self._buf_lock:
            self._last_at = time.monotonic()
            if not self._tasks and not self._results:
                self._first_at = self._last_at
            self._results += [ResultSpec(id=rid, name=name) for rid, name in outputs.items()]
            self._tasks.append(task)
            self._bytes += len(task.payload)
            full = len(self._tasks) >= FLUSH_AT_TASKS or self._bytes >= FLUSH_AT_BYTES
            early = not full and len(self._tasks) == FIRST_FLUSH_AT_TASKS and self._quiet(self._last_at)
            if not full and not early and self._timer is None:
                self._arm(LINGER_SECONDS)
        if full:
            self._send_buffer()
        elif early:
            # Not a daemon: a script that submits and exits still gets its tasks sent.
            threading.Thread(target=self._send_buffer, name=f"skyloom-send-{self._id[:8]}").start()

    def future(self, result_id: str, task_id: str | None) -> Future[Any]:
        f: Future[Any] = Future(result_id, self, task_id)
        self._client.waiter(self._id).track([f])
        return f

    def waiter(self, futures: Sequence[Future[Any]]) -> SessionWaiter:
        self._send_buffer()
        with self._buf_lock:
            refused = [(f, self._failed[f.id]) for f in futures if f.id in self._failed]
            # Reported through the futures: flush() need not raise them again.
            self._unreported = [e for e in self._unreported if all(e is not exc for _, exc in refused)]
        for f, exc in refused:
            run_callbacks(f, f._fail(exc))
        return self._client.waiter(self._id)

    # ------------------------------------------------------------------------- context manager
    def __enter__(self) -> Session:
        self._tokens.append(backend.enter_session(self))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        backend.exit_session(self._tokens.pop())
        if exc is None:
            self.flush()
        else:
            # What was submitted before the error is still sent; the user's exception wins.
            self._send_buffer()

    def __repr__(self) -> str:
        return f"Session({self._id!r})"

    # ------------------------------------------------------------------------------------ steps
    def _arm(self, delay: float) -> None:
        self._timer = threading.Timer(delay, self._on_timer)
        self._timer.name = f"skyloom-flush-{self._id[:8]}"
        # Not a daemon: a script that submits and exits still gets its tasks sent.
        self._timer.start()

    def _on_timer(self) -> None:
        with self._buf_lock:
            now = time.monotonic()
            idle, age = now - self._last_at, now - self._first_at
            if (self._tasks or self._results) and idle < LINGER_SECONDS and age < MAX_LINGER_SECONDS:
                # Submissions are still arriving: wait for the size trigger, or for a pause.
                self._arm(min(LINGER_SECONDS - idle, MAX_LINGER_SECONDS - age))
                return
        self._send_buffer()

    def _quiet(self, now: float) -> bool:
        """No send is under way and none ended within a linger (under ``_buf_lock``): a burst is
        starting, not going on (a loop whose sends by size follow one another)."""
        return self._sending == 0 and (self._sent_at is None or now - self._sent_at >= LINGER_SECONDS)

    def _send_buffer(self) -> None:
        """Send one batch; errors are recorded against the results they should have created."""
        with self._buf_lock:
            self._sending += 1
        sent = False
        try:
            sent = self._send_batch()
        finally:
            with self._buf_lock:
                self._sending -= 1
                if sent:
                    self._sent_at = time.monotonic()

    def _send_batch(self) -> bool:
        """Whether there was anything to send."""
        with self._send_lock:
            with self._buf_lock:
                tasks, results = self._tasks, self._results
                self._tasks, self._results, self._bytes = [], [], 0
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            if not tasks and not results:
                return False
            try:
                if tasks:
                    self._client.submit_tasks(self._id, tasks, results=results, answer=False)
                else:
                    self._client.create_results(self._id, results)
            except SkyloomError as exc:
                self._record_failure(exc, tasks, results)
            return True

    def _record_failure(self, exc: SkyloomError, tasks: list[TaskRequest], results: list[ResultSpec]) -> None:
        with self._buf_lock:
            lost = {r.id for r in results if r.id}
            for t in tasks:
                lost.update(t.expected_outputs)
            for rid in lost:
                self._failed[rid] = exc
            self._blobs = {k: v for k, v in self._blobs.items() if v not in lost}
            self._unreported.append(exc)


def _with_id(t: TaskRequest, task_id: str) -> TaskRequest:
    from dataclasses import replace

    return replace(t, task_id=task_id)

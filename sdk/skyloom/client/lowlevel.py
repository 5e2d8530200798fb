"""The low-level client: the REST API one method per operation, ArmoniK style.

Everything the high level does goes through these methods, so there is one code path to test. Ids
are drawn here (uuid4 hex) rather than by the server, which makes every request safe to retry, and
batch operations are chunked to the API's named limits so that creating 10,000 tasks costs a
handful of requests whatever the caller passes.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, Unpack
from urllib.parse import urlencode

from pydantic import BaseModel

from skyloom.client import backend
from skyloom.client.environment import EnvironmentCheck
from skyloom.client.metrics import Metrics
from skyloom.client.session import Session
from skyloom.client.specs import TaskRequest
from skyloom.client.waiting import SessionWaiter
from skyloom.core import limits
from skyloom.core.clock import new_id
from skyloom.core.cost import Pricing
from skyloom.core.protocol import (
    CALL_HANDLER,
    MAX_IDS_PER_REQUEST,
    MAX_RESULTS_PER_REQUEST,
    MAX_TASKS_PER_REQUEST,
    CheckpointInfo,
    CreateResultsRequest,
    CreateSessionRequest,
    EnvironmentInfo,
    IdsRequest,
    ResultData,
    ResultInfo,
    ResultSpec,
    ResultsResponse,
    SessionInfo,
    SubmitTasksRequest,
    SubmitTasksResponse,
    TaskInfo,
    TaskLogs,
    TaskSpec,
    TasksResponse,
    WaitMode,
    WaitRequest,
    WaitResponse,
    b64decode,
    b64encode,
)
from skyloom.core.protocol_queries import EventsPage, ResultsPage, SessionsPage, TasksPage
from skyloom.errors import PayloadTooLarge, SkyloomError
from skyloom.options import TaskOptions, TaskOptionsArgs

if TYPE_CHECKING:
    from skyloom.client.futures import Future
    from skyloom.client.http import Transport

#: Inline data limit of the API unless the environment says otherwise (same variable as the server).
DEFAULT_INLINE_LIMIT = limits.INLINE_DATA_BYTES.value
#: Request bodies stay well under API Gateway's 10 MB and Lambda's 6 MB synchronous limits.
MAX_REQUEST_BYTES = 4 * 1024 * 1024

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


class Client:
    """A connection to one Skyloom endpoint; build it with :func:`skyloom.connect`.

    Args:
        transport: how requests travel (:class:`~skyloom.client.http.HttpTransport`, or a fake).
        inline_limit: bytes up to which data rides inside requests instead of going through S3.

    Example:
        >>> with skyloom.connect() as client:
        ...     info = client.create_session(name="nightly")
        ...     rid = client.upload(info.session_id, b"input")
        ...     client.download(info.session_id, rid)
        b'input'
    """

    def __init__(self, transport: Transport, *, inline_limit: int | None = None):
        self._t = transport
        env_limit = os.environ.get("SKYLOOM_INLINE_MAX_BYTES")
        self.inline_limit = inline_limit or (int(env_limit) if env_limit else DEFAULT_INLINE_LIMIT)
        self._lock = threading.Lock()
        # Weak: a session nobody holds has nothing buffered (its linger timer holds it until sent).
        self._sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        self._default: Session | None = None
        self._waiters: dict[str, SessionWaiter] = {}
        self._on_close: list[Callable[[], None]] = []
        self._closed = False
        self._environment = EnvironmentCheck(lambda: self._call("GET", "/environment", None, EnvironmentInfo))
        #: Measurements recorded by tasks under business keys, and run-time history (issue 15).
        self.metrics = Metrics(self._call)

    @property
    def endpoint(self) -> str:
        return self._t.endpoint

    # ---------------------------------------------------------------------------------- sessions
    def create_session(
        self, *, options: TaskOptions | None = None, partitions: Sequence[str] = (), name: str | None = None
    ) -> SessionInfo:
        """Create a session whose ``options`` become the default of every task submitted in it.

        Example:
            >>> client.create_session(options=TaskOptions(max_retries=1), name="risk").status
            'Running'
        """
        body = CreateSessionRequest(options=options or TaskOptions(), partitions=list(partitions), name=name)
        return self._call("POST", "/sessions", body, SessionInfo)

    def get_session(self, session_id: str) -> SessionInfo:
        return self._call("GET", f"/sessions/{session_id}", None, SessionInfo)

    def close_session(self, session_id: str) -> SessionInfo:
        """Refuse further submissions; what was submitted still runs and stays readable."""
        return self._call("POST", f"/sessions/{session_id}/close", None, SessionInfo)

    # ----------------------------------------------------------------------------------- results
    def create_results(self, session_id: str, specs: Sequence[ResultSpec]) -> list[ResultInfo]:
        """Create results (inline data, upload slots, or empty for a task to produce), chunked.

        Example:
            >>> [r.status for r in client.create_results(sid, [ResultSpec(name="out")])]
            ['Created']
        """
        filled = [s if s.id else s.model_copy(update={"id": new_id()}) for s in specs]
        out: list[ResultInfo] = []
        for i in range(0, len(filled), MAX_RESULTS_PER_REQUEST):
            body = CreateResultsRequest(results=filled[i : i + MAX_RESULTS_PER_REQUEST])
            out += self._call("POST", f"/sessions/{session_id}/results", body, ResultsResponse).results
        return out

    def upload(self, session_id: str, data: bytes, *, name: str | None = None) -> str:
        """Store ``data`` as a Completed result and return its id.

        Small data rides inline in one request; larger data goes to S3 through a presigned URL and
        is completed by a second request, so no blob ever passes through Lambda.

        Example:
            >>> rid = client.upload(sid, b"x" * 10_000_000)   # through S3
        """
        rid = new_id()
        if len(data) <= self.inline_limit:
            try:
                self.create_results(session_id, [ResultSpec(id=rid, name=name, data=b64encode(data))])
                return rid
            except PayloadTooLarge:
                rid = new_id()  # the server's limit is lower than ours: use S3 instead
        (slot,) = self.create_results(session_id, [ResultSpec(id=rid, name=name, upload=True)])
        if not slot.upload_url:
            raise SkyloomError(f"the server gave no upload URL for result {rid}")
        self._t.put_url(slot.upload_url, data)
        self.complete_results(session_id, [rid])
        return rid

    def complete_results(self, session_id: str, ids: Sequence[str]) -> list[ResultInfo]:
        """Complete results whose data was PUT to their presigned URL."""
        return self._ids_call(session_id, "results/complete", ids, ResultsResponse, "results")

    def get_results(self, session_id: str, ids: Sequence[str]) -> list[ResultInfo]:
        return self._ids_call(session_id, "results/get", ids, ResultsResponse, "results")

    def wait_results(
        self,
        session_id: str,
        ids: Sequence[str],
        *,
        timeout: float | None = None,
        mode: WaitMode = "all",
    ) -> list[ResultInfo]:
        """Wait until all (or any, or all unless one fails) of ``ids`` are final; return their states
        in order.

        The server waits (long polls of up to 20 s, repeated as needed) and one request at a time
        per session serves every thread waiting on it, however many ids they wait for (see
        :meth:`waiter`). Final means Completed, Aborted or Deleted: check ``status`` (or use
        futures, which raise the failure).

        Raises:
            WaitTimeout: ``timeout`` seconds passed first.

        Example:
            >>> client.wait_results(sid, [rid], timeout=60)[0].status
            'Completed'
        """
        unique = list(dict.fromkeys(ids))
        if not unique:
            return []
        latest = dict(self.waiter(session_id).wait_ids(unique, timeout, mode))
        unseen = [i for i in unique if i not in latest]  # an ``any`` wait may end before looking at all
        if unseen:
            latest.update((r.result_id, r) for r in self.get_results(session_id, unseen))
        return [latest[i] for i in unique]

    def wait_once(
        self,
        session_id: str,
        ids: Sequence[str],
        *,
        timeout: float = 0.0,
        mode: WaitMode = "all",
        also: Sequence[str] = (),
        values: bool = False,
    ) -> WaitResponse:
        """One ``waitResults`` request: the server waits up to ``timeout`` seconds (at most 20).

        Args:
            also: results to report (with values) if final, without waiting for them.
            values: carry the values of Completed results, inline or as presigned URLs, up to the
                server's budget per answer (the rest is listed in ``incomplete``).

        Example:
            >>> answer = client.wait_once(sid, ids, timeout=10, values=True)
            >>> answer.done, [v.result_id for v in answer.values]
        """
        body = WaitRequest(ids=list(ids), timeout=timeout, mode=mode, also=list(also), values=values)
        return self._call("POST", f"/sessions/{session_id}/results/wait", body, WaitResponse)

    def waiter(self, session_id: str) -> SessionWaiter:
        """The waiter every wait of this client on the session goes through (one request at a time)."""
        with self._lock:
            found = self._waiters.get(session_id)
            if found is None:
                found = self._waiters[session_id] = SessionWaiter(self, session_id)
            return found

    def download(self, session_id: str, result_id: str) -> bytes:
        """The bytes of a Completed result, inline or through a presigned S3 URL.

        Raises:
            Conflict: the result is not Completed yet.
        """
        d = self._call("GET", f"/sessions/{session_id}/results/{result_id}/data", None, ResultData)
        if d.data is not None:
            return b64decode(d.data, "data")
        if d.download_url:
            return self._t.get_url(d.download_url)
        raise SkyloomError(f"the server gave neither data nor a download URL for result {result_id}")

    def download_url(self, url: str) -> bytes:
        """The bytes behind a presigned download URL the API handed out (in ``ResultData``)."""
        return self._t.get_url(url)

    # ------------------------------------------------------------------------------------- tasks
    def submit_tasks(
        self,
        session_id: str,
        tasks: Sequence[TaskRequest | TaskSpec],
        *,
        results: Sequence[ResultSpec] = (),
        answer: bool = True,
    ) -> SubmitTasksResponse:
        """Submit tasks, creating ``results`` first, in as few requests as the API limits allow.

        Each request carries the results its tasks produce or read, so a task never arrives before
        a result it names. Payloads above the inline limit are uploaded and passed by reference.
        With ``answer=False`` the server is asked for no task or result infos (``?answer=none``) and
        the answers are only checked (errors raise as always): the response lists no tasks or
        results. A sender that keeps its own ids, as a :class:`~skyloom.client.session.Session`
        does, then skips building, sending and parsing an answer as large as its request (a
        quarter of the client's CPU, and a tenth of the submit function's, in a burst of 10,000
        tasks).

        Raises:
            EnvironmentMismatch: functions shipped by value (``skyloom.call``) go to workers of
                another Python or cloudpickle (checked once per client, before anything is sent).

        Example:
            >>> out, = [r.result_id for r in client.create_results(sid, [ResultSpec()])]
            >>> client.submit_tasks(sid, [TaskRequest("echo", expected_outputs=[out], payload=b"hi")])
        """
        specs = [self._task_spec(session_id, t) for t in tasks]
        shipped = [t for t in specs if t.handler == CALL_HANDLER]
        if shipped:
            default = self._session_partition(session_id)
            self._environment.check(t.options.partition or default for t in shipped)
        filled = [r if r.id else r.model_copy(update={"id": new_id()}) for r in results]
        plan, leftover = _plan_requests(specs, filled)
        out = SubmitTasksResponse(tasks=[], results=[])
        if leftover:
            created = self.create_results(session_id, leftover)
            if answer:
                out.results += created
        for chunk_tasks, chunk_results in plan:
            body = SubmitTasksRequest(tasks=chunk_tasks, results=chunk_results)
            if not answer:  # the server then lists nothing either (a server that predates it ignores it)
                self._t.request("POST", f"/sessions/{session_id}/tasks?answer=none", _dump(body))
                continue
            resp = self._call("POST", f"/sessions/{session_id}/tasks", body, SubmitTasksResponse)
            out.tasks += resp.tasks
            out.results += resp.results
        return out

    def get_tasks(self, session_id: str, ids: Sequence[str]) -> list[TaskInfo]:
        return self._ids_call(session_id, "tasks/get", ids, TasksResponse, "tasks")

    def pricing(self) -> Pricing:
        """The prices the stack estimates costs with (list prices, or its ``skyloom:prices``)."""
        return self._call("GET", "/pricing", None, Pricing)

    def task_logs(self, session_id: str, task_id: str, *, attempt: int | None = None) -> TaskLogs:
        """What a task's ended attempts printed on stdout and stderr (the tail of each, the cut said).

        Args:
            attempt: only this attempt (1 is the first); None: every ended attempt, oldest first.

        Example:
            >>> print(client.task_logs(sid, tid).render())
        """
        return self._call("GET", f"/sessions/{session_id}/tasks/{task_id}/logs{_query(attempt=attempt)}", None,
                          TaskLogs)

    def task_checkpoints(self, session_id: str, task_id: str) -> CheckpointInfo:
        """A task's checkpoints: how many its attempts took, their sizes, who resumed from which.

        Example:
            >>> client.task_checkpoints(sid, tid).taken
            12
        """
        return self._call("GET", f"/sessions/{session_id}/tasks/{task_id}/checkpoints", None, CheckpointInfo)

    # ------------------------------------------------------------------------ lifecycle (issue 3)
    def cancel_session(self, session_id: str) -> SessionInfo:
        """Cancel the session: unfinished tasks are cancelled and their outputs aborted."""
        return self._call("POST", f"/sessions/{session_id}/cancel", None, SessionInfo)

    def pause_session(self, session_id: str) -> SessionInfo:
        """Start nothing new in the session until :meth:`resume_session`; submissions still work."""
        return self._call("POST", f"/sessions/{session_id}/pause", None, SessionInfo)

    def resume_session(self, session_id: str) -> SessionInfo:
        return self._call("POST", f"/sessions/{session_id}/resume", None, SessionInfo)

    def purge_session(self, session_id: str) -> SessionInfo:
        """Delete the data of a closed or cancelled session; its metadata stays readable."""
        return self._call("POST", f"/sessions/{session_id}/purge", None, SessionInfo)

    def delete_session(self, session_id: str) -> SessionInfo:
        """Delete a closed or cancelled session with its data and metadata."""
        return self._call("DELETE", f"/sessions/{session_id}", None, SessionInfo)

    def cancel_tasks(self, session_id: str, ids: Sequence[str]) -> list[TaskInfo]:
        """Cancel tasks: queued ones never start, running ones stop at their next heartbeat."""
        return self._ids_call(session_id, "tasks/cancel", ids, TasksResponse, "tasks")

    # ---------------------------------------------------------------------------- listings, events
    def list_sessions(
        self,
        *,
        status: str | Sequence[str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int | None = None,
        next: str | None = None,
    ) -> SessionsPage:
        """One page of the caller's sessions, newest first; ``page.next`` continues it.

        Example:
            >>> [s.session_id for s in client.list_sessions(status="Running", limit=10).sessions]
        """
        query = _query(status=status, created_after=created_after, created_before=created_before, limit=limit,
                       next=next)
        return self._call("GET", f"/sessions{query}", None, SessionsPage)

    def list_tasks(
        self,
        session_id: str,
        *,
        status: str | Sequence[str] | None = None,
        handler: str | None = None,
        partition: str | None = None,
        parent: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int | None = None,
        next: str | None = None,
    ) -> TasksPage:
        """One page of the session's tasks matching the filters; ``page.next`` continues it.

        A filtered page may hold fewer than ``limit`` tasks and still have a ``next``: keep going
        until ``next`` is None (or use :meth:`iter_tasks`).

        Example:
            >>> failed = client.list_tasks(sid, status=["Error", "Timeout"]).tasks
        """
        query = _query(status=status, handler=handler, partition=partition, parent=parent, created_after=created_after,
                       created_before=created_before, limit=limit, next=next)
        return self._call("GET", f"/sessions/{session_id}/tasks{query}", None, TasksPage)

    def list_results(
        self,
        session_id: str,
        *,
        status: str | Sequence[str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int | None = None,
        next: str | None = None,
    ) -> ResultsPage:
        """One page of the session's results matching the filters; ``page.next`` continues it."""
        query = _query(status=status, created_after=created_after, created_before=created_before, limit=limit,
                       next=next)
        return self._call("GET", f"/sessions/{session_id}/results{query}", None, ResultsPage)

    def iter_tasks(self, session_id: str, **filters: Any) -> Iterator[TaskInfo]:
        """Every task of the session matching ``filters`` (those of :meth:`list_tasks`), page by page."""
        token: str | None = None
        while True:
            page = self.list_tasks(session_id, next=token, **filters)
            yield from page.tasks
            if not page.next:
                return
            token = page.next

    def iter_results(self, session_id: str, **filters: Any) -> Iterator[ResultInfo]:
        """Every result of the session matching ``filters`` (those of :meth:`list_results`)."""
        token: str | None = None
        while True:
            page = self.list_results(session_id, next=token, **filters)
            yield from page.results
            if not page.next:
                return
            token = page.next

    def iter_sessions(self, **filters: Any) -> Iterator[SessionInfo]:
        """Every session of the caller matching ``filters`` (those of :meth:`list_sessions`)."""
        token: str | None = None
        while True:
            page = self.list_sessions(next=token, **filters)
            yield from page.sessions
            if not page.next:
                return
            token = page.next

    def events(self, session_id: str, *, after: str | None = None, limit: int | None = None) -> EventsPage:
        """State changes of the session's tasks and results after the cursor ``after``, oldest first.

        Keep the returned ``cursor`` and pass it back to get only what changed since.

        Example:
            >>> page = client.events(sid)
            >>> while True:
            ...     for e in page.events: print(e.kind, e.id, e.status)
            ...     time.sleep(1); page = client.events(sid, after=page.cursor)
        """
        query = _query(after=after, limit=limit)
        return self._call("GET", f"/sessions/{session_id}/events{query}", None, EventsPage)

    # -------------------------------------------------------------------------------- high level
    def session(
        self, *, name: str | None = None, partitions: Sequence[str] = (), **options: Unpack[TaskOptionsArgs]
    ) -> Session:
        """Open a new session; use it with ``with`` so that ``fn.submit()`` inside goes to it.

        The keyword options (:class:`~skyloom.options.TaskOptionsArgs`) become the default of every
        task in the session; a task's own options override them.

        Example:
            >>> with client.session(max_retries=1, name="eod") as s:
            ...     f = price.submit(trade)
            >>> f.result()
        """
        info = self.create_session(options=TaskOptions.of(options), partitions=partitions, name=name)
        return self._track(info.session_id, info)

    def attach(self, session_id: str) -> Session:
        """A handle on an existing session (e.g. one created by another process of the same owner)."""
        return self._track(session_id, None)

    def default_session(self) -> Session:
        """The session ``fn.submit()`` uses outside any ``with client.session()``, created on first use."""
        with self._lock:
            if self._default is None:
                info = self.create_session(name="default")
                self._default = self._track_locked(info.session_id, info)
            return self._default

    def put(self, value: T) -> Future[T]:
        """Store a Python value in the default session; see :meth:`Session.put`."""
        return self.default_session().put(value)

    def flush(self) -> None:
        """Send every buffered submission of every session of this client."""
        for s in list(self._sessions):
            s.flush()

    def close(self) -> None:
        """Flush buffered submissions, release connections, stop an embedded local stack.

        Server-side sessions stay open: tasks already running may still submit subtasks into them.
        """
        if self._closed:
            return
        self._closed = True
        if backend.fallback() == self.default_session:
            backend.set_fallback(None)
        with self._lock:
            waiters = list(self._waiters.values())
        for w in waiters:
            w.close()
        try:
            self.flush()
        finally:
            try:
                self._t.close()
            finally:
                for hook in reversed(self._on_close):
                    hook()

    def on_close(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` when the client closes (how :func:`connect` stops a stack it started)."""
        self._on_close.append(hook)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(endpoint={self.endpoint!r})"

    # ------------------------------------------------------------------------------------ helpers
    def _track(self, session_id: str, info: SessionInfo | None) -> Session:
        with self._lock:
            return self._track_locked(session_id, info)

    def _track_locked(self, session_id: str, info: SessionInfo | None) -> Session:
        s = Session(self, session_id, info=info)
        self._sessions.add(s)
        return s

    def _call(self, method: str, path: str, body: BaseModel | None, model: type[M]) -> M:
        raw = self._t.request(method, path, _dump(body) if body is not None else None)
        return model.model_validate(raw)

    def _ids_call(self, session_id: str, op: str, ids: Sequence[str], model: type[M], key: str) -> list[Any]:
        out: list[Any] = []
        for chunk in _chunks(list(dict.fromkeys(ids)), MAX_IDS_PER_REQUEST):
            resp = self._call("POST", f"/sessions/{session_id}/{op}", IdsRequest(ids=chunk), model)
            out += getattr(resp, key)
        return out

    def _session_partition(self, session_id: str) -> str | None:
        """The session's default partition if this client already knows it (no request)."""
        with self._lock:
            known = next((s for s in self._sessions if s.session_id == session_id), None)
        info = known._cached_info() if known is not None else None
        return info.options.partition if info is not None else None

    def _task_spec(self, session_id: str, t: TaskRequest | TaskSpec) -> TaskSpec:
        if isinstance(t, TaskSpec):
            return t if t.id else t.model_copy(update={"id": new_id()})
        spec: dict[str, Any] = {
            "id": t.task_id or new_id(),
            "handler": t.handler,
            "label": t.label,
            "data_dependencies": list(t.data_dependencies),
            "expected_outputs": list(t.expected_outputs),
            "options": t.options,
        }
        if t.optional_dependencies:
            spec["optional_dependencies"] = list(t.optional_dependencies)
        if t.lazy_dependencies:
            spec["lazy_dependencies"] = list(t.lazy_dependencies)
        if len(t.payload) > self.inline_limit:
            spec["payload_result"] = self.upload(session_id, t.payload, name="payload")
        else:
            spec["payload"] = b64encode(t.payload)
        return TaskSpec(**spec)


def _query(**params: Any) -> str:
    """A query string of the parameters that are set; lists become comma-separated values."""
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            if not value:
                continue
            value = ",".join(str(v) for v in value)
        pairs.append((name, str(value)))
    return f"?{urlencode(pairs)}" if pairs else ""


def _spec_bytes(t: TaskSpec) -> int:
    return 300 + len(t.payload or "") + 40 * (len(t.data_dependencies) + len(t.expected_outputs))


def _plan_requests(
    tasks: list[TaskSpec], results: list[ResultSpec]
) -> tuple[list[tuple[list[TaskSpec], list[ResultSpec]]], list[ResultSpec]]:
    """Split a submission into requests within the API limits, keeping creation before use.

    Each result travels with the first task that names it (as output or dependency), so it exists
    by the time any task referring to it arrives. Returns the requests in order, and the results no
    task names, which the caller creates on their own.
    """
    pending = {r.id: r for r in results if r.id}
    plan: list[tuple[list[TaskSpec], list[ResultSpec]]] = []
    cur_t: list[TaskSpec] = []
    cur_r: list[ResultSpec] = []
    cur_bytes = 0
    for t in tasks:
        needed = [pending.pop(i) for i in (*t.expected_outputs, *t.data_dependencies) if i in pending]
        size = _spec_bytes(t) + sum(200 + len(r.data or "") for r in needed)
        if cur_t and (
            len(cur_t) >= MAX_TASKS_PER_REQUEST
            or len(cur_r) + len(needed) > MAX_RESULTS_PER_REQUEST
            or cur_bytes + size > MAX_REQUEST_BYTES
        ):
            plan.append((cur_t, cur_r))
            cur_t, cur_r, cur_bytes = [], [], 0
        cur_t.append(t)
        cur_r += needed
        cur_bytes += size
    if cur_t:
        plan.append((cur_t, cur_r))
    return plan, list(pending.values())

"""An in-memory Skyloom API for SDK unit tests, and the tests that keep it honest.

``FakeServer`` is a :class:`~skyloom.client.http.Transport`: it parses each request with the same
protocol models as ``functions/submit``, keeps sessions, results and tasks in dicts, and runs ready
tasks in this process through :func:`skyloom.runtime.executor.run_task`, applying outcomes the way
the worker agent does (outputs complete, staged work goes live on success, delegated outputs change
owner, failures retry then abort dependents). TaskInput and TaskOutcome are pickled on the way, as
across the agent's pipe. Errors travel as JSON bodies through ``error_from_response``, so the
client's error mapping is exercised too.

Requests are served one at a time (a lock), except that a wait long-polls like the real route: it
sleeps, lock released, until something changes or its timeout passes, and answers with values and
errors within the same byte budget as :func:`skyloom.core.results.wait_results`.
"""

from __future__ import annotations

import itertools
import json
import pickle
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest

from skyloom.client.environment import client_versions
from skyloom.client.http import error_from_response
from skyloom.core.protocol import (
    CreateResultsRequest,
    CreateSessionRequest,
    IdsRequest,
    ResultError,
    ResultInfo,
    SubmitTasksRequest,
    WaitRequest,
    b64decode,
    b64encode,
)
from skyloom.core.results import WAIT_ANSWER_BUDGET_BYTES
from skyloom.errors import (
    Conflict,
    InvalidRequest,
    PayloadTooLarge,
    ResultNotFound,
    SessionClosed,
    SessionNotFound,
    SkyloomError,
    TaskNotFound,
)
from skyloom.options import TaskOptions
from skyloom.runtime.executor import run_task
from skyloom.runtime.outcome import TaskInput, TaskOutcome

FINAL = ("Completed", "Aborted", "Deleted")
#: The order of state changes across every fake, standing in for ``updated_at`` in the events feed.
_CHANGES = itertools.count(1)


class _Changes:
    """Stamps an object with the next change number whenever its status is set."""

    changed: int = 0

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "status":
            super().__setattr__("changed", next(_CHANGES))


@dataclass
class FakeResult(_Changes):
    result_id: str
    session_id: str
    name: str | None = None
    status: str = "Created"
    data: bytes | None = None
    owner: str | None = None
    error: ResultError | None = None

    def info(self, upload_url: str | None = None) -> dict[str, Any]:
        return ResultInfo(
            result_id=self.result_id,
            session_id=self.session_id,
            status=self.status,
            name=self.name,
            owner_task_id=self.owner,
            size=len(self.data) if self.data is not None else None,
            created_at=0.0,
            error=self.error,
            upload_url=upload_url,
        ).model_dump(mode="json")


@dataclass
class FakeTask(_Changes):
    task_id: str
    session_id: str
    handler: str
    payload: bytes
    deps: list[str]
    outputs: list[str]
    options: dict[str, Any]
    parent: str | None = None
    status: str = "Pending"
    attempts: int = 0
    payload_result: str | None = None
    label: str | None = None

    def info(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "session_id": self.session_id,
            "status": self.status,
            "handler": self.handler,
            "label": self.label,
            "data_dependencies": self.deps,
            "expected_outputs": self.outputs,
            "options": self.options,
            "parent_task_id": self.parent,
            "attempt": self.attempts,
            "created_at": 0.0,
        }


@dataclass
class FakeServer:
    """The REST API in memory; ``auto_run`` runs ready tasks whenever a reader asks."""

    inline_limit: int = 32 * 1024
    auto_run: bool = True
    endpoint: str = "http://fake.skyloom"
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, FakeResult] = field(default_factory=dict)
    tasks: dict[str, FakeTask] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    #: (status, error body) answered instead of the next requests, for error tests.
    inject: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    blob_calls: list[tuple[str, str]] = field(default_factory=list)
    executed: list[TaskInput] = field(default_factory=list)
    #: Reads of the events feed for which a change stays unsettled (given as ``recent``), like the
    #: real feed's settle horizon; 0 settles every change at once.
    settle_reads: int = 0
    _unsettled: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Bytes of values and errors per wait answer (the real route's budget unless a test shrinks it).
    wait_budget: int = WAIT_ANSWER_BUDGET_BYTES
    #: What the workers run per partition, as ``GET /environment`` answers (this process's versions).
    worker_versions: dict[str, tuple[str, str]] = field(default_factory=lambda: {"default": client_versions()})
    #: Long-polling waits (timeout > 0) in flight now, and the most at once.
    waiting: int = 0
    most_waiting: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._changed = threading.Condition(self._lock)

    # ------------------------------------------------------------------ Transport protocol
    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        with self._lock:
            self.calls.append((method, path, body))
            try:
                # Injected errors aim at the requests a test makes, not at the client's one-time
                # environment read before its first shipped function.
                if self.inject and path != "/environment":
                    status, err = self.inject.pop(0)
                    raise error_from_response(status, json.dumps(err).encode(), f"{method} {path}")
                try:
                    return self._route(method, path, json.loads(json.dumps(body)) if body is not None else None)
                except SkyloomError as exc:
                    raise error_from_response(exc.http_status, json.dumps(exc.to_json()).encode(), path) from None
            finally:
                self._changed.notify_all()

    def put_url(self, url: str, data: bytes) -> None:
        self.blob_calls.append(("PUT", url))
        self.blobs[url] = data

    def get_url(self, url: str) -> bytes:
        self.blob_calls.append(("GET", url))
        return self.blobs[url]

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------------- helpers
    def posts(self, suffix: str) -> list[Any]:
        """Bodies of the POST requests whose path ends with ``suffix``."""
        return [b for m, p, b in self.calls if m == "POST" and p.split("?")[0].endswith(suffix)]

    def count(self, part: str) -> int:
        """Requests whose path contains ``part``."""
        return sum(1 for _, p, _ in self.calls if part in p)

    def task_of_output(self, result_id: str) -> FakeTask:
        return next(t for t in self.tasks.values() if result_id in t.outputs)

    # -------------------------------------------------------------------------- routes
    def _route(self, method: str, path: str, body: Any) -> Any:
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", r"/environment", self._environment),
            ("POST", r"/sessions", self._create_session),
            ("GET", r"/sessions/(\w+)", self._get_session),
            ("POST", r"/sessions/(\w+)/close", self._close_session),
            ("POST", r"/sessions/(\w+)/results", self._create_results),
            ("POST", r"/sessions/(\w+)/results/complete", self._complete),
            ("POST", r"/sessions/(\w+)/results/get", self._get_results),
            ("POST", r"/sessions/(\w+)/results/wait", self._wait),
            ("GET", r"/sessions/(\w+)/results/(\w+)/data", self._data),
            ("GET", r"/sessions/(\w+)/results/(\w+)", self._get_result),
            ("POST", r"/sessions/(\w+)/tasks(?:\?answer=(full|none))?", self._submit),
            ("POST", r"/sessions/(\w+)/tasks/get", self._get_tasks),
            ("POST", r"/sessions/(\w+)/tasks/cancel", self._cancel_tasks),
            ("GET", r"/sessions/(\w+)/events(?:\?(.*))?", self._events),
        ]
        for m, pattern, fn in routes:
            match = re.fullmatch(pattern, path)
            if m == method and match:
                return fn(*match.groups(), body)
        raise InvalidRequest(f"no route {method} {path}")

    def _environment(self, body: Any) -> Any:
        partitions = {name: {"python": py, "cloudpickle": cp, "recorded_at": 0.0}
                      for name, (py, cp) in self.worker_versions.items()}
        return {"partitions": partitions, "default_partition": "default"}

    def _session(self, sid: str) -> dict[str, Any]:
        if sid not in self.sessions:
            raise SessionNotFound(f"session {sid}", field="session_id")
        return self.sessions[sid]

    def _create_session(self, body: Any) -> Any:
        req = CreateSessionRequest.model_validate(body)
        sid = uuid.uuid4().hex
        self.sessions[sid] = {
            "session_id": sid,
            "status": "Running",
            "owner": "tester",
            "name": req.name,
            "options": req.options.model_dump(mode="json"),
            "partitions": req.partitions,
            "created_at": time.time(),
            "updated_at": time.time(),
        }
        return self.sessions[sid]

    def _get_session(self, sid: str, body: Any) -> Any:
        return self._session(sid)

    def _close_session(self, sid: str, body: Any) -> Any:
        self._session(sid)["status"] = "Closed"
        return self._session(sid)

    def _result(self, sid: str, rid: str) -> FakeResult:
        r = self.results.get(rid)
        if r is None or r.session_id != sid:
            raise ResultNotFound(f"result {rid} not found", field="ids", details={"missing": [rid]})
        return r

    def _create_results(self, sid: str, body: Any) -> Any:
        self._session(sid)
        req = CreateResultsRequest.model_validate(body)
        out = []
        for spec in req.results:
            assert spec.id, "the SDK chooses every id"
            data = b64decode(spec.data, "data") if spec.data is not None else None
            if data is not None and len(data) > self.inline_limit:
                raise PayloadTooLarge(f"inline data of {len(data)} bytes", field="results.data")
            r = self.results.setdefault(spec.id, FakeResult(spec.id, sid, spec.name))
            url = None
            if data is not None:
                r.data, r.status = data, "Completed"
            elif spec.upload:
                url = f"fake://upload/{sid}/{spec.id}"
            out.append(r.info(url))
        return {"results": out}

    def _complete(self, sid: str, body: Any) -> Any:
        out = []
        for rid in IdsRequest.model_validate(body).ids:
            r = self._result(sid, rid)
            r.data, r.status = self.blobs[f"fake://upload/{sid}/{rid}"], "Completed"
            out.append(r.info())
        return {"results": out}

    def _get_results(self, sid: str, body: Any) -> Any:
        self._maybe_run()
        return {"results": [self._result(sid, rid).info() for rid in IdsRequest.model_validate(body).ids]}

    def _get_result(self, sid: str, rid: str, body: Any) -> Any:
        self._maybe_run()
        return self._result(sid, rid).info()

    def _wait(self, sid: str, body: Any) -> Any:
        req = WaitRequest.model_validate(body)
        self._session(sid)
        deadline = time.monotonic() + req.timeout
        long = req.timeout > 0
        self.waiting += long
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            while True:
                self._maybe_run()
                rs = [self._result(sid, rid) for rid in dict.fromkeys(req.ids)]
                done = _wait_over(req.mode, rs)
                left = deadline - time.monotonic()
                if done or left <= 0:
                    break
                self._changed.wait(left)  # the lock is released: other requests go on
        finally:
            self.waiting -= long
        waited = {r.result_id for r in rs}
        also = [self.results[i] for i in dict.fromkeys(req.also) if i not in waited and i in self.results]
        also = [r for r in also if r.session_id == sid and r.status in FINAL]
        infos, values, incomplete, spent = [], [], [], 0
        for r in rs + also:
            info = r.info()
            value = self._value(sid, r) if req.values and r.status == "Completed" else None
            cost = len(json.dumps(info["error"])) if info["error"] else 0
            if value is not None:
                cost = len(value.get("data") or "") + (2048 if value.get("download_url") else 0) + 100
            if spent and spent + cost > self.wait_budget:
                incomplete.append(r.result_id)
                info["error"] = None
            else:
                spent += cost
                if value is not None:
                    values.append(value)
            infos.append(info)
        return {"results": infos, "done": done, "values": values, "incomplete": incomplete}

    def _value(self, sid: str, r: FakeResult) -> dict[str, Any]:
        data = r.data or b""
        if len(data) > self.inline_limit:
            url = f"fake://download/{sid}/{r.result_id}"
            self.blobs[url] = data
            return {"result_id": r.result_id, "size": len(data), "download_url": url}
        return {"result_id": r.result_id, "size": len(data), "data": b64encode(data)}

    def _cancel_tasks(self, sid: str, body: Any) -> Any:
        self._session(sid)
        out = []
        for tid in IdsRequest.model_validate(body).ids:
            t = self.tasks.get(tid)
            if t is None or t.session_id != sid:
                raise TaskNotFound(f"task {tid}", field="ids")
            if t.status not in ("Completed", "Error", "Cancelled"):
                t.status = "Cancelled"
                error = ResultError(task_id=tid, handler=t.handler, status="Cancelled", attempts=t.attempts,
                                    type="TaskCancelled", message=f"task {tid} was cancelled by tester")
                for rid in t.outputs:
                    if self.results[rid].status == "Created" and self.results[rid].owner == tid:
                        self.results[rid].status, self.results[rid].error = "Aborted", error
            out.append(t.info())
        return {"tasks": out}

    def _data(self, sid: str, rid: str, body: Any) -> Any:
        self._maybe_run()
        r = self._result(sid, rid)
        if r.status != "Completed" or r.data is None:
            raise Conflict(f"result {rid} is {r.status}")
        return self._value(sid, r)

    def _submit(self, sid: str, answer: str | None, body: Any) -> Any:
        session = self._session(sid)
        if session["status"] != "Running":
            raise SessionClosed(f"session {sid} is {session['status']}", field="session_id")
        req = SubmitTasksRequest.model_validate(body)
        created: dict[str, Any] = {"results": []}
        if req.results:
            created = self._create_results(sid, {"results": [r.model_dump(mode="json") for r in req.results]})
        for spec in req.tasks:
            for rid in [*spec.data_dependencies, *spec.expected_outputs]:
                self._result(sid, rid)
            assert spec.id
        infos = []
        for spec in req.tasks:
            assert spec.id
            payload = b64decode(spec.payload, "payload") if spec.payload else b""
            t = FakeTask(
                spec.id,
                sid,
                spec.handler,
                payload,
                list(spec.data_dependencies),
                list(spec.expected_outputs),
                spec.options.compact(),
                payload_result=spec.payload_result,
                label=spec.label,
            )
            self._add_task(t)
            infos.append(t.info())
        if answer == "none":  # as the API: only the results with an upload URL
            return {"tasks": [], "results": [r for r in created["results"] if r.get("upload_url")]}
        return {"tasks": infos, "results": created["results"]}

    def _get_tasks(self, sid: str, body: Any) -> Any:
        out = []
        for tid in IdsRequest.model_validate(body).ids:
            if tid not in self.tasks:
                raise TaskNotFound(tid)
            out.append(self.tasks[tid].info())
        return {"tasks": out}

    def _events(self, sid: str, query: str | None, body: Any) -> Any:
        """The events feed: each object's latest state after the cursor, a change number apart."""
        self._session(sid)
        self._maybe_run()
        params = {k: v[0] for k, v in parse_qs(query or "").items()}
        after, limit = int(params.get("after", "0")), int(params.get("limit", "500"))
        changed: list[tuple[int, dict[str, Any]]] = []
        for r in self.results.values():
            if r.session_id == sid and r.changed > after:
                event = {"kind": "result", "id": r.result_id, "status": r.status, "owner_task_id": r.owner}
                changed.append((r.changed, event))
        for t in self.tasks.values():
            if t.session_id == sid and t.changed > after:
                changed.append((t.changed, {"kind": "task", "id": t.task_id, "status": t.status, "handler": t.handler}))
        changed.sort(key=lambda c: c[0])
        settled: list[tuple[int, dict[str, Any]]] = []
        for n, e in changed:
            key = (e["id"], str(n))
            left = self._unsettled.setdefault(key, self.settle_reads)
            if left > 0:
                self._unsettled[key] = left - 1
                break
            settled.append((n, e))
        page = settled[:limit]
        recent = [{**e, "at": float(n)} for n, e in changed[len(page):][:limit - len(page)]] if page == settled else []
        return {
            "events": [{**e, "at": float(n)} for n, e in page],
            "cursor": str(page[-1][0] if page else after),
            "more": len(settled) > limit,
            "recent": recent,
        }

    def _add_task(self, t: FakeTask) -> None:
        for rid in t.outputs:
            r = self.results[rid]
            if r.owner not in (None, t.task_id, t.parent):
                raise InvalidRequest(f"result {rid} already has producer {r.owner}")
            r.owner = t.task_id
        self.tasks.setdefault(t.task_id, t)

    # ------------------------------------------------------------------------- execution
    def _maybe_run(self) -> None:
        if self.auto_run:
            self.run()

    def run(self) -> None:
        """Run ready tasks until nothing changes, like workers plus the resolve function."""
        with self._lock:
            self._run_ready()
            self._changed.notify_all()

    def _run_ready(self) -> None:
        progress = True
        while progress:
            progress = False
            for t in list(self.tasks.values()):
                if t.status != "Pending":
                    continue
                deps = [self.results[d] for d in t.deps]
                aborted = next((d for d in deps if d.status == "Aborted"), None)
                if aborted is not None:
                    t.status = "Cancelled"
                    self._abort(t, aborted.error)
                    progress = True
                elif all(d.status == "Completed" for d in deps):
                    self._execute(t)
                    progress = True

    def _execute(self, t: FakeTask) -> None:
        options = TaskOptions(**t.options).merged_over(TaskOptions(**self.sessions[t.session_id]["options"]))
        payload = self.results[t.payload_result].data or b"" if t.payload_result else t.payload
        t.attempts += 1
        inp = TaskInput(
            task_id=t.task_id,
            session_id=t.session_id,
            handler=t.handler,
            payload=payload,
            dependencies={d: self.results[d].data or b"" for d in t.deps},
            expected_outputs=list(t.outputs),
            options=options.compact(),
            attempt=t.attempts,
        )
        self.executed.append(inp)
        outcome: TaskOutcome = pickle.loads(pickle.dumps(run_task(pickle.loads(pickle.dumps(inp)))))
        if outcome.error is not None:
            retries = options.max_retries if options.max_retries is not None else 2
            if outcome.error.retryable and t.attempts <= retries:
                return
            t.status = "Error"
            self._abort(
                t,
                ResultError(
                    task_id=t.task_id,
                    handler=t.handler,
                    status="Error",
                    attempts=t.attempts,
                    type=outcome.error.type,
                    message=outcome.error.message,
                    traceback=outcome.error.traceback,
                    args=outcome.error.args,
                ),
            )
            return
        for sr in outcome.staged_results:
            r = self.results.setdefault(sr.result_id, FakeResult(sr.result_id, t.session_id, sr.name))
            if sr.data is not None:
                r.data, r.status = sr.data, "Completed"
        for st in outcome.staged_tasks:
            self._add_task(
                FakeTask(
                    st.task_id,
                    t.session_id,
                    st.handler,
                    st.payload,
                    list(st.data_dependencies),
                    list(st.expected_outputs),
                    dict(st.options),
                    parent=t.task_id,
                    label=st.label,
                )
            )
        for rid, data in outcome.outputs.items():
            r = self.results[rid]
            r.data, r.status = data, "Completed"
        t.status = "Completed"

    def _abort(self, t: FakeTask, error: ResultError | None) -> None:
        for rid in t.outputs:
            r = self.results[rid]
            r.status, r.error = "Aborted", error


def _wait_over(mode: str, rs: list[FakeResult]) -> bool:
    final = [r for r in rs if r.status in FINAL]
    if mode == "any":
        return bool(final)
    if mode == "first_failure" and any(r.status != "Completed" for r in final):
        return True
    return len(final) == len(rs)


# ------------------------------------------------------------------------------------- tests
def test_fake_server_rejects_unknown_dependencies() -> None:
    # GIVEN a session on the fake
    server = FakeServer()
    sid = server.request("POST", "/sessions", {})["session_id"]
    # WHEN a task names a result that does not exist
    body = {"tasks": [{"id": "t1", "handler": "h", "expected_outputs": ["nope"]}]}
    # THEN the client-side error class comes back, as from the real API
    with pytest.raises(ResultNotFound):
        server.request("POST", f"/sessions/{sid}/tasks", body)


def test_fake_server_completes_inline_results() -> None:
    server = FakeServer()
    sid = server.request("POST", "/sessions", {})["session_id"]
    server.request("POST", f"/sessions/{sid}/results", {"results": [{"id": "r1", "data": b64encode(b"x")}]})
    assert server.results["r1"].status == "Completed"

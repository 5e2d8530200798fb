"""What a running task sees: its inputs, and a place to stage results and subtasks.

Nothing here talks to AWS. Results a task sends and subtasks it submits are *staged* in memory and
handed back to the worker agent in the :class:`~skyloom.runtime.outcome.TaskOutcome`; the agent
makes them live only if the attempt succeeds, so a failed attempt leaves nothing behind. The
context is also the backend of ``fn.submit()`` inside a task, which is why the high-level API works
unchanged in a task.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from types import MappingProxyType
from typing import Any, NoReturn

from skyloom.client import backend
from skyloom.client.callspec import rewrite_dependency
from skyloom.client.futures import Future
from skyloom.client.specs import TaskRequest
from skyloom.core.clock import new_id
from skyloom.core.limits import MEASUREMENTS_PER_ATTEMPT
from skyloom.core.protocol import CALL_HANDLER
from skyloom.errors import InputAborted, InvalidArgument, InvalidRequest, ResultAlreadyWritten
from skyloom.options import TaskOptions, check_metric
from skyloom.runtime.inputs import Aborted, aborted_marker
from skyloom.runtime.outcome import Recorded, StagedResult, StagedTask, TaskInput, TaskOutcome

_current: ContextVar[TaskContext | None] = ContextVar("skyloom_task_context", default=None)
#: The task this process is running, for threads the task starts (they do not inherit contextvars).
#: A worker's child process runs one task at a time, so one slot is enough.
_running: TaskContext | None = None


class OutputsNotCovered(RuntimeError):
    """A task ended without producing or delegating each expected output exactly once."""

    non_retryable = True


def current_context() -> TaskContext:
    """The context of the task running in this process.

    Raises:
        RuntimeError: called outside a task.

    Example:
        >>> @skyloom.task
        ... def whoami() -> str:
        ...     return skyloom.current_context().task_id
    """
    ctx = active_context()
    if ctx is None:
        raise RuntimeError("skyloom.current_context() is only available inside a running task")
    return ctx


def active_context() -> TaskContext | None:
    """The running task's context, or None on a client."""
    ctx = _current.get()
    return ctx if ctx is not None else _running


class TaskContext:
    """One attempt of one task, as its handler sees it. Built by the executor from a TaskInput.

    Example:
        >>> @skyloom.handler("fan-out")
        ... def fan_out(ctx: TaskContext) -> None:
        ...     parts = ctx.create_results(["left", "right"])
        ...     ctx.submit_tasks([TaskRequest("leaf", expected_outputs=[p]) for p in parts])
        ...     ctx.submit_tasks([TaskRequest("join", expected_outputs=ctx.expected_outputs,
        ...                                   data_dependencies=parts)])   # delegates our output
    """

    def __init__(self, inp: TaskInput):
        self.task_id = inp.task_id
        self.session_id = inp.session_id
        self.handler = inp.handler
        self.payload = inp.payload
        #: Every data dependency's value, by result id.
        self.dependencies: Mapping[str, bytes] = MappingProxyType(dict(inp.dependencies))
        self.expected_outputs: tuple[str, ...] = tuple(inp.expected_outputs)
        #: The task's effective options; subtasks inherit them unless they override.
        self.options = _options(inp.options)
        self.attempt = inp.attempt
        self._lock = threading.RLock()
        self._outputs: dict[str, bytes] = {}
        self._results: dict[str, StagedResult] = {}
        self._tasks: list[StagedTask] = []
        #: result id -> id of the staged task producing it (parent outputs included: delegation).
        self._producer: dict[str, str] = {}
        self._blobs: dict[str, str] = {}
        self._metrics = dict(inp.metrics)
        self._recorded: list[Recorded] = []
        #: This attempt's checkpoints (:mod:`skyloom.runtime.checkpointing`), made on first use.
        self.checkpointer: Any = None
        #: Lazy data dependencies: not in ``dependencies``; :meth:`fetch` downloads one on demand.
        self.lazy: frozenset[str] = frozenset(inp.lazy)
        #: Optional data dependencies that were aborted, by result id: the marker says why.
        self.aborted: Mapping[str, Aborted] = MappingProxyType(
            {rid: aborted_marker(rid, err) for rid, err in inp.aborted.items()})
        self._fetched: dict[str, bytes] = {}
        self._lazy_fetches = 0
        self._lazy_bytes = 0
        self._lazy_seconds = 0.0

    # ------------------------------------------------------------------------------ low level
    def send_result(self, result_id: str, data: bytes) -> None:
        """Produce ``result_id``: one of this task's expected outputs, or a result it created.

        Raises:
            ResultAlreadyWritten: the result was already sent.
            InvalidRequest: the result is delegated to a subtask, or not this task's to write.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"send_result needs bytes, got {type(data).__name__}; pickle the value first")
        with self._lock:
            if result_id in self._outputs:
                raise ResultAlreadyWritten(f"output {result_id} was already sent by this task")
            if result_id in self._producer:
                raise InvalidRequest(
                    f"result {result_id} is produced by subtask {self._producer[result_id]}; "
                    "a result has exactly one producer",
                    field="result_id",
                )
            if result_id in self.expected_outputs:
                self._outputs[result_id] = bytes(data)
                return
            staged = self._results.get(result_id)
            if staged is None:
                raise InvalidRequest(
                    f"result {result_id} is neither an expected output of task {self.task_id} nor a result it created",
                    field="result_id",
                )
            if staged.data is not None:
                raise ResultAlreadyWritten(f"result {result_id} was created with data already")
            self._results[result_id] = replace(staged, data=bytes(data))

    def fetch(self, result_id: str) -> bytes:
        """The value of a data dependency: prefetched ones at once, a lazy one downloaded now (once;
        timed and counted in the attempt's input transfers).

        Raises:
            InputAborted: ``result_id`` is an optional dependency that was aborted (see ``aborted``).
            InvalidRequest: ``result_id`` is not a data dependency of this task.
        """
        if result_id in self.aborted:
            raise InputAborted(f"input {result_id} was aborted: {self.aborted[result_id].reason}",
                               field="result_id", details={"result_id": result_id})
        if result_id in self.dependencies:
            return self.dependencies[result_id]
        if result_id not in self.lazy:
            raise InvalidRequest(f"result {result_id} is not a data dependency of task {self.task_id}",
                                 field="result_id")
        with self._lock:
            known = self._fetched.get(result_id)
            if known is not None:
                return known
            from skyloom.core.results import fetch_values  # the child reaches storage only for this
            from skyloom.runtime import store

            start = time.monotonic()
            data = fetch_values(store.settings(), [result_id], session_id=self.session_id)[result_id]
            self._lazy_seconds += time.monotonic() - start
            self._lazy_fetches += 1
            self._lazy_bytes += len(data)
            self._fetched[result_id] = data
            return data

    def create_results(self, items: Sequence[str | bytes | None]) -> list[str]:
        """Stage new results: a ``str`` names one for a subtask to produce, ``bytes`` is its data.

        Example:
            >>> out, table = ctx.create_results(["out", b"lookup table"])
        """
        ids: list[str] = []
        with self._lock:
            for item in items:
                rid = self.new_id()
                if isinstance(item, bytes | bytearray):
                    self._results[rid] = StagedResult(rid, data=bytes(item))
                else:
                    self._results[rid] = StagedResult(rid, name=item)
                ids.append(rid)
        return ids

    def submit_tasks(self, tasks: Sequence[TaskRequest]) -> list[str]:
        """Stage subtasks. Naming one of this task's expected outputs delegates it to the subtask.

        Subtasks start only once this attempt succeeds, and inherit this task's options except
        those they set.

        Raises:
            InvalidRequest: an expected output is not this task's to hand out, or has a producer.
        """
        ids: list[str] = []
        with self._lock:
            claimed: set[str] = set()
            staged = [self._stage(t, claimed) for t in tasks]
            for s in staged:
                for out in s.expected_outputs:
                    self._producer[out] = s.task_id
                self._tasks.append(s)
                ids.append(s.task_id)
        return ids

    # ------------------------------------------------------------------ backend of fn.submit()
    def new_id(self) -> str:
        return new_id()

    def blob_ref(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        with self._lock:
            known = self._blobs.get(key)
            if known is None:
                # A recursive function finds its own pickled body among its inputs: reuse it.
                known = next(
                    (rid for rid, v in self.dependencies.items() if len(v) == len(data) and v == data),
                    None,
                )
            if known is None:
                (known,) = self.create_results([data])
            self._blobs[key] = known
            return known

    def enqueue(self, task: TaskRequest, outputs: Mapping[str, str | None]) -> None:
        with self._lock:
            for rid, name in outputs.items():
                self._results[rid] = StagedResult(rid, name=name)
            self.submit_tasks([task])

    def future(self, result_id: str, task_id: str | None) -> Future[Any]:
        return Future(result_id, self, task_id)

    def waiter(self, futures: Sequence[Future[Any]]) -> NoReturn:
        self._cannot_wait(", ".join(f.id for f in futures[:3]))

    # ------------------------------------------------------------------------- for the runtime
    def delegate(self, result_id: str, output: str) -> None:
        """Make the staged subtask producing ``result_id`` produce our ``output`` instead.

        Every staged reference to ``result_id`` is renamed (dependencies, and call-spec payloads,
        whose refs live in a JSON header), and the staged result itself is dropped: it would
        otherwise stay Created forever with no producer.
        """
        with self._lock:
            if output not in self.expected_outputs:
                raise InvalidRequest(f"{output} is not an expected output of task {self.task_id}")
            if output in self._outputs or output in self._producer:
                raise InvalidRequest(f"output {output} is already produced; it cannot be delegated too")
            if result_id not in self._results or result_id not in self._producer:
                raise InvalidRequest(
                    f"result {result_id} was not submitted by task {self.task_id}; only a future "
                    "created by this task's own submissions can be returned"
                )
            renamed: list[StagedTask] = []
            for t in self._tasks:
                if result_id in t.expected_outputs or result_id in t.data_dependencies:
                    t = replace(
                        t,
                        expected_outputs=[output if o == result_id else o for o in t.expected_outputs],
                        data_dependencies=[output if d == result_id else d for d in t.data_dependencies],
                        optional_dependencies=[output if d == result_id else d for d in t.optional_dependencies],
                        lazy_dependencies=[output if d == result_id else d for d in t.lazy_dependencies],
                        payload=(
                            rewrite_dependency(t.payload, result_id, output)
                            if t.handler == CALL_HANDLER and result_id in t.data_dependencies
                            else t.payload
                        ),
                    )
                renamed.append(t)
            self._tasks = renamed
            self._producer[output] = self._producer.pop(result_id)
            del self._results[result_id]

    # ---------------------------------------------------------------------------- measurements
    def record(self, key: str, name: str, value: float) -> None:
        """Record ``value`` as ``name`` under the business key ``key``; it is stored when this attempt
        succeeds, outlives the session, and is what ``latest(key, name)`` returns from then on.

        Raises:
            InvalidArgument: a key or name that is not valid, a value that is not a finite number,
                or more than ``limits.MEASUREMENTS_PER_ATTEMPT`` records in one attempt.
        """
        check_metric(key, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidArgument(f"a measurement is a finite number, got {value!r}", field="value")
        with self._lock:
            if len(self._recorded) >= MEASUREMENTS_PER_ATTEMPT.value:
                raise InvalidArgument(
                    f"at most {MEASUREMENTS_PER_ATTEMPT.value} measurements per attempt", field="value",
                    details={"limit": MEASUREMENTS_PER_ATTEMPT.value},
                )
            self._recorded.append(Recorded(key, name, float(value), time.time()))

    def latest(self, key: str, name: str) -> float | None:
        """The last value recorded as ``name`` under ``key`` when this attempt started (None if none
        was), read without a call: the pair must be in the task's ``metrics`` option.

        Raises:
            InvalidArgument: the pair was not asked for in ``TaskOptions(metrics=[...])``.
        """
        check_metric(key, name)
        if (key, name) not in set(self.options.metrics or ()):
            raise InvalidArgument(
                f"({key!r}, {name!r}) was not asked for: submit the task with "
                f"TaskOptions(metrics=[({key!r}, {name!r})]) so that the worker reads it before the task starts",
                field="metrics",
            )
        return self._metrics.get((key, name))

    def outcome(self) -> TaskOutcome:
        """What the attempt produced, after checking each expected output is covered exactly once.

        Raises:
            OutputsNotCovered: an output was neither sent nor delegated (non-retryable).
        """
        with self._lock:
            missing = [o for o in self.expected_outputs if o not in self._outputs and o not in self._producer]
            if missing:
                raise OutputsNotCovered(
                    f"task {self.task_id} (handler {self.handler}) finished without producing expected "
                    f"output{'s' if len(missing) > 1 else ''} {', '.join(missing)}: call "
                    "ctx.send_result(id, data) or submit a subtask naming it in expected_outputs"
                )
            return TaskOutcome(
                outputs=dict(self._outputs),
                staged_results=list(self._results.values()),
                staged_tasks=list(self._tasks),
                measurements=list(self._recorded),
                checkpointed=bool(getattr(self.checkpointer, "touched", False)),
                **self.transfers(),
            )

    def transfers(self) -> dict[str, Any]:
        """The lazy fetches of this attempt, as :class:`TaskOutcome` fields (also for a failed one)."""
        with self._lock:
            return {"lazy_fetches": self._lazy_fetches, "lazy_bytes": self._lazy_bytes,
                    "lazy_seconds": self._lazy_seconds}

    @contextmanager
    def active(self) -> Iterator[TaskContext]:
        """Make this the current context, so ``fn.submit()`` stages here."""
        global _running
        token = _current.set(self)
        previous, _running = _running, self
        try:
            yield self
        finally:
            _running = previous
            _current.reset(token)

    def __repr__(self) -> str:
        return f"TaskContext(task_id={self.task_id!r}, handler={self.handler!r})"

    # ------------------------------------------------------------------------------------ steps
    def _stage(self, t: TaskRequest, claimed: set[str]) -> StagedTask:
        if not isinstance(t, TaskRequest):
            raise TypeError(f"submit_tasks takes TaskRequest values, got {type(t).__name__}")
        for out in t.expected_outputs:
            if out in self._producer or out in self._outputs or out in claimed:
                raise InvalidRequest(
                    f"result {out} already has a producer; a result has exactly one",
                    field="expected_outputs",
                )
            staged = self._results.get(out)
            if out not in self.expected_outputs and (staged is None or staged.data is not None):
                raise InvalidRequest(
                    f"subtask output {out} must be one of this task's expected outputs (to delegate it) "
                    "or a result created with ctx.create_results()",
                    field="expected_outputs",
                )
            claimed.add(out)
        return StagedTask(
            task_id=t.task_id or self.new_id(),
            handler=t.handler,
            payload=t.payload,
            data_dependencies=list(t.data_dependencies),
            expected_outputs=list(t.expected_outputs),
            options=t.options.merged_over(self.options).compact(),
            label=t.label,
            optional_dependencies=list(t.optional_dependencies),
            lazy_dependencies=list(t.lazy_dependencies),
        )

    def _cannot_wait(self, result_id: str) -> NoReturn:
        raise RuntimeError(
            f"a task cannot wait for result {result_id} of its own subtask: subtasks start only after "
            "the task that submitted them succeeds. Return the future (its value becomes this task's "
            "result) or pass it to another fn.submit() as an argument"
        )


def _options(raw: Mapping[str, object]) -> TaskOptions:
    known = {k: v for k, v in raw.items() if k in TaskOptions.model_fields and v is not None}
    return TaskOptions.model_validate(known)


# fn.submit() inside a task stages here; the client finds it through this hook, without importing us.
backend.set_task_lookup(active_context)

"""Submitting a batch of tasks (and the results they need) from a client.

Validation reads everything the batch refers to first and raises before any write, so bad input
changes nothing. Writes are conditional and chunked into transactions; a retried request with the
same ids is recognised by its fingerprint and completes instead of duplicating work.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

from pynamodb.exceptions import DoesNotExist
from pynamodb.transactions import TransactWrite

from skyloom.core import access, clock, readiness
from skyloom.core.config import Settings
from skyloom.core.ddb import Op, put_new, transact_idempotent
from skyloom.core.graph import (
    TaskNode,
    check_acyclic,
    check_dependency_kinds,
    check_unique,
    settled_inputs,
)
from skyloom.core.models import ResultModel, SessionModel, TaskModel
from skyloom.core.protocol import SubmitTasksRequest, SubmitTasksResponse, TaskSpec, b64decode
from skyloom.core.results import (
    fingerprint,
    load_session_and_results,
    new_result_items,
    replayed,
    require_open,
    result_info,
)
from skyloom.core.states import ResultStatus, SessionStatus, TaskStatus
from skyloom.core.tasks import task_info
from skyloom.core.transitions import result_in
from skyloom.errors import Conflict, InvalidRequest, PayloadTooLarge, ResultNotFound
from skyloom.options import TaskOptions


def effective_options(settings: Settings, session: SessionModel, own: TaskOptions, field: str) -> TaskOptions:
    """Task over session over global defaults, checked against the session's partitions."""
    merged = own.merged_over(TaskOptions(**(session.options or {})))
    partitions = list(session.partitions or [settings.default_partition])
    partition = merged.partition or partitions[0]
    if partition not in partitions:
        raise InvalidRequest(
            f"partition {partition!r} is not one of the session's partitions ({', '.join(partitions)})",
            field=f"{field}.options.partition",
        )
    return merged.merged_over(
        TaskOptions(partition=partition, priority=0, max_retries=settings.default_max_retries)
    )


def _payload(settings: Settings, spec: TaskSpec, field: str) -> bytes | None:
    if spec.payload is None:
        return None if spec.payload_result else b""
    if spec.payload_result is not None:
        raise InvalidRequest("give payload or payload_result, not both", field=f"{field}.payload_result")
    data = b64decode(spec.payload, f"{field}.payload")
    if len(data) > settings.inline_max_bytes:
        raise PayloadTooLarge(
            f"payload of {len(data)} bytes exceeds the {settings.inline_max_bytes}-byte inline limit; "
            "upload it as a result and pass its id as payload_result",
            field=f"{field}.payload",
            details={"limit": settings.inline_max_bytes, "size": len(data)},
        )
    return data


def submit_tasks(settings: Settings, owner: str, session_id: str, req: SubmitTasksRequest, *,
                 answer: bool = True) -> SubmitTasksResponse:
    """Create the request's results and tasks, queue the ready tasks, and say what was created;
    with ``answer=False`` only the results that carry an upload URL are listed (a client that keeps
    its own ids needs nothing else back, and the full answer is as large as the request)."""
    ids = [spec.id or clock.new_id() for spec in req.tasks]
    nodes = [
        TaskNode(tid, (*spec.data_dependencies, *([spec.payload_result] if spec.payload_result else [])),
                 tuple(spec.expected_outputs))
        for tid, spec in zip(ids, req.tasks, strict=True)
    ]
    # The results the tasks name that this request does not create, read with the session.
    named = {spec.id for spec in req.results if spec.id}
    referenced = [rid for n in nodes for rid in (*n.dependencies, *n.outputs) if rid not in named]
    session, existing = load_session_and_results(owner, session_id, referenced, require=False)
    require_open(session)
    request_id = fingerprint(req, session)
    new_results, upload_urls = new_result_items(settings, session, req.results, request_id, "results")
    check_unique([r.result_id for r in new_results], "results")
    created = {r.result_id: r for r in new_results}
    check_unique(ids, "tasks")
    check_acyclic(nodes)  # also checks each output has a single producer
    results = {**existing, **created}
    for i, (tid, spec) in enumerate(zip(ids, req.tasks, strict=True)):
        check_dependency_kinds(spec.data_dependencies, spec.optional_dependencies, spec.lazy_dependencies,
                               f"tasks.{i}")
        _check_refs(results, created, tid, spec, f"tasks.{i}")

    starts = session.status == SessionStatus.RUNNING.value
    now = clock.now()
    tasks: list[TaskModel] = []
    # The options of a task that sets none are the same for every such task of the request: merged
    # once (each merge builds and dumps pydantic models: a twentieth of the submit function's CPU).
    plain: tuple[TaskOptions, dict[str, Any]] | None = None
    for i, (tid, spec, node) in enumerate(zip(ids, req.tasks, nodes, strict=True)):
        field = f"tasks.{i}"
        if spec.options.model_fields_set or plain is None:
            opts = effective_options(settings, session, spec.options, field)
            stored = opts.compact()
            if not spec.options.model_fields_set:
                plain = opts, stored
        else:
            opts, stored = plain
        partition_spec = settings.partition(opts.partition or "")
        if partition_spec is not None:  # checked per task: tasks of one batch may target several fleets
            access.require_identity(partition_spec, owner, f"{field}.options.partition")
            access.require_handler(partition_spec, spec.handler, f"{field}.handler")
        payload = _payload(settings, spec, field)
        remaining, aborted = settled_inputs(node.dependencies, {d: results[d].status for d in node.dependencies},
                                            spec.optional_dependencies)
        t = TaskModel(
            task_id=tid,
            session_id=session.session_id,
            owner=session.owner,
            status=TaskStatus.PENDING.value,
            handler=spec.handler,
            label=spec.label,
            payload=payload,
            payload_result=spec.payload_result,
            payload_size=len(payload or b""),
            data_dependencies=list(spec.data_dependencies),
            remaining=remaining or None,
            optional_deps=set(spec.optional_dependencies) or None,
            lazy_deps=set(spec.lazy_dependencies) or None,
            aborted_inputs=aborted or None,
            expected_outputs=list(spec.expected_outputs),
            options=dict(stored),
            partition=opts.partition,
            priority=opts.priority or 0,
            created_at=now,
            updated_at=now,
            request_id=request_id,
        )
        if not remaining and starts:
            readiness.queue_on_write(settings, t, now)
        tasks.append(t)
        for out in spec.expected_outputs:
            if out in created:
                created[out].owner_task_id = tid

    flagged = readiness.flag_dependents(new_results, tasks)
    readiness.note_releases(tasks)
    # Results a task of this batch waits on: their producers are queued only once the waiting
    # tasks' edges exist (below), so that a producer failing at once still finds its dependents to
    # cancel. The other ready tasks are queued as their chunk is written, while the next is: on a
    # large submission the workers start after the first transaction instead of after the last.
    awaited = {rid for t in tasks for rid in (t.remaining or ())}
    with _EarlySends(settings, awaited) as early:
        _write(new_results, existing, tasks, request_id, session.session_id, on_tasks_written=early.send)

    waiting = [t for t in tasks if t.status == TaskStatus.PENDING.value and t.remaining]
    readiness.register_edges(waiting, flagged=flagged)
    # A mandatory input that had aborted when read cancels its task now (a producer failing just
    # before this request or just after it ends alike; the SDK groups fn.submit() calls into
    # requests of its own choosing): after the edges, so the cascade reaches this batch's dependents.
    settled = readiness.settle_aborted(settings, waiting, results)
    if starts:
        readiness.enqueue_tasks(settings, early.held_back, whole=True)  # as written: the messages carry them
        readiness.enqueue_tasks(settings, [*settled, *readiness.recheck(settings, waiting)], whole=True)
    return SubmitTasksResponse(
        tasks=[task_info(t) for t in tasks] if answer else [],
        results=[result_info(r, upload_urls.get(r.result_id)) for r in new_results
                 if answer or r.result_id in upload_urls],
    )


def _check_refs(
    results: dict[str, ResultModel], created: dict[str, ResultModel], tid: str, spec: TaskSpec, field: str
) -> None:
    for name, ids in (("data_dependencies", spec.data_dependencies), ("expected_outputs", spec.expected_outputs),
                      ("payload_result", [spec.payload_result] if spec.payload_result else [])):
        missing = [rid for rid in ids if rid not in results]
        if missing:
            raise ResultNotFound(
                f"task {tid}: unknown result id(s) {', '.join(missing[:10])} in {name}",
                field=f"{field}.{name}",
                details={"missing": missing[:100]},
            )
    for rid in (*spec.data_dependencies, *([spec.payload_result] if spec.payload_result else [])):
        # An input already aborted does not refuse the task: an optional one runs without it (and is
        # told), a mandatory one cancels it once written (see submit_tasks), as when it aborts later.
        status = results[rid].status
        if status == ResultStatus.DELETED.value:
            raise InvalidRequest(f"task {tid} depends on result {rid}, which is {status}",
                                 field=f"{field}.data_dependencies", details={"result_id": rid, "status": status})
    for rid in spec.expected_outputs:
        r = results[rid]
        if rid in created:
            if r.status != ResultStatus.CREATED.value or r.s3_key:
                raise InvalidRequest(f"expected output {rid} is created with data; a task cannot produce it",
                                     field=f"{field}.expected_outputs")
            continue
        if r.status != ResultStatus.CREATED.value or r.s3_key or (r.owner_task_id not in (None, tid)):
            raise Conflict(
                f"result {rid} cannot be an expected output of task {tid}: it is {r.status}"
                + (f" and produced by task {r.owner_task_id}" if r.owner_task_id else "")
                + (" and reserved for upload" if r.s3_key else ""),
                field=f"{field}.expected_outputs",
            )


#: Items in a submission's first transaction: the first ready tasks are queued once it is written,
#: so it is kept small (about ten tasks with their outputs) for the workers to start early.
FIRST_WRITE_ITEMS = 20


class _EarlySends:
    """Queues written ready tasks in the background while the rest of the submission is written,
    except those producing a result in ``awaited`` (kept in :attr:`held_back` for the caller); on
    exit, waits for every send and raises the first send's error (unless the block raised)."""

    _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="skyloom-submit-enqueue")

    def __init__(self, settings: Settings, awaited: Collection[str]) -> None:
        self._settings = settings
        self._awaited = awaited
        self._sends: list[Future[int]] = []
        self.held_back: list[TaskModel] = []

    def send(self, tasks: Sequence[TaskModel]) -> None:
        ready: list[TaskModel] = []
        for t in tasks:
            if t.status != TaskStatus.SUBMITTED.value:
                continue
            if any(out in self._awaited for out in t.expected_outputs or ()):
                self.held_back.append(t)
            else:
                ready.append(t)
        if ready:
            self._sends.append(self._pool.submit(readiness.enqueue_tasks, self._settings, ready, whole=True))

    def __enter__(self) -> _EarlySends:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        errors = [e for e in (f.exception() for f in self._sends) if e is not None]
        if errors and exc is None:
            raise errors[0]


def _write(new_results: Sequence[ResultModel], existing: dict[str, ResultModel], tasks: Sequence[TaskModel],
           request_id: str, session_id: str, *,
           on_tasks_written: Callable[[Sequence[TaskModel]], None] | None = None) -> None:
    """Write the submission's items, in chunks: first the results no task of it produces (the data
    its tasks read), then each task after its own outputs, so that every chunk written completes
    whole tasks, each one's inputs and outputs included. ``on_tasks_written`` gets the tasks of each
    chunk once it is written."""
    ops: list[Op] = []
    checks: list[tuple[str, str, str]] = []  # what each op writes, to recognise a replay
    produced = {out for t in tasks for out in t.expected_outputs}
    by_id = {r.result_id: r for r in new_results}
    for r in new_results:
        if r.result_id not in produced:
            ops.append(put_new(r))
            checks.append(("result", r.result_id, ""))
    task_at: list[tuple[int, TaskModel]] = []  # (index of the task's op, task)
    for t in tasks:
        for out in t.expected_outputs:
            if out in by_id:
                ops.append(put_new(by_id[out]))
                checks.append(("result", out, ""))
            elif out in existing:
                ops.append(_claim_output(out, t.task_id))
                checks.append(("owner", out, t.task_id))
        task_at.append((len(ops), t))
        ops.append(put_new(t))
        checks.append(("task", t.task_id, ""))

    def already_done(i: int) -> bool:
        kind, key, owner_task = checks[i]
        if kind == "result":
            ok = replayed(ResultModel, key, request_id, session_id)
        elif kind == "task":
            ok = _task_replayed(key, request_id, session_id)
        else:
            try:
                ok = ResultModel.get(key, consistent_read=True).owner_task_id == owner_task
            except DoesNotExist:
                ok = False
        if not ok:
            field = "results" if kind == "result" else "tasks"
            raise Conflict(f"{kind} id {key} is already taken or changed concurrently", field=field)
        return True

    told = 0

    def written(end: int) -> None:
        nonlocal told
        upto = told
        while upto < len(task_at) and task_at[upto][0] < end:
            upto += 1
        if on_tasks_written is not None and upto > told:
            on_tasks_written([t for _, t in task_at[told:upto]])
        told = upto

    transact_idempotent(ops, already_done, first_chunk=FIRST_WRITE_ITEMS, on_written=written)


def _task_replayed(task_id: str, request_id: str, session_id: str) -> bool:
    try:
        t = TaskModel.get(task_id, consistent_read=True)
        return t.request_id == request_id and t.session_id == session_id
    except DoesNotExist:
        return False


def _claim_output(result_id: str, task_id: str) -> Op:
    def op(tx: TransactWrite) -> None:
        tx.update(
            ResultModel(result_id),
            actions=[ResultModel.owner_task_id.set(task_id), ResultModel.updated_at.set(clock.now())],
            condition=result_in(ResultStatus.CREATED)
            & ResultModel.s3_key.does_not_exist()
            & (ResultModel.owner_task_id.does_not_exist() | (ResultModel.owner_task_id == task_id)),
        )

    return op

"""The life of one attempt: claim, heartbeat, inputs, then success or failure.

A worker owns a task only while its lease holds: every write below is conditioned on
``status = Processing AND lease_owner = me AND attempt = n``, so a worker that was presumed dead
(SIGKILL, network partition) and comes back can no longer change anything. Success is committed
in one transaction (task Completed + each output Completed or re-owned by the subtask it was
delegated to); children staged by the attempt become live after that commit, and the sweeper
finishes the job if the worker dies in between (``finalize_pending`` + the timer index).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from skyloom.core import access, blobs, clock, readiness, sessions
from skyloom.core.cancellation import cancel_task
from skyloom.core.config import Settings
from skyloom.core.ddb import Op, condition_failed, failed_indexes, transact, transact_idempotent, update_if
from skyloom.core.dispatching import TaskMessage
from skyloom.core.graph import delegations, subtask_depth, uncovered_outputs, unknown_outputs
from skyloom.core.models import ResultModel, SessionModel, TaskModel
from skyloom.core.results import fetch_values
from skyloom.core.settlement import abort_output, ending_actions, settle
from skyloom.core.states import ResultStatus, SessionStatus, TaskStatus, retry_decision
from skyloom.errors import InvalidRequest
from skyloom.options import TaskOptions
from skyloom.runtime.outcome import RemoteError, StagedResult, TaskInput, TaskOutcome

log = logging.getLogger(__name__)

#: Tracebacks are kept on the task item; DynamoDB items are capped at 400 KB.
MAX_TRACEBACK_CHARS = 16_000


# ------------------------------------------------------------------------------------------ claim
def claim(settings: Settings, message: TaskMessage, worker_id: str) -> TaskModel | None:
    """Submitted -> Processing with a lease. None: not claimable (duplicate message, done, cancelled,
    or parked because its session is paused)."""
    session_status = sessions.cached_status(message.session_id)
    if session_status == SessionStatus.PAUSED.value and park(settings, message):
        return None
    if session_status not in (SessionStatus.RUNNING.value, SessionStatus.CLOSED.value, SessionStatus.PAUSED.value):
        cancel_task(message.task_id, None, f"session is {session_status or 'gone'}", by="skyloom")
        return None
    now = clock.now()
    t = TaskModel(message.task_id)
    try:
        t.update(
            actions=[
                TaskModel.status.set(TaskStatus.PROCESSING.value),
                TaskModel.attempt.add(1),
                TaskModel.lease_owner.set(worker_id),
                TaskModel.lease_expires.set(now + settings.lease_seconds),
                TaskModel.due_shard.set(clock.due_shard(message.task_id, settings.due_shards)),
                TaskModel.due_at.set(now + settings.lease_seconds),
                TaskModel.started_at.set(now),
                TaskModel.updated_at.set(now),
            ],
            condition=TaskModel.status == TaskStatus.SUBMITTED.value,
        )
    except UpdateError as exc:
        if condition_failed(exc):
            return None
        raise
    return t


def park(settings: Settings, message: TaskMessage) -> bool:
    """Put a queued task of a paused session back to Pending (nothing remaining), atomically with a
    check that the session is still paused. Resume (or the sweeper, via the timer) re-queues it."""
    now = clock.now()

    def check_paused(tx: TransactWrite) -> None:
        paused = SessionModel.status == SessionStatus.PAUSED.value
        tx.condition_check(SessionModel, message.session_id, condition=paused)

    def to_pending(tx: TransactWrite) -> None:
        tx.update(
            TaskModel(message.task_id),
            actions=[
                TaskModel.status.set(TaskStatus.PENDING.value),
                TaskModel.updated_at.set(now),
                TaskModel.due_shard.set(clock.due_shard(message.task_id, settings.due_shards)),
                TaskModel.due_at.set(now + settings.redispatch_after_seconds),
            ],
            condition=(TaskModel.status == TaskStatus.SUBMITTED.value) & TaskModel.remaining.does_not_exist(),
        )

    try:
        transact([check_paused, to_pending])
    except TransactWriteError as exc:
        if failed_indexes(exc):
            return False
        raise
    return True


def _held_by(task: TaskModel, worker_id: str) -> Condition:
    held: Condition = (
        (TaskModel.status == TaskStatus.PROCESSING.value)
        & (TaskModel.lease_owner == worker_id)
        & (TaskModel.attempt == task.attempt)
    )
    return held


def heartbeat(settings: Settings, task: TaskModel, worker_id: str) -> bool:
    """Extend the lease. False means it was lost: another worker may be running the task now."""
    now = clock.now()
    try:
        TaskModel(task.task_id).update(
            actions=[
                TaskModel.lease_expires.set(now + settings.lease_seconds),
                TaskModel.due_at.set(now + settings.lease_seconds),
            ],
            condition=_held_by(task, worker_id),
        )
    except UpdateError as exc:
        if condition_failed(exc):
            return False
        raise
    return True


def load_inputs(settings: Settings, task: TaskModel) -> TaskInput:
    deps = list(task.data_dependencies or [])
    wanted = deps + ([task.payload_result] if task.payload_result else [])
    values = fetch_values(settings, wanted)
    payload = task.payload if task.payload is not None else values.get(task.payload_result or "", b"")
    return TaskInput(
        task_id=task.task_id,
        session_id=task.session_id,
        handler=task.handler,
        payload=payload,
        dependencies={d: values[d] for d in deps},
        expected_outputs=list(task.expected_outputs or []),
        options=dict(task.options or {}),
        attempt=int(task.attempt or 1),
    )


# ---------------------------------------------------------------------------------------- success
class _Violation(Exception):
    """The attempt broke the output contract; it is recorded as a failed attempt."""


def _check_contract(task: TaskModel, outcome: TaskOutcome) -> dict[str, str]:
    expected = list(task.expected_outputs or [])
    try:
        moved = delegations(expected, {st.task_id: st.expected_outputs for st in outcome.staged_tasks})
    except InvalidRequest as exc:
        raise _Violation(exc.message) from None
    unknown = unknown_outputs(expected, outcome.outputs)
    missing, doubled = uncovered_outputs(expected, outcome.outputs, moved)
    problems = []
    if unknown:
        problems.append(f"sent results it is not expected to produce: {', '.join(unknown)}")
    if missing:
        problems.append(f"neither produced nor delegated expected output(s): {', '.join(missing)}")
    if doubled:
        problems.append(f"both produced and delegated: {', '.join(doubled)}")
    if problems:
        raise _Violation(f"task {task.task_id} " + "; ".join(problems))
    return moved


def _store_values(settings: Settings, session_id: str, values: dict[str, bytes], token: str) -> dict[str, str]:
    """Upload the values too large to sit inline; returns their S3 keys by result id."""
    keys = {
        rid: blobs.result_key(session_id, rid, token)
        for rid, data in values.items()
        if len(data) > settings.inline_max_bytes
    }
    blobs.put_many(settings, {keys[rid]: values[rid] for rid in keys})
    return keys


def _staged_items(
    settings: Settings, parent: TaskModel, outcome: TaskOutcome, moved: dict[str, str], token: str
) -> tuple[list[ResultModel], list[TaskModel]]:
    now = clock.now()
    producer = {out: st.task_id for st in outcome.staged_tasks for out in st.expected_outputs}
    data = {r.result_id: r.data for r in outcome.staged_results if r.data is not None}
    big_payloads = {
        f"{st.task_id}-payload": st.payload
        for st in outcome.staged_tasks
        if len(st.payload) > settings.inline_max_bytes
    }
    keys = _store_values(settings, parent.session_id, {**data, **big_payloads}, token)

    results: list[ResultModel] = []
    extra = [StagedResult(rid, name="payload", data=big_payloads[rid]) for rid in big_payloads]
    for sr in [*outcome.staged_results, *extra]:
        r = ResultModel(
            result_id=sr.result_id,
            session_id=parent.session_id,
            owner=parent.owner,
            status=ResultStatus.CREATED.value,
            owner_task_id=producer.get(sr.result_id),
            name=sr.name,
            created_at=now,
            updated_at=now,
            parent_task_id=parent.task_id,
        )
        if sr.data is not None:
            r.status = ResultStatus.COMPLETED.value
            r.size = len(sr.data)
            r.completed_at = now
            if sr.result_id in keys:
                r.s3_key = keys[sr.result_id]
            else:
                r.inline = sr.data
        results.append(r)

    known_done = set(parent.data_dependencies or [])
    known_done |= {r.result_id for r in results if r.status == ResultStatus.COMPLETED.value}
    base = TaskOptions(**(parent.options or {}))
    allowed = _session_partitions(settings, parent) if outcome.staged_tasks else set()
    try:
        depth = subtask_depth(parent.depth, parent.task_id) if outcome.staged_tasks else 0
    except InvalidRequest as exc:
        raise _Violation(exc.message) from None
    tasks: list[TaskModel] = []
    for st in outcome.staged_tasks:
        try:
            opts = TaskOptions(**st.options).merged_over(base) if st.options else base
        except InvalidRequest as exc:  # options out of their limits: the attempt broke the contract
            raise _Violation(f"subtask {st.task_id}: {exc.message}") from None
        partition = opts.partition or parent.partition
        if partition not in allowed:
            raise _Violation(
                f"subtask {st.task_id} names partition {partition!r}, which is not one of the session's "
                f"partitions ({', '.join(sorted(allowed))})"
            )
        # A subtask is submitted on behalf of the session owner: the same partition rules as a client
        # submission apply, or a permitted task could launder code into a fleet that refuses it.
        partition_spec = settings.partition(partition)
        if partition_spec is not None:
            if not access.identity_allowed(partition_spec, parent.owner):
                raise _Violation(f"subtask {st.task_id}: identity {parent.owner} may not use partition {partition!r}")
            refusal = access.handler_refusal(partition_spec, st.handler)
            if refusal is not None:
                raise _Violation(f"subtask {st.task_id}: {refusal}")
        payload_result = f"{st.task_id}-payload" if f"{st.task_id}-payload" in big_payloads else None
        deps = [*st.data_dependencies, *([payload_result] if payload_result else [])]
        remaining = {d for d in deps if d not in known_done}
        tasks.append(
            TaskModel(
                task_id=st.task_id,
                session_id=parent.session_id,
                owner=parent.owner,
                status=TaskStatus.CREATING.value,
                handler=st.handler,
                label=st.label,
                payload=None if payload_result else st.payload,
                payload_result=payload_result,
                payload_size=len(st.payload),
                data_dependencies=list(st.data_dependencies),
                remaining=remaining or None,
                expected_outputs=list(st.expected_outputs),
                options=opts.compact(),
                partition=partition,
                priority=opts.priority or 0,
                parent_task_id=parent.task_id,
                parent_attempt=parent.attempt,
                depth=depth,
                created_at=now,
                updated_at=now,
            )
        )
    _check_references(parent, results, tasks, moved)
    return results, tasks


def _session_partitions(settings: Settings, parent: TaskModel) -> set[str]:
    try:
        session = SessionModel.get(parent.session_id, consistent_read=True)
    except SessionModel.DoesNotExist:
        return set()
    return set(session.partitions or [settings.default_partition])


def _check_references(
    parent: TaskModel, results: Sequence[ResultModel], tasks: Sequence[TaskModel], moved: dict[str, str]
) -> None:
    """Every id a staged subtask names must exist in the session, or the subtask would wait forever."""
    local = {r.result_id for r in results} | set(parent.data_dependencies or []) | set(parent.expected_outputs or [])
    outside = {d for t in tasks for d in (*t.data_dependencies, *t.expected_outputs) if d not in local}
    if outside:
        found = {r.result_id: r for r in ResultModel.batch_get(list(outside), consistent_read=True)}
        bad = [d for d in outside if d not in found or found[d].session_id != parent.session_id]
        if bad:
            raise _Violation(f"subtasks refer to unknown result id(s): {', '.join(sorted(bad)[:10])}")
    for t in tasks:
        for out in t.expected_outputs:
            if out in outside or (out in set(parent.expected_outputs or []) and moved.get(out) != t.task_id):
                raise _Violation(f"subtask {t.task_id} cannot produce {out}: it is not a new result of this task")


def _write_staged(results: Sequence[ResultModel], tasks: Sequence[TaskModel]) -> None:
    def put(item: ResultModel | TaskModel) -> Op:
        key = ResultModel.result_id if isinstance(item, ResultModel) else TaskModel.task_id

        def op(tx: TransactWrite) -> None:
            tx.save(item, condition=key.does_not_exist())

        return op

    def already(i: int) -> bool:  # staged ids are fresh uuids: a clash is a bug, never a replay
        return False

    transact_idempotent([put(r) for r in results] + [put(t) for t in tasks], already)


def _attempt_record(task: TaskModel, worker_id: str, outcome: str, error: RemoteError | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "number": int(task.attempt or 0),
        "worker": worker_id,
        "started_at": task.started_at,
        "ended_at": clock.now(),
        "outcome": outcome,
    }
    if error is not None:
        rec.update(
            error_type=error.type, message=error.message[:4000], traceback=error.traceback[-MAX_TRACEBACK_CHARS:]
        )
    return rec


def complete(
    settings: Settings, task: TaskModel, worker_id: str, outcome: TaskOutcome, metrics: dict[str, float]
) -> bool:
    """Record a successful attempt. False if the lease was lost (another worker owns the task).

    Order: upload large values -> write staged children (not live) -> one commit transaction ->
    make children live. A crash before the commit leaves only unreachable staged items; after it,
    the sweeper sees ``finalize_pending`` and activates the children.
    """
    if outcome.error is not None:
        return fail(settings, task, worker_id, outcome.error) != "lost"
    token = f"a{task.attempt}-{clock.new_id()[:12]}"
    started = time.monotonic()
    try:
        moved = _check_contract(task, outcome)
        staged_results, staged_tasks = _staged_items(settings, task, outcome, moved, token)
    except _Violation as exc:
        err = RemoteError(type="OutputContractViolation", message=str(exc), traceback="", retryable=False)
        return fail(settings, task, worker_id, err) != "lost"
    keys = _store_values(settings, task.session_id, outcome.outputs, token)
    _write_staged(staged_results, staged_tasks)
    metrics = {**metrics, "upload": round(time.monotonic() - started, 6)}

    now = clock.now()
    actions: list[Any] = [
        TaskModel.status.set(TaskStatus.COMPLETED.value),
        TaskModel.ended_at.set(now),
        TaskModel.updated_at.set(now),
        TaskModel.metrics.set(metrics),
        TaskModel.attempts.set([*(task.attempts or []), _attempt_record(task, worker_id, "completed")]),
        TaskModel.lease_owner.remove(),
        TaskModel.lease_expires.remove(),
    ]
    if staged_tasks:
        actions += [
            TaskModel.finalize_pending.set(now),
            TaskModel.due_at.set(now + settings.finalize_after_seconds),
        ]
    else:
        actions += [TaskModel.due_shard.remove(), TaskModel.due_at.remove()]

    def commit_task(tx: TransactWrite) -> None:
        tx.update(TaskModel(task.task_id), actions=actions, condition=_held_by(task, worker_id))

    ops: list[Op] = [commit_task]
    for rid, data in outcome.outputs.items():
        ops.append(_complete_output(rid, task.task_id, data, keys.get(rid), now))
    for rid, sub in moved.items():
        ops.append(_delegate_output(rid, task.task_id, sub))
    try:
        transact(ops)
    except TransactWriteError as exc:
        refused = failed_indexes(exc)
        if refused:
            log.warning("commit of task %s refused (items %s): lease lost or outputs changed", task.task_id, refused)
            return False
        raise
    if staged_tasks:
        finalize(settings, task, staged_tasks)
    return True


def _complete_output(rid: str, task_id: str, data: bytes, key: str | None, now: float) -> Op:
    actions: list[Any] = [
        ResultModel.status.set(ResultStatus.COMPLETED.value),
        ResultModel.size.set(len(data)),
        ResultModel.completed_at.set(now),
        ResultModel.updated_at.set(now),
        ResultModel.s3_key.set(key) if key else ResultModel.inline.set(data),
    ]

    def op(tx: TransactWrite) -> None:
        tx.update(
            ResultModel(rid),
            actions=actions,
            condition=(ResultModel.status == ResultStatus.CREATED.value) & (ResultModel.owner_task_id == task_id),
        )

    return op


def _delegate_output(rid: str, task_id: str, subtask_id: str) -> Op:
    def op(tx: TransactWrite) -> None:
        tx.update(
            ResultModel(rid),
            actions=[ResultModel.owner_task_id.set(subtask_id), ResultModel.updated_at.set(clock.now())],
            condition=(ResultModel.status == ResultStatus.CREATED.value) & (ResultModel.owner_task_id == task_id),
        )

    return op


def finalize(settings: Settings, parent: TaskModel, children: Sequence[TaskModel]) -> None:
    """Make the committed attempt's children live, then clear the parent's pending flag.

    Idempotent: activation skips children already live, and clearing is conditional.
    """
    queued = readiness.activate(settings, children)
    readiness.enqueue_tasks(settings, queued)
    try:
        TaskModel(parent.task_id).update(
            actions=[TaskModel.finalize_pending.remove(), TaskModel.due_shard.remove(), TaskModel.due_at.remove()],
            condition=(TaskModel.status == TaskStatus.COMPLETED.value) & TaskModel.finalize_pending.exists(),
        )
    except UpdateError as exc:
        if not condition_failed(exc):
            raise


def staged_children(parent: TaskModel) -> list[TaskModel]:
    """The children staged by the parent's winning attempt (the sweeper's way to find them)."""
    return [
        t
        for t in TaskModel.by_parent.query(parent.task_id)
        if t.parent_attempt == parent.attempt
    ]


# ---------------------------------------------------------------------------------------- failure
def root_error(task: TaskModel, status: str, error: RemoteError) -> dict[str, Any]:
    """What dependents and the client are told about a final failure (a protocol.ResultError)."""
    return {
        "task_id": task.task_id,
        "handler": task.handler,
        "status": status,
        "attempts": int(task.attempt or 0),
        "type": error.type,
        "message": error.message[:4000],
        "traceback": error.traceback[-MAX_TRACEBACK_CHARS:],
    }


def _record_failure(
    settings: Settings, task: TaskModel, error: RemoteError, *, timed_out: bool, worker: str, held: Condition
) -> str:
    attempts = [*(task.attempts or []), _attempt_record(task, worker, "timeout" if timed_out else "error", error)]
    max_retries = int((task.options or {}).get("max_retries", settings.default_max_retries))
    now = clock.now()
    if error.retryable and retry_decision(int(task.attempt or 0), max_retries):
        delay = retry_delay(settings, int(task.attempt or 1))
        requeue = [
            TaskModel.attempts.set(attempts),
            TaskModel.lease_owner.remove(),
            TaskModel.lease_expires.remove(),
            *readiness.queued_actions(settings, task.task_id, now, delay=delay),
        ]
        if not update_if(TaskModel(task.task_id), requeue, held):  # type: ignore[arg-type]
            return "lost"
        readiness.enqueue_tasks(settings, [task], delay_seconds=delay)
        return TaskStatus.SUBMITTED.value

    status = TaskStatus.TIMEOUT if timed_out else TaskStatus.ERROR
    err = root_error(task, status.value, error)
    ended = settle(
        task.task_id,
        actions=ending_actions(status, err, now, attempts=attempts),
        condition=held,
        outputs={rid: abort_output(rid, task.task_id, err) for rid in task.expected_outputs or []},
    )
    return status.value if ended else "lost"


def retry_delay(settings: Settings, attempt: int) -> int:
    """Exponential backoff before retry ``attempt + 1``, in whole seconds (SQS DelaySeconds, <= 900)."""
    return int(min(900.0, settings.retry_backoff_seconds * 2 ** max(0, attempt - 1)))


def fail(settings: Settings, task: TaskModel, worker_id: str, error: RemoteError, *, timed_out: bool = False) -> str:
    """Record a failed attempt: re-queue it if retries remain, else end it and abort its outputs.

    Returns the new status, or "lost" if the lease was no longer ours.
    """
    return _record_failure(settings, task, error, timed_out=timed_out, worker=worker_id,
                           held=_held_by(task, worker_id))


def expire_lease(settings: Settings, task: TaskModel) -> str:
    """The sweeper's verdict on a lease that ran out: the worker is presumed dead; a failed attempt."""
    now = clock.now()
    held = (
        (TaskModel.status == TaskStatus.PROCESSING.value)
        & (TaskModel.attempt == task.attempt)
        & (TaskModel.lease_expires < now)
    )
    error = RemoteError(
        type="WorkerLost",
        message=f"worker {task.lease_owner} stopped heartbeating on attempt {task.attempt} (lease expired)",
        traceback="",
    )
    return _record_failure(settings, task, error, timed_out=False, worker=str(task.lease_owner), held=held)


def release(settings: Settings, task: TaskModel, worker_id: str) -> bool:
    """Give a claimed task back without counting the attempt (a draining worker)."""
    now = clock.now()
    try:
        TaskModel(task.task_id).update(
            actions=[
                TaskModel.attempt.add(-1),
                TaskModel.lease_owner.remove(),
                TaskModel.lease_expires.remove(),
                *readiness.queued_actions(settings, task.task_id, now),  # type: ignore[list-item]
            ],
            condition=_held_by(task, worker_id),
        )
    except UpdateError as exc:
        if condition_failed(exc):
            return False
        raise
    return True


def fail_undeliverable(settings: Settings, task_id: str, reason: str) -> bool:
    """End a queued task whose message could not be processed (it reached the dead-letter queue).

    Only a task still Submitted is touched: one that is Processing has a worker (or the lease
    sweeper) taking care of it, and one already final was a stale duplicate. Ends it in Error with
    ``reason`` and aborts its outputs, exactly as a final failed attempt would, so dependents are
    cancelled and the client learns why. True if this call ended the task (idempotent under replay).
    """
    try:
        t = TaskModel.get(task_id, consistent_read=True)
    except TaskModel.DoesNotExist:
        return False
    if t.status != TaskStatus.SUBMITTED.value:
        return False
    err = root_error(t, TaskStatus.ERROR.value, RemoteError(type="UndeliverableMessage", message=reason, traceback=""))
    # Still queued, and queued by the same attempt: a claim in between means it was deliverable.
    queued: Condition = (TaskModel.status == TaskStatus.SUBMITTED.value) & (TaskModel.attempt == t.attempt)
    return settle(
        task_id,
        actions=ending_actions(TaskStatus.ERROR, err, clock.now()),
        condition=queued,
        outputs={rid: abort_output(rid, task_id, err) for rid in t.expected_outputs or []},
    )

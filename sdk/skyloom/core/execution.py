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
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from skyloom.core import access, blobs, clock, measurements, readiness, sessions, tasklogs
from skyloom.core.cancellation import cancel_task
from skyloom.core.config import Settings
from skyloom.core.ddb import (
    TRANSACTION_MAX_ITEMS,
    Op,
    condition_failed,
    failed_indexes,
    transact,
    transact_idempotent,
    update_if,
)
from skyloom.core.dispatching import TaskMessage
from skyloom.core.graph import (
    check_dependency_kinds,
    delegations,
    settled_inputs,
    subtask_depth,
    uncovered_outputs,
    unknown_outputs,
)
from skyloom.core.machine import Machine
from skyloom.core.models import ResultModel, SessionModel, TaskModel
from skyloom.core.results import abort_errors, fetch_values
from skyloom.core.settlement import abort_output, ending_actions, settle
from skyloom.core.states import AttemptFate, ResultStatus, SessionStatus, TaskStatus, retry_decision
from skyloom.errors import InvalidRequest
from skyloom.options import TaskOptions
from skyloom.runtime.outcome import RemoteError, StagedResult, TaskInput, TaskLog, TaskOutcome

log = logging.getLogger(__name__)

#: Tracebacks are kept on the task item; DynamoDB items are capped at 400 KB.
MAX_TRACEBACK_CHARS = 16_000


# ------------------------------------------------------------------------------------------ claim
#: A retry's message may come back up to this early (SQS delays are whole seconds, clocks differ).
NOT_BEFORE_SLACK_SECONDS = 0.25


def read_tasks(task_ids: Sequence[str]) -> dict[str, TaskModel]:
    """The items of a batch of received messages' tasks: one BatchGetItem per 100 (consistent)."""
    return {t.task_id: t for t in TaskModel.batch_get(list(dict.fromkeys(task_ids)), consistent_read=True)}


def take(settings: Settings, message: TaskMessage, task: TaskModel | None) -> TaskModel | None:
    """Whether a received message's task is to run now, judged from its item as read: no write.

    A short task runs on its message's receipt: the SQS visibility timeout is its lease, and its
    commit, conditioned on the task being still Submitted at the attempt read here, is the one
    write it must make (a duplicate delivery may run it twice; the first commit wins and its
    outputs are written once). A task that runs long enough to heartbeat is claimed then
    (:func:`heartbeat`), so that the sweeper and cancellations see it Processing. None: nothing
    to run (a duplicate, finished, cancelled, not due yet, or parked because its session is paused).
    """
    if task is None or not _session_allows(settings, message):
        return None
    if task.status != TaskStatus.SUBMITTED.value:
        return None
    if task.not_before is not None and task.not_before > clock.now() + NOT_BEFORE_SLACK_SECONDS:
        return None  # a duplicate of a retry's delayed message, which comes when the backoff is over
    task.started_at = clock.now()
    return task


def _session_allows(settings: Settings, message: TaskMessage) -> bool:
    """False if the task's session says not to run it: parked when paused, cancelled when ended."""
    session_status = sessions.cached_status(message.session_id)
    if session_status == SessionStatus.PAUSED.value and park(settings, message):
        return False
    if session_status not in (SessionStatus.RUNNING.value, SessionStatus.CLOSED.value, SessionStatus.PAUSED.value):
        cancel_task(message.task_id, None, f"session is {session_status or 'gone'}", by="skyloom")
        return False
    return True


def _due(now: float) -> Condition:
    due: Condition = TaskModel.not_before.does_not_exist() | (TaskModel.not_before <= now + NOT_BEFORE_SLACK_SECONDS)
    return due


def _claim_actions(settings: Settings, task_id: str, worker_id: str, now: float) -> list[Any]:
    return [
        TaskModel.status.set(TaskStatus.PROCESSING.value),
        TaskModel.lease_owner.set(worker_id),
        TaskModel.lease_expires.set(now + settings.lease_seconds),
        TaskModel.due_shard.set(clock.due_shard(task_id, settings.due_shards)),
        TaskModel.due_at.set(now + settings.lease_seconds),
        TaskModel.updated_at.set(now),
    ]


def claim(settings: Settings, message: TaskMessage, worker_id: str) -> TaskModel | None:
    """Submitted -> Processing with a lease, reading the task in the same write. None: not
    claimable (duplicate message, done, cancelled, not due, or parked because its session is paused)."""
    if not _session_allows(settings, message):
        return None
    now = clock.now()
    t = TaskModel(message.task_id)
    try:
        t.update(
            actions=[*_claim_actions(settings, message.task_id, worker_id, now), TaskModel.attempt.add(1),
                     TaskModel.started_at.set(now)],
            condition=(TaskModel.status == TaskStatus.SUBMITTED.value) & _due(now),
        )
    except UpdateError as exc:
        if condition_failed(exc):
            return None
        raise
    return t


def claimed(task: TaskModel) -> bool:
    """Whether the attempt holds a lease (Processing), or runs on its message's receipt (Submitted)."""
    return task.status != TaskStatus.SUBMITTED.value


def _claim_taken(settings: Settings, task: TaskModel, worker_id: str) -> bool:
    """Claim, in place, a task taken by :func:`take` that runs longer than a heartbeat: Submitted at
    the attempt read -> Processing at the next attempt. False: another attempt or a cancellation
    came first (the running copy is then to be stopped).

    A refusal is checked once against the item: when AWS applied the claim but its answer was lost,
    botocore's retry of the same write is refused by its own first success, and the task is ours.
    """
    now = clock.now()
    number = int(task.attempt or 0) + 1
    try:
        task.update(
            actions=[*_claim_actions(settings, task.task_id, worker_id, now), TaskModel.attempt.set(number),
                     TaskModel.started_at.set(task.started_at or now)],
            condition=_held_by(task, worker_id) & _due(now),
        )
    except UpdateError as exc:
        if not condition_failed(exc):
            raise
        try:
            stored = TaskModel.get(task.task_id, consistent_read=True)
        except TaskModel.DoesNotExist:
            return False
        if not (stored.status == TaskStatus.PROCESSING.value and stored.lease_owner == worker_id
                and stored.attempt == number):
            return False
        task.refresh(consistent_read=True)
    return True


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
    """The attempt is still ours: its lease, or for a task run on its receipt, still Submitted at
    the attempt it was read at (no other attempt was written, it was not cancelled)."""
    if not claimed(task):
        taken: Condition = (TaskModel.status == TaskStatus.SUBMITTED.value) & (TaskModel.attempt == task.attempt)
        return taken
    held: Condition = (
        (TaskModel.status == TaskStatus.PROCESSING.value)
        & (TaskModel.lease_owner == worker_id)
        & (TaskModel.attempt == task.attempt)
    )
    return held


def heartbeat(settings: Settings, task: TaskModel, worker_id: str) -> bool:
    """Extend the lease (claiming, in place, a task that ran on its receipt so far). False means it
    was lost: another worker may be running the task now, or it was cancelled."""
    if not claimed(task):
        return _claim_taken(settings, task, worker_id)
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
    # Lazy inputs are fetched by the task on demand; optional ones that aborted have no value.
    lazy, aborted = set(task.lazy_deps or ()), set(task.aborted_inputs or ())
    if lazy or aborted:
        deps = [d for d in deps if d not in lazy and d not in aborted]
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
        attempt=int(task.attempt or 0) + (0 if claimed(task) else 1),
        metrics=_asked_metrics(task),
        lazy=sorted(lazy),
        aborted=abort_errors(sorted(aborted)),
    )


def _asked_metrics(task: TaskModel) -> dict[tuple[str, str], float]:
    """The last values of the measurements the task asked for (``options.metrics``): one
    BatchGetItem with the inputs, so that ``skyloom.metrics.latest`` makes no call of its own."""
    pairs = [(str(k), str(n)) for k, n in (task.options or {}).get("metrics") or ()]
    if not pairs:
        return {}
    return {pair: v.value for pair, v in measurements.latest(task.owner, pairs).items()}


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
            has_dependents=False,
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

    # The parent ran: its inputs are completed, but for the optional ones that were aborted.
    parent_aborted = set(parent.aborted_inputs or [])
    known_done = set(parent.data_dependencies or []) - parent_aborted
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
        try:
            check_dependency_kinds(st.data_dependencies, st.optional_dependencies, st.lazy_dependencies,
                                   f"subtask {st.task_id}")
        except InvalidRequest as exc:
            raise _Violation(exc.message) from None
        statuses = {d: ResultStatus.COMPLETED.value for d in known_done}
        statuses.update(dict.fromkeys(parent_aborted, ResultStatus.ABORTED.value))
        remaining, aborted = settled_inputs(deps, statuses, st.optional_dependencies)
        lost = sorted(remaining & parent_aborted)
        if lost:
            raise _Violation(f"subtask {st.task_id} depends on result {lost[0]}, which was aborted; "
                             "make it an optional dependency (skyloom.optional) to run without it")
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
                optional_deps=set(st.optional_dependencies) or None,
                lazy_deps=set(st.lazy_dependencies) or None,
                aborted_inputs=aborted or None,
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
    readiness.flag_dependents(results, tasks)
    readiness.note_releases(tasks, inherited={rid: (parent.releases or {}).get(rid, ()) for rid in moved})
    return results, tasks


def _session_partitions(settings: Settings, parent: TaskModel) -> set[str]:
    partitions = sessions.cached_partitions(parent.session_id)
    if partitions is None:
        return set()
    return set(partitions or [settings.default_partition])


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


#: Bytes of staged values and payloads that may ride in the commit transaction itself.
STAGED_IN_COMMIT_BYTES = 1024 * 1024


def _staged_bytes(results: Sequence[ResultModel], tasks: Sequence[TaskModel]) -> int:
    return sum(len(r.inline or b"") for r in results) + sum(len(t.payload or b"") for t in tasks)


def _staged_in_commit(settings: Settings, results: Sequence[ResultModel], tasks: Sequence[TaskModel],
                      commit_items: int) -> list[Op] | None:
    """The puts that write the staged items with the commit, live (Pending, or Submitted when they
    wait on nothing), when they fit in its transaction; None when they must be written before it.

    A subtask written with the commit exists only if the attempt committed, as a staged one is
    unreachable until then: so it needs no Creating state and no activation write afterwards (one
    write per subtask less; a tree's nodes commit twice as fast). What stays for after the commit
    is what cannot be in it: edges, the re-check of dependencies, the messages.
    """
    if not tasks or commit_items + len(results) + len(tasks) > TRANSACTION_MAX_ITEMS:
        return None
    if _staged_bytes(results, tasks) > STAGED_IN_COMMIT_BYTES:
        return None
    now = clock.now()
    for t in tasks:
        if t.remaining:
            t.status = TaskStatus.PENDING.value
        else:
            readiness.queue_on_write(settings, t, now)
    items: list[ResultModel | TaskModel] = [*results, *tasks]
    return [_put_new(item) for item in items]


def _put_new(item: ResultModel | TaskModel) -> Op:
    """The transaction item that writes ``item``, which must not exist yet (staged ids are fresh)."""
    key = ResultModel.result_id if isinstance(item, ResultModel) else TaskModel.task_id

    def op(tx: TransactWrite) -> None:
        tx.save(item, condition=key.does_not_exist())

    return op


def _write_staged(results: Sequence[ResultModel], tasks: Sequence[TaskModel]) -> None:
    """Write the items an attempt staged, before its commit (they are unreachable until it).

    Idempotent, so that a commit retried after AWS failed it is no different from the first try: an
    item that exists already is this attempt's own earlier write when it names the same staging
    parent (and, for a task, attempt); staged ids are fresh uuids, so anything else is a real clash.
    """
    items: list[ResultModel | TaskModel] = [*results, *tasks]

    def already(i: int) -> bool:
        item = items[i]
        try:
            if isinstance(item, TaskModel):
                task = TaskModel.get(item.task_id, consistent_read=True)
                return bool(task.parent_task_id == item.parent_task_id and task.parent_attempt == item.parent_attempt)
            result = ResultModel.get(item.result_id, consistent_read=True)
            return bool(result.parent_task_id == item.parent_task_id)
        except (TaskModel.DoesNotExist, ResultModel.DoesNotExist):
            return False

    transact_idempotent([_put_new(item) for item in items], already)


def _attempt_record(task: TaskModel, worker_id: str, outcome: str, error: RemoteError | None = None,
                    log: dict[str, Any] | None = None, machine: Machine | None = None) -> dict[str, Any]:
    """One ended attempt, as the task item keeps it; ``log``: its log's fields (``tasklogs``);
    ``machine``: where it ran (the writing worker's; the sweeper, which writes a lost worker's
    record, does not know it)."""
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
    rec.update(log or {})
    if machine is not None:
        rec["machine"] = machine.model_dump()
    return rec


@dataclass
class Commit:
    """One finished attempt, to be committed alone or with others (:func:`complete_many`)."""

    task: TaskModel
    worker_id: str
    outcome: TaskOutcome
    metrics: dict[str, float]
    #: What the attempt printed, stored with its attempt record.
    log: TaskLog | None = None


@dataclass
class _Prepared:
    """A commit ready to join a transaction: its items, and what to do once it is written."""

    task: TaskModel
    ops: list[Op]
    staged_results: list[ResultModel]
    staged_tasks: list[TaskModel]
    #: Bytes it puts in the transaction (inline values): DynamoDB takes at most 4 MB per call.
    size: int
    #: The outputs the commit completes (the ones it delegates are the subtasks' to complete).
    completed: tuple[str, ...] = ()
    #: The staged subtasks are written by the commit itself, already Pending or Submitted.
    staged_live: bool = False


#: A grouped commit stays under DynamoDB's 4 MB per TransactWriteItems, with room for the rest.
GROUP_MAX_BYTES = 3 * 1024 * 1024


def complete(
    settings: Settings, task: TaskModel, worker_id: str, outcome: TaskOutcome, metrics: dict[str, float],
    log: TaskLog | None = None,
) -> bool:
    """Record a successful attempt (and what it printed). False if the lease was lost (another
    worker owns the task)."""
    return complete_many(settings, [Commit(task, worker_id, outcome, metrics, log)])[0]


def complete_many(settings: Settings, commits: Sequence[Commit]) -> list[bool]:
    """Record successful attempts, in as few transactions as DynamoDB's limits allow; for each,
    False if it was no longer ours (lease lost, cancelled, another attempt committed first).

    Per attempt: upload large values -> write staged children (not live) -> commit items -> make
    children live. The commit items of several attempts share one TransactWriteItems: an agent's
    finished short tasks cost one write call together instead of one each. A transaction refused by
    some items' conditions is written again without the attempts those items belong to (the
    cancellation reasons say which). A crash before the commit leaves only unreachable staged
    items; after it, the sweeper sees ``finalize_pending`` and activates the children.
    """
    # A taken task's attempt number is advanced in memory for its commit: put it back if this call
    # fails, so that a retry (the agent outlasts AWS's failures) builds the same commit again.
    read_attempts = [c.task.attempt for c in commits]
    try:
        return _complete_many(settings, commits)
    except BaseException:
        for c, attempt in zip(commits, read_attempts, strict=True):
            c.task.attempt = attempt
        raise


def _complete_many(settings: Settings, commits: Sequence[Commit]) -> list[bool]:
    results: list[bool] = [False] * len(commits)
    prepared: dict[int, _Prepared] = {}
    seen: set[str] = set()
    for i, c in enumerate(commits):
        if c.task.task_id in seen:
            continue  # the same task twice in one group (a duplicate delivery): one transaction
            # cannot write an item twice, and only one of them could commit anyway
        seen.add(c.task.task_id)
        ready = _prepare_commit(settings, c)
        if isinstance(ready, bool):
            results[i] = ready
        else:
            prepared[i] = ready
    pending = list(prepared)
    while pending:
        group: list[int] = []
        items = size = 0
        for i in pending:
            p = prepared[i]
            if group and (items + len(p.ops) > TRANSACTION_MAX_ITEMS or size + p.size > GROUP_MAX_BYTES):
                break
            group.append(i)
            items += len(p.ops)
            size += p.size
        refused = _commit_group([prepared[i] for i in group])
        for k, i in enumerate(group):
            if k in refused:
                log.warning("commit of task %s refused: lease lost, cancelled or outputs changed",
                            prepared[i].task.task_id)
                continue
            results[i] = True
            p = prepared[i]
            if p.staged_tasks:
                flagged = {r.result_id for r in p.staged_results if r.has_dependents}
                if p.staged_live:
                    finalize_live(settings, p.task, p.staged_tasks, flagged=flagged)
                else:
                    finalize(settings, p.task, p.staged_tasks, flagged=flagged)
        _release_dependents(settings, [prepared[i] for k, i in enumerate(group) if k not in refused])
        pending = pending[len(group):]
    return results


def _release_dependents(settings: Settings, committed: Sequence[_Prepared]) -> None:
    """Release and queue the dependents the committed tasks' items name (a dependency hop with no
    stream poll in between). Best effort: the results stream releases every dependent anyway, so a
    failure here (or a crash before it) only costs that hop its speed."""
    pairs = [pair for p in committed for pair in readiness.released_by(p.task, p.completed)]
    if not pairs:
        return
    try:
        readiness.enqueue_tasks(settings, readiness.release_and_ready(settings, pairs))
    except Exception:  # the stream's resolve is the safety net for exactly this
        log.warning("releasing %d dependents after a commit failed; the results stream will", len(pairs),
                    exc_info=True)


def _commit_group(group: Sequence[_Prepared]) -> set[int]:
    """Write the commit items of ``group`` in one transaction; the positions (in ``group``) of the
    attempts refused by their conditions. The others are written, in a retry if need be."""
    refused: set[int] = set()
    while True:
        live = [k for k in range(len(group)) if k not in refused]
        if not live:
            return refused
        owner = [k for k in live for _ in group[k].ops]
        try:
            transact([op for k in live for op in group[k].ops])
            return refused
        except TransactWriteError as exc:
            failed = {owner[j] for j in failed_indexes(exc) if j < len(owner)}
            if not failed:
                raise
            refused |= failed


def _prepare_commit(settings: Settings, c: Commit) -> _Prepared | bool:
    """Everything of a commit but the transaction; a bool when the attempt ends here instead (a
    failure it reported, or an output contract it broke, recorded as a failed attempt)."""
    task, worker_id, outcome = c.task, c.worker_id, c.outcome
    if outcome.error is not None:
        return fail(settings, task, worker_id, outcome.error, log=c.log) is not AttemptFate.LOST
    held = _held_by(task, worker_id)
    taken = not claimed(task)
    read_attempt = int(task.attempt or 0)
    if taken:  # this commit writes the attempt number (and the status) in one go
        task.attempt = read_attempt + 1
    token = f"a{task.attempt}-{clock.new_id()[:12]}"
    started = time.monotonic()
    try:
        moved = _check_contract(task, outcome)
        staged_results, staged_tasks = _staged_items(settings, task, outcome, moved, token)
    except _Violation as exc:
        task.attempt = read_attempt
        err = RemoteError(type="OutputContractViolation", message=str(exc), traceback="", retryable=False)
        return fail(settings, task, worker_id, err, log=c.log) is not AttemptFate.LOST
    keys = _store_values(settings, task.session_id, outcome.outputs, token)
    staged_ops = _staged_in_commit(settings, staged_results, staged_tasks,
                                   commit_items=1 + len(outcome.outputs) + len(moved))
    if staged_ops is None:
        _write_staged(staged_results, staged_tasks)
    measurements.record(settings, owner=task.owner, session_id=task.session_id, task_id=task.task_id,
                        attempt=int(task.attempt or 0), values=outcome.measurements)
    metrics = {**c.metrics, "upload": round(time.monotonic() - started, 6)}

    now = clock.now()
    actions: list[Any] = [
        TaskModel.status.set(TaskStatus.COMPLETED.value),
        TaskModel.ended_at.set(now),
        TaskModel.updated_at.set(now),
        TaskModel.metrics.set(metrics),
        TaskModel.attempts.set([*(task.attempts or []), _attempt_record(
            task, worker_id, "completed", log=tasklogs.attempt_fields(settings, task, c.log),
            machine=settings.machine)]),
        TaskModel.lease_owner.remove(),
        TaskModel.lease_expires.remove(),
    ]
    if taken:
        actions += [TaskModel.attempt.set(task.attempt), TaskModel.started_at.set(task.started_at or now)]
    if staged_tasks:
        actions += [
            TaskModel.finalize_pending.set(now),
            TaskModel.due_at.set(now + settings.finalize_after_seconds),
        ]
    else:
        actions += [TaskModel.due_shard.remove(), TaskModel.due_at.remove()]

    def commit_task(tx: TransactWrite) -> None:
        tx.update(TaskModel(task.task_id), actions=actions, condition=held)

    ops: list[Op] = [commit_task]
    for rid, data in outcome.outputs.items():
        ops.append(_complete_output(rid, task.task_id, data, keys.get(rid), now))
    for rid, sub in moved.items():
        ops.append(_delegate_output(rid, task.task_id, sub))
    ops += staged_ops or []
    inline = sum(len(data) for rid, data in outcome.outputs.items() if rid not in keys)
    inline += _staged_bytes(staged_results, staged_tasks) if staged_ops else 0
    return _Prepared(task, ops, staged_results, staged_tasks, size=inline + 4096 * len(ops),
                     completed=tuple(outcome.outputs), staged_live=staged_ops is not None)


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


def finalize(
    settings: Settings, parent: TaskModel, children: Sequence[TaskModel], *, flagged: Collection[str] = ()
) -> None:
    """Make the committed attempt's children live, then clear the parent's pending flag.

    ``flagged``: staged results written with ``has_dependents`` (the sweeper, which does not know,
    flags them again: harmless). Idempotent: activation skips children already live, and clearing
    is conditional.
    """
    queued = readiness.activate(settings, children, flagged=flagged)
    readiness.enqueue_tasks(settings, queued)
    _finalized(parent)


def finalize_live(
    settings: Settings, parent: TaskModel, children: Sequence[TaskModel], *, flagged: Collection[str] = ()
) -> None:
    """After a commit that wrote its children live: their edges, the re-check of what they wait on,
    their messages; then clear the parent's pending flag. A crash before the end leaves the flag,
    and the sweeper's :func:`finalize` does the same again (idempotent)."""
    waiting = [t for t in children if t.status == TaskStatus.PENDING.value]
    readiness.register_edges(waiting, flagged=flagged)
    queued = [t for t in children if t.status == TaskStatus.SUBMITTED.value]
    readiness.enqueue_tasks(settings, queued + readiness.recheck(settings, waiting))
    _finalized(parent)


def _finalized(parent: TaskModel) -> None:
    update_if(
        TaskModel(parent.task_id),
        [TaskModel.finalize_pending.remove(), TaskModel.due_shard.remove(), TaskModel.due_at.remove()],
        (TaskModel.status == TaskStatus.COMPLETED.value) & TaskModel.finalize_pending.exists(),
    )


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
        "args": error.args,
    }


def _record_failure(
    settings: Settings, task: TaskModel, error: RemoteError, *, timed_out: bool, worker: str, held: Condition,
    log: dict[str, Any] | None = None,
) -> AttemptFate:
    attempts = [*(task.attempts or []), _attempt_record(task, worker, "timeout" if timed_out else "error", error, log,
                                                        machine=settings.machine)]
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
            return AttemptFate.LOST
        readiness.enqueue_tasks(settings, [task], delay_seconds=delay)
        return AttemptFate.RETRIED

    status = TaskStatus.TIMEOUT if timed_out else TaskStatus.ERROR
    err = root_error(task, status.value, error)
    ended = settle(
        task.task_id,
        actions=ending_actions(status, err, now, attempts=attempts),
        condition=held,
        outputs={rid: abort_output(rid, task.task_id, err) for rid in task.expected_outputs or []},
    )
    if not ended:
        return AttemptFate.LOST
    return AttemptFate.TIMEOUT if timed_out else AttemptFate.ERROR


def retry_delay(settings: Settings, attempt: int) -> int:
    """Exponential backoff before retry ``attempt + 1``, in whole seconds (SQS DelaySeconds, <= 900)."""
    return int(min(900.0, settings.retry_backoff_seconds * 2 ** max(0, attempt - 1)))


def fail(settings: Settings, task: TaskModel, worker_id: str, error: RemoteError, *, timed_out: bool = False,
         log: TaskLog | None = None) -> AttemptFate:
    """Record a failed attempt (and what it printed): re-queue it if retries remain, else end it
    and abort its outputs. LOST if the attempt no longer held the task (nothing written).
    """
    if not claimed(task) and not _claim_taken(settings, task, worker_id):
        return AttemptFate.LOST  # a failure of a task run on its receipt is recorded as any other: claim it first
    return _record_failure(settings, task, error, timed_out=timed_out, worker=worker_id,
                           held=_held_by(task, worker_id), log=tasklogs.attempt_fields(settings, task, log))


def expire_lease(settings: Settings, task: TaskModel) -> AttemptFate:
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
    """Give a claimed task back without counting the attempt (a draining worker). A task run on its
    message's receipt holds nothing to give back but the message."""
    if not claimed(task):
        return True
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

"""What an attempt creates: subtasks and new results ("staged"), checked against the attempt's
output contract and the session's rules, written unreachable before the commit or live within it,
and made live after it (:func:`finalize`, which the sweeper repeats if the worker dies in between).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from pynamodb.transactions import TransactWrite

from skyloom.core import access, blobs, clock, readiness, sessions
from skyloom.core.config import Settings
from skyloom.core.ddb import (
    TRANSACTION_MAX_ITEMS,
    Op,
    put_new,
    transact_idempotent,
    update_if,
)
from skyloom.core.graph import (
    check_dependency_kinds,
    delegations,
    settled_inputs,
    subtask_depth,
    uncovered_outputs,
    unknown_outputs,
)
from skyloom.core.models import EdgeModel, ResultModel, TaskModel
from skyloom.core.states import ResultStatus, TaskStatus
from skyloom.core.transitions import task_in
from skyloom.errors import InvalidRequest
from skyloom.options import TaskOptions
from skyloom.runtime.outcome import StagedResult, TaskOutcome

log = logging.getLogger(__name__)


class ContractViolation(Exception):
    """The attempt broke the output contract; it is recorded as a failed attempt."""


def check_contract(task: TaskModel, outcome: TaskOutcome) -> dict[str, str]:
    expected = list(task.expected_outputs or [])
    try:
        moved = delegations(expected, {st.task_id: st.expected_outputs for st in outcome.staged_tasks})
    except InvalidRequest as exc:
        raise ContractViolation(exc.message) from None
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
        raise ContractViolation(f"task {task.task_id} " + "; ".join(problems))
    return moved


def store_values(settings: Settings, session_id: str, values: dict[str, bytes], token: str) -> dict[str, str]:
    """Upload the values too large to sit inline; returns their S3 keys by result id."""
    keys = {
        rid: blobs.result_key(session_id, rid, token)
        for rid, data in values.items()
        if len(data) > settings.inline_max_bytes
    }
    blobs.put_many(settings, {keys[rid]: values[rid] for rid in keys})
    return keys


def staged_items(
    settings: Settings, parent: TaskModel, outcome: TaskOutcome, moved: dict[str, str], token: str
) -> tuple[list[ResultModel], list[TaskModel]]:
    if not outcome.staged_tasks and not outcome.staged_results:
        return [], []  # most attempts stage nothing: no options to build, nothing to upload
    now = clock.now()
    producer = {out: st.task_id for st in outcome.staged_tasks for out in st.expected_outputs}
    data = {r.result_id: r.data for r in outcome.staged_results if r.data is not None}
    big_payloads = {
        f"{st.task_id}-payload": st.payload
        for st in outcome.staged_tasks
        if len(st.payload) > settings.inline_max_bytes
    }
    keys = store_values(settings, parent.session_id, {**data, **big_payloads}, token)

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
        raise ContractViolation(exc.message) from None
    tasks: list[TaskModel] = []
    for st in outcome.staged_tasks:
        try:
            opts = TaskOptions(**st.options).merged_over(base) if st.options else base
        except InvalidRequest as exc:  # options out of their limits: the attempt broke the contract
            raise ContractViolation(f"subtask {st.task_id}: {exc.message}") from None
        partition = opts.partition or parent.partition
        if partition not in allowed:
            raise ContractViolation(
                f"subtask {st.task_id} names partition {partition!r}, which is not one of the session's "
                f"partitions ({', '.join(sorted(allowed))})"
            )
        # A subtask is submitted on behalf of the session owner: the same partition rules as a client
        # submission apply, or a permitted task could launder code into a fleet that refuses it.
        partition_spec = settings.partition(partition)
        if partition_spec is not None:
            if not access.identity_allowed(partition_spec, parent.owner):
                raise ContractViolation(
                    f"subtask {st.task_id}: identity {parent.owner} may not use partition {partition!r}")
            refusal = access.handler_refusal(partition_spec, st.handler)
            if refusal is not None:
                raise ContractViolation(f"subtask {st.task_id}: {refusal}")
        payload_result = f"{st.task_id}-payload" if f"{st.task_id}-payload" in big_payloads else None
        deps = [*st.data_dependencies, *([payload_result] if payload_result else [])]
        try:
            check_dependency_kinds(st.data_dependencies, st.optional_dependencies, st.lazy_dependencies,
                                   f"subtask {st.task_id}")
        except InvalidRequest as exc:
            raise ContractViolation(exc.message) from None
        statuses = {d: ResultStatus.COMPLETED.value for d in known_done}
        statuses.update(dict.fromkeys(parent_aborted, ResultStatus.ABORTED.value))
        remaining, aborted = settled_inputs(deps, statuses, st.optional_dependencies)
        lost = sorted(remaining & parent_aborted)
        if lost:
            raise ContractViolation(f"subtask {st.task_id} depends on result {lost[0]}, which was aborted; "
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
            raise ContractViolation(f"subtasks refer to unknown result id(s): {', '.join(sorted(bad)[:10])}")
    for t in tasks:
        for out in t.expected_outputs:
            if out in outside or (out in set(parent.expected_outputs or []) and moved.get(out) != t.task_id):
                raise ContractViolation(
                    f"subtask {t.task_id} cannot produce {out}: it is not a new result of this task")


#: Bytes of staged values and payloads that may ride in the commit transaction itself.
STAGED_IN_COMMIT_BYTES = 1024 * 1024


def staged_bytes(results: Sequence[ResultModel], tasks: Sequence[TaskModel]) -> int:
    return sum(len(r.inline or b"") for r in results) + sum(len(t.payload or b"") for t in tasks)


def staged_in_commit(settings: Settings, results: Sequence[ResultModel], tasks: Sequence[TaskModel],
                      commit_items: int) -> list[Op] | None:
    """The puts that write the staged items with the commit, live (Pending, or Submitted when they
    wait on nothing), when they fit in its transaction; None when they must be written before it.

    A subtask written with the commit exists only if the attempt committed, as a staged one is
    unreachable until then: so it needs no Creating state and no activation write afterwards (one
    write per subtask less; a tree's nodes commit twice as fast). The edges to results staged with
    them are written in it too (:func:`local_edges`): such a result cannot complete before its edges
    exist, so it needs no re-check either. What stays for after the commit is the edges to results
    outside the staging, their re-check, and the messages.
    """
    edges = local_edges(results, tasks)
    if not tasks or commit_items + len(results) + len(tasks) + len(edges) > TRANSACTION_MAX_ITEMS:
        return None
    if staged_bytes(results, tasks) > STAGED_IN_COMMIT_BYTES:
        return None
    now = clock.now()
    for t in tasks:
        if t.remaining:
            t.status = TaskStatus.PENDING.value
        else:
            readiness.queue_on_write(settings, t, now)
    items: list[ResultModel | TaskModel] = [*results, *tasks]
    return [put_new(item) for item in items] + [_put_edge(edge) for edge in edges]


def local_edges(results: Sequence[ResultModel], tasks: Sequence[TaskModel]) -> list[EdgeModel]:
    """The edges from results staged together with the tasks that wait on them."""
    local = {r.result_id for r in results}
    return [EdgeModel(result_id=rid, task_id=t.task_id, session_id=t.session_id)
            for t in tasks for rid in sorted(t.remaining or ()) if rid in local]


def _put_edge(edge: EdgeModel) -> Op:
    """An edge is an immutable fact keyed by (result, task): written again, it is the same item."""

    def op(tx: TransactWrite) -> None:
        tx.save(edge)

    return op


def write_staged(results: Sequence[ResultModel], tasks: Sequence[TaskModel]) -> None:
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

    transact_idempotent([put_new(item) for item in items], already)


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
    settings: Settings, parent: TaskModel, children: Sequence[TaskModel], *, flagged: Collection[str] = (),
    committed: Collection[str] = (),
) -> None:
    """After a commit that wrote its children live: the edges to results outside the staging
    (``committed``: results whose edges the commit wrote, see :func:`staged_in_commit`), the
    re-check of those, the messages; then clear the parent's pending flag. A crash before the end
    leaves the flag, and the sweeper's :func:`finalize` does all of it again (idempotent)."""
    waiting = [t for t in children if t.status == TaskStatus.PENDING.value]
    readiness.register_edges(waiting, flagged=flagged, written=committed)
    queued = [t for t in children if t.status == TaskStatus.SUBMITTED.value]
    readiness.enqueue_tasks(settings, queued + readiness.recheck(settings, waiting, written=committed))
    _finalized(parent)


def _finalized(parent: TaskModel) -> None:
    update_if(
        TaskModel(parent.task_id),
        [TaskModel.finalize_pending.remove(), TaskModel.due_shard.remove(), TaskModel.due_at.remove()],
        task_in(TaskStatus.COMPLETED) & TaskModel.finalize_pending.exists(),
    )


def staged_children(parent: TaskModel) -> list[TaskModel]:
    """The children staged by the parent's winning attempt (the sweeper's way to find them)."""
    return [
        t
        for t in TaskModel.by_parent.query(parent.task_id)
        if t.parent_attempt == parent.attempt
    ]

"""Where a task becomes ready.

A live task waits in Pending with a ``remaining`` set of data dependencies not yet completed. Two
actors shrink that set: ``resolve`` (a dependency's completion arrives on the results stream and
the edges table names its dependents) and whoever activates the task (after registering its edges
it re-checks each dependency, invariant 4). Both end in :func:`try_ready`, a conditional
Pending -> Submitted write: exactly one caller wins and enqueues, however they race or replay.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pynamodb.expressions.condition import size

from skyloom.core import clock, dispatching, wire
from skyloom.core.cancellation import cancel_dependent
from skyloom.core.config import Settings
from skyloom.core.ddb import update_if
from skyloom.core.dispatching import TaskMessage
from skyloom.core.graph import stops_cascade
from skyloom.core.models import EdgeModel, ResultModel, TaskModel
from skyloom.core.states import ResultStatus, TaskStatus
from skyloom.core.transitions import task_move

#: Independent per-task writes run concurrently: the latency of each is a network round trip.
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="skyloom-readiness")


#: The largest task item a message carries (its JSON): ten such messages stay well within SQS's
#: 256 KiB for a whole batch, and a larger item is read by the worker anyway.
ITEM_IN_MESSAGE_BYTES = 16 * 1024


def message_for(task: TaskModel, *, whole: bool = False) -> TaskMessage:
    """The task's message; ``whole``: ``task`` is the item exactly as just written, and the message
    carries it (if small) for the worker to take its first delivery without reading it."""
    item = _item_of(task) if whole else None
    return TaskMessage(task.task_id, task.session_id, task.partition, int(task.priority or 0), item)


def _item_of(task: TaskModel) -> dict[str, Any] | None:
    if int(task.payload_size or 0) > ITEM_IN_MESSAGE_BYTES:
        return None
    item = wire.convert_map(task.serialize(null_check=False), _base64)
    if item is None or len(json.dumps(item, separators=(",", ":"))) > ITEM_IN_MESSAGE_BYTES:
        return None
    return item


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def item_task(message: TaskMessage) -> TaskModel | None:
    """The task item its message carries (as its sender wrote it), or None if it carries none or
    one that does not read as the message's task."""
    if message.item is None:
        return None
    try:
        attrs = wire.convert_map(dict(message.item), base64.b64decode)
        task = TaskModel.from_raw_data(attrs) if attrs is not None else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return task if task is not None and task.task_id == message.task_id else None


def queued_actions(settings: Settings, task_id: str, now: float, *, delay: float = 0.0) -> list[object]:
    """The attribute updates that mark a task queued, with its redispatch timer armed (after a
    message ``delay``, if the message is sent delayed, before which it must not start)."""
    return [
        task_move(None, TaskStatus.SUBMITTED).set,
        TaskModel.submitted_at.set(now),
        TaskModel.updated_at.set(now),
        TaskModel.due_shard.set(clock.due_shard(task_id, settings.due_shards)),
        TaskModel.due_at.set(now + delay + settings.redispatch_after_seconds),
        TaskModel.not_before.set(now + delay) if delay > 0 else TaskModel.not_before.remove(),
    ]


def queue_on_write(settings: Settings, task: TaskModel, now: float) -> None:
    """Mark a task not yet written as queued (what :func:`queued_actions` writes to one that is)."""
    task.status = TaskStatus.SUBMITTED.value
    task.submitted_at = now
    task.due_shard = clock.due_shard(task.task_id, settings.due_shards)
    task.due_at = now + settings.redispatch_after_seconds


def release(task_id: str, result_ids: str | set[str]) -> TaskModel | None:
    """Remove completed dependencies from a task's remaining set (idempotent: set DELETE).

    Returns the task as it is after the write, or None if the task does not exist.
    """
    done = {result_ids} if isinstance(result_ids, str) else set(result_ids)
    t = TaskModel(task_id)
    released = [TaskModel.remaining.delete(done), TaskModel.updated_at.set(clock.now())]
    return t if update_if(t, released, TaskModel.task_id.exists()) else None


def release_aborted(task_id: str, result_id: str) -> TaskModel | None:
    """An optional dependency of the task was aborted: release it, and note it on the task (the
    failure cascade stops here; the task runs without it and is told). Conditioned on the
    dependency being of the optional kind for this task, so a mandatory one is never released.

    Returns the task as it is after the write, or None if it has no such optional dependency.
    """
    t = TaskModel(task_id)
    released = [TaskModel.remaining.delete({result_id}), TaskModel.aborted_inputs.add({result_id}),
                TaskModel.updated_at.set(clock.now())]
    optional = TaskModel.task_id.exists() & TaskModel.optional_deps.contains(result_id)
    return t if update_if(t, released, optional) else None


def try_ready(settings: Settings, task: TaskModel) -> bool:
    """Pending with nothing remaining -> Submitted. True only for the one caller that wins."""
    if task.status != TaskStatus.PENDING.value or task.remaining:
        return False
    ready = task_move(TaskStatus.PENDING, TaskStatus.SUBMITTED).guard & TaskModel.remaining.does_not_exist()
    return update_if(task, queued_actions(settings, task.task_id, clock.now()), ready)  # type: ignore[arg-type]


def release_and_ready(settings: Settings, pairs: Iterable[tuple[str, str]]) -> list[TaskModel]:
    """For each (task, completed result): release it and try to ready the task. Returns the winners,
    each whole as its ready write left it (the write returns the item): their messages may carry it.

    Releases are grouped per task (a fan-in task waiting on 200 results released by one batch is one
    write, not 200) and the tasks are updated concurrently.
    """
    grouped: dict[str, set[str]] = defaultdict(set)
    for task_id, result_id in pairs:
        grouped[task_id].add(result_id)

    def one(item: tuple[str, set[str]]) -> TaskModel | None:
        t = release(*item)
        return t if t is not None and try_ready(settings, t) else None

    found = [one(item) for item in grouped.items()] if len(grouped) <= 1 else list(_pool.map(one, grouped.items()))
    return [t for t in found if t is not None]


#: Dependents carried on a result item (``ResultModel.dependents``); past this, the edges alone.
#: 100 ids of 32 characters are ~3.3 KB of a 400 KB item: a fan-in stays cheap, a broadcast input
#: read by thousands of tasks does not grow its item without bound.
DEPENDENTS_ON_ITEM = 100


def _waiting_on(tasks: Sequence[TaskModel]) -> dict[str, set[str]]:
    waiting: dict[str, set[str]] = defaultdict(set)
    for t in tasks:
        for rid in t.remaining or ():
            waiting[rid].add(t.task_id)
    return waiting


def flag_dependents(results: Sequence[ResultModel], tasks: Sequence[TaskModel]) -> set[str]:
    """Mark the results (not yet written) that a task of the same write waits on; returns their ids.

    A result created together with its dependents then carries ``has_dependents`` (and, when there
    are few, their ids) from its first write, and :func:`register_edges` has nothing to write to it.
    """
    waiting = _waiting_on(tasks)
    flagged = {r.result_id for r in results if r.result_id in waiting}
    for r in results:
        if r.result_id in flagged:
            r.has_dependents = True
            ids = waiting[r.result_id]
            r.dependents = set(ids) if len(ids) <= DEPENDENTS_ON_ITEM else None
    return flagged


def note_releases(tasks: Sequence[TaskModel], inherited: Mapping[str, Collection[str]] | None = None) -> None:
    """Tell each task (not yet written) which tasks of the same write wait on its outputs, so that
    the worker committing it releases them at once (a dependency hop without a stream poll).

    ``inherited``: dependents of outputs a task takes over from its parent (delegation), which the
    parent's own item carried. Only what fits on a result item (:data:`DEPENDENTS_ON_ITEM`) is noted;
    dependents registered later, and any the writer fails to release, are the stream's to release.
    """
    waiting = _waiting_on(tasks)
    for t in tasks:
        noted: dict[str, list[str]] = {}
        for rid in t.expected_outputs or ():
            ids = waiting.get(rid, set()) | set((inherited or {}).get(rid, ()))
            if 0 < len(ids) <= DEPENDENTS_ON_ITEM:
                noted[rid] = sorted(ids)
        t.releases = noted or None


def released_by(task: TaskModel, completed: Collection[str]) -> list[tuple[str, str]]:
    """The (dependent, result) pairs a committed task releases itself: the dependents its item notes
    for the outputs it completed (pure)."""
    noted: dict[str, list[str]] = task.releases or {}
    return [(tid, rid) for rid in sorted(completed) for tid in noted.get(rid, ())]


def still_waiting(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs whose release is still to do, read in one consistent batch (100 tasks a call): the
    task still waits on the result, or waits on nothing and is not yet readied (its releaser died
    between the two writes). The stream's resolve reads before it writes because the committing
    worker usually released the dependents already; a read costs less than a repeated write."""
    if not pairs:
        return []
    found = {t.task_id: t for t in TaskModel.batch_get(sorted({tid for tid, _ in pairs}), consistent_read=True)}
    keep: list[tuple[str, str]] = []
    for tid, rid in pairs:
        t = found.get(tid)
        if t is not None and (rid in (t.remaining or ()) or (t.status == TaskStatus.PENDING.value and not t.remaining)):
            keep.append((tid, rid))
    return keep


def register_edges(tasks: Sequence[TaskModel], *, flagged: Collection[str] = (),
                   written: Collection[str] = ()) -> None:
    """Record result -> dependent edges for every remaining dependency (but on the results of
    ``written``, whose edges were written with them), then flag each result that was not flagged
    when written (``flagged``) as having dependents.

    An edge is an immutable fact keyed by (result, task); writing it again writes the same item, so a
    plain batch write is idempotent and needs no condition. The flag lets resolve skip the edge
    lookup of results nobody waits on; it is written after the edges and before the caller's
    :func:`recheck`, so that a completion resolve skips (written before the flag) is one the recheck
    sees, and one written after the flag finds the edges.
    """
    edges = [(rid, t) for t in tasks for rid in t.remaining or () if rid not in written]
    if edges:
        with EdgeModel.batch_write() as batch:
            for rid, t in edges:
                batch.save(EdgeModel(result_id=rid, task_id=t.task_id, session_id=t.session_id))
    waiting = _waiting_on(tasks)
    unflagged = [(rid, waiting[rid]) for rid in sorted(set(waiting) - set(flagged) - set(written))]
    if len(unflagged) > 1:
        list(_pool.map(lambda item: _flag(*item), unflagged))
    elif unflagged:
        _flag(*unflagged[0])


def _flag(result_id: str, task_ids: set[str]) -> None:
    """Flag an existing result as waited on by ``task_ids``: their ids join its ``dependents`` while
    it carries few (the first condition), else it is marked as having more than it can carry."""
    exists = ResultModel.result_id.exists()  # gone: its dependents are cancelled with it
    if len(task_ids) <= DEPENDENTS_ON_ITEM:
        # Written False at creation: nobody waited yet, so the set it starts is complete. (An item
        # older than the flag may have edges and no set: it must not start one.)
        room = size(ResultModel.dependents) <= DEPENDENTS_ON_ITEM - len(task_ids)  # type: ignore[no-untyped-call]
        few = exists & ((ResultModel.has_dependents == False) | (ResultModel.dependents.exists() & room))  # noqa: E712
        if update_if(ResultModel(result_id), [ResultModel.has_dependents.set(True),
                                              ResultModel.dependents.add(task_ids)], few):
            return
    # Too many to carry (or the ids it carried were dropped): the edges alone say who waits.
    update_if(ResultModel(result_id), [ResultModel.has_dependents.set(True), ResultModel.dependents.remove()], exists)


def recheck(settings: Settings, tasks: Sequence[TaskModel], *, written: Collection[str] = ()) -> list[TaskModel]:
    """After edges exist, release every remaining dependency that is already completed (but those of
    ``written``: results written together with their edges, which cannot have ended before them).
    The tasks it queues are whole, as their ready write left them (see :func:`release_and_ready`).

    This closes the race with a dependency completing, or being aborted, while the task was being
    written: either resolve sees our edge, or we see the dependency's end here (both may: releasing
    is idempotent, and so is cancelling).
    """
    wanted = {rid for t in tasks for rid in (t.remaining or ())} - set(written)
    if not wanted:
        return []
    found = {r.result_id: r for r in ResultModel.batch_get(list(wanted), consistent_read=True)}
    completed = {rid for rid, r in found.items() if r.status == ResultStatus.COMPLETED.value}
    queued = release_and_ready(
        settings, [(t.task_id, rid) for t in tasks for rid in (t.remaining or ()) if rid in completed]
    )
    return queued + settle_aborted(settings, tasks, found)


def settle_aborted(settings: Settings, tasks: Sequence[TaskModel], found: Mapping[str, ResultModel]) -> list[TaskModel]:
    """Written tasks some of whose remaining dependencies are aborted in ``found``: resolve will not
    come back for an abort that came before the edge to it existed. An optional one is released (the
    task runs without it, and is queued if that was its last); a mandatory one cancels the task with
    the root failure. Returns the tasks queued, whole (see :func:`release_and_ready`)."""
    queued: list[TaskModel] = []
    for t in tasks:
        for rid in sorted(t.remaining or ()):
            r = found.get(rid)
            if r is None or r.status != ResultStatus.ABORTED.value:
                continue
            if stops_cascade(t.optional_deps, rid):
                released = release_aborted(t.task_id, rid)
                if released is not None and try_ready(settings, released):
                    queued.append(released)
                continue
            cancel_dependent(t.task_id, rid, r.error)
            break
    return queued


def activate(settings: Settings, tasks: Sequence[TaskModel], *, flagged: Collection[str] = ()) -> list[TaskModel]:
    """Make staged (Creating) tasks live: edges, Creating -> Pending/Submitted, re-check.

    ``flagged``: results known to carry ``has_dependents`` already (see :func:`register_edges`).
    Returns the tasks this call queued (the caller enqueues them). Safe to repeat after a crash.
    """
    register_edges(tasks, flagged=flagged)
    now = clock.now()
    # One conditional write per task, independent of the others: run concurrently (a tree's node
    # stages its two halves and their join; each write is a round trip).
    states = list(_pool.map(lambda t: _activate_one(settings, t, now), tasks)) if len(tasks) > 1 else [
        _activate_one(settings, t, now) for t in tasks]
    queued = [t for t, state in zip(tasks, states, strict=True) if state == "queued"]
    waiting = [t for t, state in zip(tasks, states, strict=True) if state == "waiting"]
    queued.extend(recheck(settings, waiting))
    return queued


#: A staged task made live, waiting on its inputs.
LIVE = task_move(TaskStatus.CREATING, TaskStatus.PENDING)


def _activate_one(settings: Settings, t: TaskModel, now: float) -> str | None:
    """Creating -> Submitted (nothing remaining) or Pending; "queued", "waiting", or None when an
    earlier run activated it further already."""
    if not t.remaining:
        queued = task_move(TaskStatus.CREATING, TaskStatus.SUBMITTED).guard & TaskModel.remaining.does_not_exist()
        written = update_if(t, queued_actions(settings, t.task_id, now), queued)  # type: ignore[arg-type]
        if written:
            return "queued"
    else:
        written = update_if(t, [LIVE.set, TaskModel.updated_at.set(now)], LIVE.guard)
    if not written:
        t.refresh(consistent_read=True)
        if t.status == TaskStatus.CREATING.value:  # resolve emptied the set meanwhile
            t.update(actions=[LIVE.set, TaskModel.updated_at.set(now)], condition=LIVE.guard)
        elif t.status == TaskStatus.SUBMITTED.value and t.started_at is None:
            return "queued"  # written live by its parent's commit, whose worker died before queueing it
        elif t.status != TaskStatus.PENDING.value:
            return None  # already activated further by an earlier run
    return "queued" if try_ready(settings, t) else "waiting"


def enqueue_tasks(settings: Settings, tasks: Iterable[TaskModel], *, delay_seconds: int = 0,
                  whole: bool = False) -> int:
    """Send the tasks' messages; ``whole``: see :func:`message_for`."""
    return dispatching.enqueue(settings, [message_for(t, whole=whole) for t in tasks], delay_seconds=delay_seconds)

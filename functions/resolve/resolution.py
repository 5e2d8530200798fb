"""Dependency resolution: what a result's completion or abortion means for the tasks waiting on it.

Stream records arrive at least once and possibly out of batch order, so each step is idempotent:
releasing a dependency is a set DELETE, readying is a conditional Pending -> Submitted that only one
caller wins, and cancelling is conditional on the task still waiting.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from skyloom.core import readiness
from skyloom.core.cancellation import cancel_dependent
from skyloom.core.config import Settings
from skyloom.core.models import EdgeModel
from skyloom.core.states import ResultStatus

_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="skyloom-resolve")
log = logging.getLogger(__name__)


@dataclass
class Resolved:
    queued: int = 0
    cancelled: int = 0
    #: Dependents of an aborted result that depend on it optionally: the cascade stopped at them.
    spared: int = 0
    tasks: list[str] = field(default_factory=list)
    #: Seconds from a result's completion to its dependents being queued (one per result that queued some).
    latencies: list[float] = field(default_factory=list)


def dependents(result_id: str) -> list[str]:
    return [e.task_id for e in EdgeModel.query(result_id, consistent_read=True)]


def carried_dependents(image: dict[str, Any]) -> list[str] | None:
    """The dependents a result's stream image carries (complete when present: see
    ``ResultModel.dependents``); None when the edges must be looked up (pure)."""
    ids = image.get("dependents")
    return sorted(ids) if ids else None


def transition(old: dict[str, Any] | None, new: dict[str, Any] | None) -> str | None:
    """The result status this record newly reached, or None if nothing to resolve (pure).

    A completion of a result written with ``has_dependents`` False needs nothing: no edge names it,
    and a task that registers one later flags it first and re-checks it after (see
    :func:`skyloom.core.readiness.register_edges`). Aborts are always looked up: they are rare, and
    that re-check releases completed dependencies only.
    """
    if not new:
        return None
    status = new.get("status")
    if old is not None and old.get("status") == status:
        return None
    if status == ResultStatus.COMPLETED.value and new.get("has_dependents") is False:
        return None
    if status in (ResultStatus.COMPLETED.value, ResultStatus.ABORTED.value):
        return str(status)
    return None


def on_completed(settings: Settings, result_id: str, carried: list[str] | None = None) -> Resolved:
    waiting = carried if carried is not None else dependents(result_id)
    winners = readiness.release_and_ready(settings, readiness.still_waiting([(t, result_id) for t in waiting]))
    readiness.enqueue_tasks(settings, winners, whole=True)
    return Resolved(queued=len(winners), tasks=[t.task_id for t in winners])


def on_aborted(settings: Settings, result_id: str, error: dict[str, Any] | None) -> Resolved:
    out = Resolved()
    for task_id in dependents(result_id):
        # An optional edge stops the cascade: the task runs without the input (and is told).
        spared = readiness.release_aborted(task_id, result_id)
        if spared is not None:
            out.spared += 1
            log.info("failure cascade stopped at an optional dependency",
                     extra={"result_id": result_id, "task_id": task_id,
                            "root_task_id": (error or {}).get("task_id", "unknown")})
            if readiness.try_ready(settings, spared):
                readiness.enqueue_tasks(settings, [spared])
                out.queued += 1
                out.tasks.append(task_id)
            continue
        if cancel_dependent(task_id, result_id, error):
            out.cancelled += 1
            out.tasks.append(task_id)
    return out


def resolve_batch(
    settings: Settings, changes: Sequence[tuple[dict[str, Any] | None, dict[str, Any] | None]]
) -> Resolved:
    """Resolve a whole stream batch at once: completions are grouped so that a task released by
    many results of the batch is written once, and edge lookups run concurrently."""
    completed: list[str] = []
    carried: dict[str, list[str]] = {}
    completed_at: dict[str, float] = {}
    out = Resolved()
    for old, new in changes:
        reached = transition(old, new)
        if reached == ResultStatus.COMPLETED.value and new is not None:
            completed.append(str(new["result_id"]))
            ids = carried_dependents(new)
            if ids is not None:
                carried[str(new["result_id"])] = ids
            if new.get("completed_at") is not None:
                completed_at[str(new["result_id"])] = float(new["completed_at"])
        elif reached == ResultStatus.ABORTED.value and new is not None:
            aborted = resolve_record(settings, old, new)
            out.cancelled += aborted.cancelled
            out.spared += aborted.spared
            out.queued += aborted.queued
            out.tasks += aborted.tasks
    if completed:
        lookups = [rid for rid in completed if rid not in carried]
        found = dict(zip(lookups, _pool.map(dependents, lookups) if len(lookups) > 1 else map(dependents, lookups),
                         strict=True))
        edges = [carried[rid] if rid in carried else found[rid] for rid in completed]
        pairs = [(task_id, rid) for rid, tasks in zip(completed, edges, strict=True) for task_id in tasks]
        winners = readiness.release_and_ready(settings, readiness.still_waiting(pairs))
        readiness.enqueue_tasks(settings, winners, whole=True)
        out.queued += len(winners)
        out.tasks += [t.task_id for t in winners]
        ready = {t.task_id for t in winners}
        now = time.time()
        out.latencies += [
            now - completed_at[rid]
            for rid, tasks in zip(completed, edges, strict=True)
            if rid in completed_at and ready.intersection(tasks)
        ]
    return out


def resolve_record(settings: Settings, old: dict[str, Any] | None, new: dict[str, Any] | None) -> Resolved:
    reached = transition(old, new)
    if reached is None or new is None:
        return Resolved()
    if reached == ResultStatus.COMPLETED.value:
        return on_completed(settings, str(new["result_id"]), carried_dependents(new))
    error = new.get("error")
    if isinstance(error, str):  # JSONAttribute is stored as a JSON string
        error = json.loads(error)
    return on_aborted(settings, str(new["result_id"]), error if isinstance(error, dict) else None)

"""``skyloom stats SESSION``: per-handler counts and duration percentiles, and the critical path.

"Handler" here is what a task runs as people know it (:func:`~skyloom.cli.common.task_name`): a
``@skyloom.task`` function's ``module.qualname``, else the registered handler.

The critical path is the chain of tasks whose run times add up to the most, following what forces
an order: a task waits for the producers of its inputs and for the parent that submitted it. It
says which tasks to make faster for the whole session to finish sooner; the gap between its length
and the session's wall time is what queueing and scheduling cost.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

import typer
from rich.table import Table

from skyloom.cli.common import (
    EndpointOption,
    JsonOption,
    connected,
    console,
    fmt_seconds,
    print_json,
    styled,
    task_name,
)
from skyloom.cli.tasks import duration
from skyloom.core import cost
from skyloom.core.protocol import ResultInfo, TaskInfo


@dataclass(frozen=True)
class HandlerStats:
    handler: str
    count: int
    by_status: dict[str, int]
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    total: float


@dataclass(frozen=True)
class MachineStats:
    """One handler's run times on one kind of machine (instance type / CPU model)."""

    handler: str
    machine: str
    count: int
    p50: float | None
    p90: float | None
    max: float | None
    mean: float | None


@dataclass(frozen=True)
class CriticalPath:
    tasks: list[TaskInfo] = field(default_factory=list)
    #: Sum of the run times along the path.
    length: float = 0.0
    #: First creation to last end over the whole session (None while nothing has ended).
    wall: float | None = None


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def handler_stats(tasks: Sequence[TaskInfo]) -> list[HandlerStats]:
    """Per handler: how many tasks in each state, and run-time percentiles of those that ended."""
    groups: dict[str, list[TaskInfo]] = {}
    for t in tasks:
        groups.setdefault(task_name(t), []).append(t)
    out: list[HandlerStats] = []
    for handler, group in sorted(groups.items()):
        times = sorted(d for d in (duration(t) for t in group) if d is not None)
        out.append(HandlerStats(
            handler=handler,
            count=len(group),
            by_status=dict(Counter(t.status for t in group)),
            p50=percentile(times, 50),
            p90=percentile(times, 90),
            p99=percentile(times, 99),
            max=times[-1] if times else None,
            total=sum(times),
        ))
    return out


def machine_of(t: TaskInfo) -> str:
    """The machine the task's last attempt ran on, as stats group it (``?`` when not recorded)."""
    last = t.attempts[-1].machine if t.attempts else None
    return last.label() if last is not None else "?"


def machine_stats(tasks: Sequence[TaskInfo]) -> list[MachineStats]:
    """Per handler and machine: run-time percentiles of the tasks that ended, so that a slower CPU
    generation shows as its own row instead of skewing the handler's figures."""
    groups: dict[tuple[str, str], list[float]] = {}
    for t in tasks:
        d = duration(t)
        if d is not None:
            groups.setdefault((task_name(t), machine_of(t)), []).append(d)
    out: list[MachineStats] = []
    for (handler, machine), values in sorted(groups.items()):
        times = sorted(values)
        out.append(MachineStats(handler=handler, machine=machine, count=len(times), p50=percentile(times, 50),
                                p90=percentile(times, 90), max=times[-1], mean=sum(times) / len(times)))
    return out


def critical_path(tasks: Sequence[TaskInfo], results: Sequence[ResultInfo]) -> CriticalPath:
    """The heaviest chain of tasks through input and parent edges (a longest path in a DAG)."""
    by_id = {t.task_id: t for t in tasks}
    producer = {r.result_id: r.owner_task_id for r in results if r.owner_task_id}
    preds: dict[str, set[str]] = {tid: set() for tid in by_id}
    for t in tasks:
        for rid in t.data_dependencies:
            p = producer.get(rid)
            if p in by_id and p != t.task_id:
                preds[t.task_id].add(p)
        if t.parent_task_id in by_id:
            preds[t.task_id].add(t.parent_task_id)
    succs: dict[str, list[str]] = {tid: [] for tid in by_id}
    for tid, ps in preds.items():
        for p in ps:
            succs[p].append(tid)
    # Kahn's order; a cycle (impossible by the graph rules) simply leaves its members out.
    waiting = {tid: len(ps) for tid, ps in preds.items()}
    ready = deque(sorted(tid for tid, n in waiting.items() if n == 0))
    best: dict[str, float] = {}
    via: dict[str, str | None] = {}
    while ready:
        tid = ready.popleft()
        own = duration(by_id[tid]) or 0.0
        before = max(((best[p], p) for p in preds[tid] if p in best), default=(0.0, None))
        best[tid] = before[0] + own
        via[tid] = before[1]
        for s in succs[tid]:
            waiting[s] -= 1
            if waiting[s] == 0:
                ready.append(s)
    ended = [t.ended_at for t in tasks if t.ended_at is not None]
    wall = max(ended) - min(t.created_at for t in tasks) if ended else None
    if not best:
        return CriticalPath(wall=wall)
    end = max(best, key=lambda k: (best[k], k))
    chain: list[TaskInfo] = []
    cursor: str | None = end
    while cursor is not None:
        chain.append(by_id[cursor])
        cursor = via[cursor]
    return CriticalPath(tasks=list(reversed(chain)), length=best[end], wall=wall)


def command(
    session_id: Annotated[str, typer.Argument(help="A session id.")],
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per-handler counts and run-time percentiles (also by machine), the session's critical path,
    and its estimated cost in dollars with the breakdown (docs/cost.md)."""
    with connected(endpoint) as client:
        session = client.get_session(session_id)
        tasks = list(client.iter_tasks(session_id, limit=1000))
        results = list(client.iter_results(session_id, limit=1000))
        sheet = client.pricing()
    default = session.options.partition or (session.partitions[0] if session.partitions else "default")
    bill = cost.estimate(cost.usage_of(tasks, results, inline_max_bytes=sheet.inline_max_bytes,
                                       default_partition=default), sheet)
    stats = handler_stats(tasks)
    machines = machine_stats(tasks)
    path = critical_path(tasks, results)
    if as_json:
        print_json({
            "handlers": [s.__dict__ for s in stats],
            "machines": [m.__dict__ for m in machines],
            "critical_path": {
                "tasks": [{"task_id": t.task_id, "handler": task_name(t), "duration": duration(t)} for t in path.tasks],
                "length": path.length,
                "wall": path.wall,
            },
            "cost": bill.model_dump(),
        })
        return
    out = console()
    table = Table("handler", "tasks", "states", "p50", "p90", "p99", "max", "total", title=f"session {session_id}")
    for s in stats:
        states = " ".join(f"{styled(k)} {v}" for k, v in sorted(s.by_status.items()))
        table.add_row(s.handler, str(s.count), states, fmt_seconds(s.p50), fmt_seconds(s.p90), fmt_seconds(s.p99),
                      fmt_seconds(s.max), fmt_seconds(s.total))
    out.print(table)
    if machines:
        by_machine = Table("handler", "machine (instance type / CPU)", "tasks", "p50", "p90", "max", "mean",
                           title="run time by machine")
        for m in machines:
            by_machine.add_row(m.handler, m.machine, str(m.count), fmt_seconds(m.p50), fmt_seconds(m.p90),
                               fmt_seconds(m.max), fmt_seconds(m.mean))
        out.print(by_machine)
    _print_cost(bill)
    if not path.tasks:
        out.print("critical path: no tasks")
        return
    out.print(f"critical path: {len(path.tasks)} task(s), {fmt_seconds(path.length)} of run time; "
              f"session wall time {fmt_seconds(path.wall)}")
    for t in path.tasks:
        out.print(f"  {t.task_id}  {task_name(t)}  {fmt_seconds(duration(t))}  {styled(t.status)}")


def _print_cost(bill: cost.CostEstimate) -> None:
    table = Table("item", "quantity", "unit", "unit price", "dollars",
                  title=f"estimated cost: ${bill.total:.6f} (docs/cost.md)")
    for line in (*bill.compute, *bill.requests):
        table.add_row(line.item, f"{line.quantity:g}", line.unit, f"${line.unit_price:.10f}".rstrip("0"),
                      f"${line.dollars:.6f}")
    console().print(table)

"""Pure rules of the task graph: who produces what, what waits on what, and what may not be submitted.

No I/O here: submission and completion gather facts from DynamoDB, then ask these functions, so the
rules can be unit-tested exhaustively (and with hypothesis) without an emulator.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from skyloom.core import limits
from skyloom.core.states import ResultStatus
from skyloom.errors import GraphCycle, InvalidRequest


@dataclass(frozen=True)
class TaskNode:
    """What the rules need to know of a task being submitted."""

    task_id: str
    dependencies: tuple[str, ...]
    outputs: tuple[str, ...]


def check_unique(ids: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise InvalidRequest(f"{what} id {i!r} appears more than once in the request", field=what)
        seen.add(i)


def producers(nodes: Sequence[TaskNode]) -> dict[str, str]:
    """Map each expected output to the one task of the batch producing it (invariant 5)."""
    owner: dict[str, str] = {}
    for i, n in enumerate(nodes):
        if len(set(n.outputs)) != len(n.outputs):
            raise InvalidRequest(
                f"task {n.task_id} lists an expected output twice", field=f"tasks.{i}.expected_outputs"
            )
        for out in n.outputs:
            if out in owner:
                raise InvalidRequest(
                    f"result {out} is an expected output of both task {owner[out]} and task {n.task_id}; "
                    "a result has exactly one producer",
                    field=f"tasks.{i}.expected_outputs",
                )
            owner[out] = n.task_id
    return owner


def find_cycle(nodes: Sequence[TaskNode]) -> list[str] | None:
    """A list of task ids forming a dependency cycle through expected outputs, or None.

    Task B waits on task A when B depends on a result A is expected to produce. Iterative DFS with
    colours, so a 100,000-task batch cannot blow the recursion limit.
    """
    owner = producers(nodes)
    waits_on: dict[str, list[str]] = {
        n.task_id: [owner[d] for d in n.dependencies if d in owner] for n in nodes
    }
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(waits_on, white)
    for start in waits_on:
        if colour[start] != white:
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = [start]
        colour[start] = grey
        while stack:
            node, idx = stack[-1]
            succ = waits_on[node]
            if idx < len(succ):
                stack[-1] = (node, idx + 1)
                nxt = succ[idx]
                if colour[nxt] == grey:
                    return [*path[path.index(nxt) :], nxt]
                if colour[nxt] == white:
                    colour[nxt] = grey
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                colour[node] = black
                stack.pop()
                path.pop()
    return None


def check_acyclic(nodes: Sequence[TaskNode]) -> None:
    cycle = find_cycle(nodes)
    if cycle is not None:
        first = next(i for i, n in enumerate(nodes) if n.task_id == cycle[0])
        raise GraphCycle(
            "tasks wait on each other's expected outputs: " + " -> ".join(cycle),
            field=f"tasks.{first}.data_dependencies",
            details={"cycle": cycle},
        )


def delegations(parent_outputs: Sequence[str], staged_outputs: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Which subtask each delegated parent output moves to: ``{result_id: subtask_id}``.

    ``staged_outputs`` maps each staged subtask to its expected outputs; naming a parent output there
    is how a task delegates it. Delegating one output to two subtasks breaks invariant 5.
    """
    parent = set(parent_outputs)
    moved: dict[str, str] = {}
    for sub, outs in staged_outputs.items():
        for out in outs:
            if out in parent:
                if out in moved:
                    raise InvalidRequest(
                        f"expected output {out} is delegated to both {moved[out]} and {sub}",
                        field="expected_outputs",
                    )
                moved[out] = sub
    return moved


def uncovered_outputs(
    expected: Sequence[str], produced: Iterable[str], delegated: Iterable[str]
) -> tuple[list[str], list[str]]:
    """(missing, doubled): outputs neither produced nor delegated, and those both produced and delegated.

    A task succeeds only when each expected output is covered exactly once (invariant 5).
    """
    prod, dele = set(produced), set(delegated)
    missing = [o for o in expected if o not in prod and o not in dele]
    doubled = [o for o in expected if o in prod and o in dele]
    return missing, doubled


def unknown_outputs(expected: Sequence[str], produced: Iterable[str]) -> list[str]:
    exp = set(expected)
    return sorted(o for o in produced if o not in exp)


def subtask_depth(parent_depth: float | None, parent_id: str) -> int:
    """The nesting level of a subtask staged by a task at ``parent_depth`` (None: a pre-depth item, 0).

    Raises:
        InvalidRequest: the subtask would be deeper than ``limits.SUBTASK_DEPTH``; a recursion that
            keeps delegating to itself ends here with a message naming the limit.
    """
    depth = int(parent_depth or 0) + 1
    if depth > limits.SUBTASK_DEPTH.value:
        raise InvalidRequest(
            f"task {parent_id} is at subtask depth {depth - 1}: its subtasks would exceed the limit of "
            f"{limits.SUBTASK_DEPTH.value} levels (subtask_depth); is a task delegating to itself forever?",
            field="depth",
            details={"limit": limits.SUBTASK_DEPTH.value, "depth": depth},
        )
    return depth


def queue_level(priority: int, levels: int) -> int:
    """The queue level for a priority: levels beyond the partition's top share the top queue."""
    return max(0, min(priority, levels - 1))


# ------------------------------------------------------------------------ kinds of data dependency
#: The kinds a data dependency may have besides the default, *mandatory* (waited for, prefetched,
#: and an abort of it cancels the task): *optional* (an abort of it does not cancel the task, which
#: runs and is told) and *lazy* (waited for, but not prefetched: the task fetches it on demand).
DEPENDENCY_KINDS = ("optional", "lazy")


def check_dependency_kinds(
    dependencies: Sequence[str], optional: Sequence[str], lazy: Sequence[str], field: str
) -> None:
    """Each optional and lazy dependency must be one of the task's data dependencies, once.

    Raises:
        InvalidRequest: naming ``<field>.optional_dependencies`` or ``<field>.lazy_dependencies``.
    """
    deps = set(dependencies)
    for kind, ids in (("optional", optional), ("lazy", lazy)):
        name = f"{field}.{kind}_dependencies" if field else f"{kind}_dependencies"
        check_unique(ids, name)
        stray = [i for i in ids if i not in deps]
        if stray:
            raise InvalidRequest(
                f"{kind} dependency {stray[0]} is not one of the task's data_dependencies; list it there too",
                field=name, details={"result_ids": stray[:100]},
            )


def merge_uses(uses: Iterable[tuple[str, bool, bool]]) -> tuple[list[str], list[str]]:
    """The (optional, lazy) dependencies of a call that uses results ``(id, optional, lazy)``, maybe
    several times: a result is optional only if every use of it is, lazy only if every use is (a
    mandatory or prefetched use of it wins)."""
    optional: dict[str, bool] = {}
    lazy: dict[str, bool] = {}
    for rid, is_optional, is_lazy in uses:
        optional[rid] = optional.get(rid, True) and is_optional
        lazy[rid] = lazy.get(rid, True) and is_lazy
    return [r for r, v in optional.items() if v], [r for r, v in lazy.items() if v]


def stops_cascade(optional: Collection[str] | None, result_id: str) -> bool:
    """Whether an abort of ``result_id`` stops at the dependent whose optional dependencies are
    ``optional``: the dependent then runs, told, instead of being cancelled."""
    return result_id in (optional or ())


def settled_inputs(
    dependencies: Iterable[str], statuses: Mapping[str, str], optional: Collection[str] | None
) -> tuple[set[str], set[str]]:
    """(remaining, aborted) of a task being written: the dependencies still to wait for, and its
    optional dependencies already aborted (the task will run without them, and is told)."""
    remaining: set[str] = set()
    aborted: set[str] = set()
    for rid in dependencies:
        status = statuses.get(rid)
        if status == ResultStatus.COMPLETED.value:
            continue
        if status == ResultStatus.ABORTED.value and stops_cascade(optional, rid):
            aborted.add(rid)
            continue
        remaining.add(rid)
    return remaining, aborted

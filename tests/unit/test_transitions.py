"""Every status a write sets, and every status it is conditioned on, comes from the state table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from skyloom.core.states import ResultStatus, SessionStatus, TaskStatus, task_sources
from skyloom.core.transitions import IllegalTransition, result_move, session_move, task_in, task_move

REPO = Path(__file__).resolve().parents[2]
#: Reads, not writes: filters of list queries may name any status.
READ_ONLY = {"sdk/skyloom/core/queries.py": 2, "sdk/skyloom/core/lifecycle.py": 2}


def test_an_edge_the_table_lacks_cannot_be_built() -> None:
    with pytest.raises(IllegalTransition, match="Completed"):
        task_move(TaskStatus.COMPLETED, TaskStatus.SUBMITTED)
    with pytest.raises(IllegalTransition):
        task_move([TaskStatus.PENDING, TaskStatus.ERROR], TaskStatus.CANCELLED)
    with pytest.raises(IllegalTransition):
        result_move(ResultStatus.ABORTED, ResultStatus.COMPLETED)
    with pytest.raises(IllegalTransition):
        session_move(SessionStatus.DELETED, SessionStatus.RUNNING)


def _values(expression: object) -> set[str]:
    """The status strings an update action or condition writes or compares against."""
    names: dict[str, str] = {}
    values: dict[str, dict[str, str]] = {}
    expression.serialize(names, values)  # type: ignore[attr-defined]
    return {v["S"] for v in values.values()}


def test_a_move_sets_the_target_and_guards_on_the_sources() -> None:
    move = task_move(None, TaskStatus.CANCELLED)
    assert _values(move.set) == {"Cancelled"}
    assert _values(move.guard) == {s.value for s in task_sources(TaskStatus.CANCELLED)}
    assert _values(task_move(TaskStatus.SUBMITTED, TaskStatus.PROCESSING).guard) == {"Submitted"}
    assert _values(task_in(TaskStatus.COMPLETED)) == {"Completed"}


def test_no_write_names_a_status_outside_the_transitions_module() -> None:
    pattern = re.compile(r"\w+Model\.status\s*(==|!=|\.is_in\(|\.set\()")
    found: dict[str, int] = {}
    for root in ("sdk/skyloom", "functions", "fargate_worker"):
        for path in (REPO / root).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            if rel == "sdk/skyloom/core/transitions.py":
                continue
            hits = len(pattern.findall(path.read_text(encoding="utf-8")))
            if hits:
                found[rel] = hits
    assert found == READ_ONLY, "build status conditions and updates with skyloom.core.transitions"

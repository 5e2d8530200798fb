"""Graph rules: producers, cycles through expected outputs, delegation and output coverage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skyloom.core.graph import (
    TaskNode,
    check_acyclic,
    check_dependency_kinds,
    delegations,
    find_cycle,
    merge_uses,
    producers,
    queue_level,
    settled_inputs,
    stops_cascade,
    uncovered_outputs,
)
from skyloom.errors import GraphCycle, InvalidRequest


def test_diamond_is_acyclic() -> None:
    nodes = [
        TaskNode("a", (), ("ra",)),
        TaskNode("b", ("ra",), ("rb",)),
        TaskNode("c", ("ra",), ("rc",)),
        TaskNode("d", ("rb", "rc"), ("rd",)),
    ]
    check_acyclic(nodes)


def test_cycle_through_expected_outputs_is_named() -> None:
    nodes = [TaskNode("t1", ("r2",), ("r1",)), TaskNode("t2", ("r1",), ("r2",))]
    with pytest.raises(GraphCycle) as err:
        check_acyclic(nodes)
    assert "t1" in err.value.message and "t2" in err.value.message
    assert err.value.field == "tasks.0.data_dependencies"


def test_self_dependency_is_a_cycle() -> None:
    assert find_cycle([TaskNode("t", ("r",), ("r",))]) == ["t", "t"]


def test_one_producer_per_result() -> None:
    with pytest.raises(InvalidRequest):
        producers([TaskNode("a", (), ("r",)), TaskNode("b", (), ("r",))])


@given(st.integers(min_value=2, max_value=60))
def test_chains_are_acyclic_and_rings_are_not(n: int) -> None:
    chain = [TaskNode(f"t{i}", (f"r{i - 1}",) if i else (), (f"r{i}",)) for i in range(n)]
    assert find_cycle(chain) is None
    ring = [TaskNode(f"t{i}", (f"r{(i - 1) % n}",), (f"r{i}",)) for i in range(n)]
    cycle = find_cycle(ring)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == n + 1


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=80))
def test_dags_built_forward_never_report_cycles(edges: list[tuple[int, int]]) -> None:
    deps: dict[int, set[int]] = {i: set() for i in range(31)}
    for a, b in edges:
        lo, hi = sorted((a, b))
        if lo != hi:
            deps[hi].add(lo)  # only depend on lower-numbered tasks: a DAG by construction
    nodes = [TaskNode(f"t{i}", tuple(f"r{j}" for j in sorted(d)), (f"r{i}",)) for i, d in deps.items()]
    assert find_cycle(nodes) is None


def test_delegation_moves_each_output_to_one_subtask() -> None:
    assert delegations(["o"], {"s1": ["o"], "s2": ["x"]}) == {"o": "s1"}
    with pytest.raises(InvalidRequest):
        delegations(["o"], {"s1": ["o"], "s2": ["o"]})


def test_output_coverage() -> None:
    assert uncovered_outputs(["a", "b", "c"], ["a"], ["b"]) == (["c"], [])
    assert uncovered_outputs(["a"], ["a"], ["a"]) == ([], ["a"])


def test_queue_level_clamps() -> None:
    assert queue_level(0, 3) == 0
    assert queue_level(9, 3) == 2


# ------------------------------------------------------------------------ kinds of data dependency
def test_dependency_kinds_must_name_data_dependencies_once() -> None:
    check_dependency_kinds(["a", "b"], ["a"], ["a", "b"], "tasks.0")
    with pytest.raises(InvalidRequest) as stray:
        check_dependency_kinds(["a"], ["b"], [], "tasks.3")
    assert stray.value.field == "tasks.3.optional_dependencies"
    with pytest.raises(InvalidRequest) as doubled:
        check_dependency_kinds(["a"], [], ["a", "a"], "tasks.0")
    assert doubled.value.field == "tasks.0.lazy_dependencies"


def test_a_result_used_several_times_takes_the_strictest_kind() -> None:
    uses = [("a", True, True), ("a", False, True), ("b", True, False), ("b", True, True), ("c", False, False)]
    assert merge_uses(uses) == (["b"], ["a"])


def test_an_abort_stops_at_optional_edges_only_and_settles_the_inputs_of_a_new_task() -> None:
    assert stops_cascade({"a"}, "a") and not stops_cascade({"a"}, "b") and not stops_cascade(None, "a")
    statuses = {"done": "Completed", "gone": "Aborted", "lost": "Aborted", "later": "Created"}
    assert settled_inputs(["done", "gone", "lost", "later"], statuses, {"gone"}) == ({"lost", "later"}, {"gone"})

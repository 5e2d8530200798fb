"""``skyloom.metrics`` inside a task: values asked for at submission read from memory, records
validated and handed back with the outcome, misuse refused naming the field."""

from __future__ import annotations

import pytest

import skyloom
from skyloom.core.limits import MEASUREMENTS_PER_ATTEMPT
from skyloom.runtime.context import TaskContext
from skyloom.runtime.outcome import TaskInput


def _ctx(asked: list[list[str]], known: dict[tuple[str, str], float]) -> TaskContext:
    return TaskContext(TaskInput("t1", "s1", "h", b"", {}, [], {"metrics": asked}, metrics=known))


def test_latest_reads_what_the_worker_fetched_and_record_comes_back_with_the_outcome() -> None:
    ctx = _ctx([["TRD-1", "sec"], ["TRD-2", "sec"]], {("TRD-1", "sec"): 1.5})
    with ctx.active():
        assert skyloom.metrics.latest("TRD-1", "sec") == 1.5
        assert skyloom.metrics.latest("TRD-2", "sec") is None  # asked for, never recorded
        skyloom.metrics.record("TRD-1", "sec", 2)
    (rec,) = ctx.outcome().measurements
    assert (rec.key, rec.name, rec.value) == ("TRD-1", "sec", 2.0) and isinstance(rec.value, float)


@pytest.mark.parametrize(("args", "field"), [
    (("TRD#1", "sec", 1.0), "key"),
    (("TRD-1", "has space", 1.0), "name"),
    (("TRD-1", None, 1.0), "name"),
    (("TRD-1", "sec", float("inf")), "value"),
    (("TRD-1", "sec", True), "value"),
    (("TRD-1", "sec", "1.0"), "value"),
])
def test_bad_records_are_refused_naming_the_field(args: tuple[object, object, object], field: str) -> None:
    with _ctx([], {}).active(), pytest.raises(skyloom.InvalidRequest) as refused:
        skyloom.metrics.record(*args)  # type: ignore[arg-type]
    assert refused.value.field == field


def test_a_pair_not_asked_for_says_how_to_ask_and_records_are_bounded() -> None:
    ctx = _ctx([], {})
    with ctx.active():
        with pytest.raises(skyloom.InvalidRequest, match=r"TaskOptions\(metrics="):
            skyloom.metrics.latest("TRD-1", "sec")
        for i in range(MEASUREMENTS_PER_ATTEMPT.value):
            skyloom.metrics.record("TRD-1", "sec", i)
        with pytest.raises(skyloom.InvalidRequest, match="at most"):
            skyloom.metrics.record("TRD-1", "sec", 0)


def test_outside_a_task_it_says_so() -> None:
    with pytest.raises(RuntimeError, match="inside a running task"):
        skyloom.metrics.record("TRD-1", "sec", 1.0)


def test_the_option_takes_pairs_and_refuses_bad_ones_naming_them() -> None:
    assert skyloom.TaskOptions.of({"metrics": [["TRD-1", "sec"]]}).metrics == (("TRD-1", "sec"),)
    with pytest.raises(skyloom.InvalidRequest) as refused:
        skyloom.TaskOptions(metrics=[("TRD-1", "sec")] * 101)
    assert refused.value.field == "metrics"

"""Optional and lazy data dependencies end to end, on the local stack with real workers, through the
high-level API (``skyloom.optional``, ``skyloom.lazy``) and the low-level one (``TaskRequest``)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import skyloom
from skyloom import TaskRequest
from skyloom.cli import app
from tests.e2e.conftest import _append_env

pytestmark = pytest.mark.slow

TIMEOUT = 120.0
# The workers import this module for its handler; the stack starts after collection (see conftest).
_append_env("SKYLOOM_HANDLER_MODULES", __name__, ",")


@skyloom.handler("e2e.fetch_inputs")
def fetch_inputs(ctx: skyloom.TaskContext) -> None:
    """Each input in order: its value (a lazy one fetched now), or why it was aborted."""
    parts = [b"aborted: " + ctx.aborted[rid].reason.encode() if rid in ctx.aborted else ctx.fetch(rid)
             for rid in sorted({*ctx.dependencies, *ctx.lazy, *ctx.aborted})]
    ctx.send_result(ctx.expected_outputs[0], b" | ".join(parts))


@skyloom.task(max_retries=0)
def broken(x: int) -> int:
    raise ValueError(f"no price for trade {x}")


@skyloom.task
def plain(x: int) -> int:
    return x


@skyloom.task
def report(main: int, extra: Any) -> str:
    if isinstance(extra, skyloom.LazyInput):
        extra = extra.get()
    if isinstance(extra, skyloom.Aborted):
        return f"{main} without extra ({extra.reason})"
    return f"{main + extra}"


@skyloom.task
def pick(use_big: bool, small: int, big: skyloom.LazyInput[list[int]]) -> Any:
    assert isinstance(big, skyloom.LazyInput) and not big.fetched
    if not use_big:
        return small
    value = big.get()
    return value if isinstance(value, skyloom.Aborted) else sum(value)


@skyloom.task
def big_list(n: int) -> list[int]:
    return list(range(n))


@skyloom.task
def nested(x: int) -> Any:
    """Submits, from inside a task, a reader of a failing subtask's output, optionally and lazily."""
    return report.submit(x, skyloom.lazy(skyloom.optional(broken.submit(x))))


def _task(session: skyloom.Session, future: skyloom.Future[Any]) -> Any:
    (res,) = session.get_results([future.id])
    assert res.owner_task_id is not None
    (task,) = session.get_tasks([res.owner_task_id])
    return task


def test_an_optional_input_that_failed_reaches_the_task_as_a_marker_and_the_cascade_stops(
    client: skyloom.Client,
) -> None:
    # GIVEN a result whose producer fails for good, read optionally by one task and mandatorily by another
    with client.session() as s:
        bad = broken.submit(7)
        told = report.submit(1, skyloom.optional(bad))
        after = plain.submit(told)  # downstream of the optional edge: unaffected
        cancelled = report.submit(1, bad)
        fine = report.submit(1, skyloom.optional(plain.submit(2)))
    # THEN the optional reader runs and is told why; the cascade stops at it; the mandatory one is cancelled
    assert told.result(timeout=TIMEOUT) == f"1 without extra (ValueError: no price for trade 7 (task {bad.task_id}))"
    assert after.result(timeout=TIMEOUT) == told.result()
    with pytest.raises(skyloom.DependencyAborted):
        cancelled.result(timeout=TIMEOUT)
    assert fine.result(timeout=TIMEOUT) == "3"
    assert _task(s, told).aborted_inputs == [bad.id]
    shown = CliRunner().invoke(app, ["tasks", "show", _task(s, told).task_id, "--session", s.session_id],
                               env={"SKYLOOM_ENDPOINT": client.endpoint, "COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert "input (optional, aborted: ran without it)" in shown.stdout


def test_subtasks_submitted_by_a_task_take_kinds_of_dependency_too(client: skyloom.Client) -> None:
    # GIVEN a task that submits a failing subtask and, optionally and lazily, a reader of its output
    with client.session():
        f = nested.submit(4)
    # THEN the reader runs (it got a LazyInput whose value is the marker) and its value is the task's
    assert f.result(timeout=TIMEOUT).startswith("4 without extra (ValueError: no price for trade 4")


def test_a_lazy_input_is_fetched_only_when_asked_and_the_fetch_is_counted(client: skyloom.Client) -> None:
    # GIVEN a large result, read lazily by a task that needs it and by one that does not
    with client.session() as s:
        big = big_list.submit(100_000)
        used = pick.submit(True, 0, skyloom.lazy(big))
        unused = pick.submit(False, 5, skyloom.lazy(big))
        both = pick.submit(True, 0, skyloom.lazy(skyloom.optional(broken.submit(1))))
    assert used.result(timeout=TIMEOUT) == sum(range(100_000))
    assert unused.result(timeout=TIMEOUT) == 5
    assert isinstance(both.result(timeout=TIMEOUT), skyloom.Aborted)  # lazy and optional together
    # THEN the fetch is timed and counted with the attempt's input transfers; nothing for the other
    used_metrics, unused_metrics = _task(s, used).metrics, _task(s, unused).metrics
    assert used_metrics["lazy_fetches"] == 1 and used_metrics["bytes_in"] > 100_000
    assert "lazy_fetches" not in unused_metrics and unused_metrics["bytes_in"] < 100_000
    assert _task(s, used).lazy_dependencies == [big.id]


def test_the_low_level_api_takes_kinds_of_dependency(client: skyloom.Client) -> None:
    # GIVEN a handler task reading an uploaded input lazily, and a failed task's output optionally
    with client.session() as s:
        data = s.upload(b"lazy bytes")
        failed = broken.submit(3)
        [out] = s.create_results(["out"])
        s.submit_tasks([TaskRequest("e2e.fetch_inputs", expected_outputs=[out], data_dependencies=[data, failed.id],
                                    optional_dependencies=[failed.id], lazy_dependencies=[data])])
        s.wait([out], timeout=TIMEOUT)
        value = s.download(out)
        (task,) = [t for t in s.client.iter_tasks(s.session_id) if t.expected_outputs == [out]]
    # THEN it ran, fetched the lazy input itself and was told why the other one aborted
    assert task.status == "Completed"
    parts = dict(zip(sorted([data, failed.id]), value.split(b" | "), strict=True))
    assert parts[data] == b"lazy bytes"
    assert parts[failed.id].startswith(b"aborted: ValueError: no price for trade 3")
    assert (task.optional_dependencies, task.lazy_dependencies, task.aborted_inputs) == ([failed.id], [data],
                                                                                         [failed.id])
    assert task.metrics is not None and task.metrics["lazy_fetches"] == 1
    with pytest.raises(skyloom.InvalidRequest) as refused:  # checked before anything is sent
        TaskRequest("e2e.fetch_inputs", expected_outputs=[out], optional_dependencies=["nope"])
    assert refused.value.field == "optional_dependencies"

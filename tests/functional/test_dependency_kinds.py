"""Optional and lazy data dependencies through the control plane, on in-process moto: validation
naming the field, the failure cascade stopping at an optional edge (replayed, and with the abort
racing the submission), and the inputs a worker hands the task."""

from __future__ import annotations

import pytest

from skyloom.core import execution, sessions
from skyloom.core.config import Settings
from skyloom.core.dispatching import TaskMessage
from skyloom.core.models import ResultModel, TaskModel
from skyloom.runtime.outcome import RemoteError
from tests.functional.conftest import ApiClient, Db
from tests.functional.test_resolution import StreamReader, resolve, run_task, status, submit

BOOM = RemoteError(type="ValueError", message="bad trade", traceback="", retryable=False)


@pytest.fixture(autouse=True)
def _fresh_session_cache() -> None:
    sessions._status_cache.clear()


def fail_task(settings: Settings, task_id: str) -> None:
    t = TaskModel.get(task_id, consistent_read=True)
    task = execution.claim(settings, TaskMessage(task_id, t.session_id, t.partition, 0), "w1")
    assert task is not None
    assert execution.fail(settings, task, "w1", BOOM) == "Error"


@pytest.mark.parametrize(("kind", "ids"), [("optional", ["nope"]), ("lazy", ["ra", "ra"])])
def test_a_kind_naming_a_result_that_is_not_a_data_dependency_is_refused_naming_the_field(
    api: ApiClient, db: Db, kind: str, ids: list[str]
) -> None:
    sid = api.session()
    before = db.counts()
    r = api.call("POST", f"/sessions/{sid}/tasks", {"tasks": [
        {"id": "t", "handler": "h", "data_dependencies": ["ra"], f"{kind}_dependencies": ids,
         "expected_outputs": ["rt"]}], "results": [{"id": "ra"}, {"id": "rt"}]})
    assert r.status == 400, r.raw_body
    assert r.field == f"tasks.0.{kind}_dependencies"
    assert db.counts() == before


def test_the_cascade_stops_at_an_optional_edge_and_says_so(api: ApiClient, db: Db, aws_stack: Settings) -> None:
    # GIVEN a -> ra; b waits on ra mandatorily, c optionally (and lazily) along with d's rd; e waits on rc
    sid = api.session()
    submit(api, sid, [
        {"id": "a", "handler": "h", "expected_outputs": ["ra"]},
        {"id": "d", "handler": "h", "expected_outputs": ["rd"]},
        {"id": "b", "handler": "h", "data_dependencies": ["ra"], "expected_outputs": ["rb"]},
        {"id": "c", "handler": "h", "data_dependencies": ["ra", "rd"], "optional_dependencies": ["ra"],
         "lazy_dependencies": ["ra"], "expected_outputs": ["rc"]},
        {"id": "e", "handler": "h", "data_dependencies": ["rc"], "expected_outputs": ["re"]},
    ], [{"id": r} for r in ("ra", "rb", "rc", "rd", "re")])
    stream = StreamReader(aws_stack)
    stream.batch()
    # WHEN a fails for good (its output aborted) and d completes; the stream batch comes twice
    fail_task(aws_stack, "a")
    run_task(aws_stack, "d", {"rd": b"4"})
    batch = stream.batch()
    resolve(batch)
    resolve(batch)
    # THEN b is cancelled, c is queued (once) and told which input aborted; e still waits on c
    assert status("b") == "Cancelled"
    assert status("c") == "Submitted" and status("e") == "Pending"
    shown = api.call("POST", f"/sessions/{sid}/tasks/get", {"ids": ["c"]}).json["tasks"][0]
    assert shown["aborted_inputs"] == ["ra"] and shown["optional_dependencies"] == ["ra"]
    assert shown["lazy_dependencies"] == ["ra"]
    assert db.queued_messages() == 3  # a, d, and c once
    # AND the worker hands c the root failure of ra, and prefetches neither ra (aborted, lazy) nor more
    t = TaskModel.get("c", consistent_read=True)
    inp = execution.load_inputs(aws_stack, t)
    assert set(inp.dependencies) == {"rd"} and inp.lazy == ["ra"]
    assert inp.aborted["ra"]["task_id"] == "a" and inp.aborted["ra"]["type"] == "ValueError"


def test_an_input_aborted_before_the_submission_cancels_or_is_skipped_as_if_it_aborted_after(
    api: ApiClient, aws_stack: Settings
) -> None:
    # GIVEN a result already aborted
    sid = api.session()
    submit(api, sid, [{"id": "a", "handler": "h", "expected_outputs": ["ra"]}], [{"id": "ra"}])
    fail_task(aws_stack, "a")
    stream = StreamReader(aws_stack)
    stream.batch()
    # WHEN tasks name it as a mandatory dependency (with a dependent of their own in the same request)
    # and as an optional one
    submit(api, sid, [
        {"id": "m", "handler": "h", "data_dependencies": ["ra"], "expected_outputs": ["rm"]},
        {"id": "n", "handler": "h", "data_dependencies": ["rm"], "expected_outputs": ["rn"]},
        {"id": "o", "handler": "h", "data_dependencies": ["ra"], "optional_dependencies": ["ra"],
         "expected_outputs": ["ro"]},
    ], [{"id": "rm"}, {"id": "rn"}, {"id": "ro"}])
    resolve(stream.batch())
    # THEN the mandatory one is accepted and cancelled naming the root failure, and so, through the
    # cascade, is its own dependent: as if a had failed just after; the optional one is queued
    assert status("m") == "Cancelled" and status("n") == "Cancelled"
    for rid in ("rm", "rn"):
        r = ResultModel.get(rid, consistent_read=True)
        assert r.status == "Aborted" and (r.error or {}).get("task_id") == "a"
    assert status("o") == "Submitted"
    assert TaskModel.get("o").aborted_inputs == {"ra"}

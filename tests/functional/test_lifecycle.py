"""Failures, retries, cancellation and the session lifecycle, on in-process moto.

Workers are simulated through ``skyloom.core.execution`` (the functions the agent calls) and resolve
is fed real stream records, so every cascade below goes through the same code as in production.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from skyloom.core import clock, execution, sessions
from skyloom.core.config import Settings
from skyloom.core.dispatching import TaskMessage
from skyloom.core.models import ResultModel, TaskModel
from skyloom.runtime.outcome import RemoteError, TaskOutcome
from tests.functional.conftest import ApiClient, Db, b64
from tests.functional.test_resolution import StreamReader, resolve, run_task, status, submit

BOOM = RemoteError(type="ValueError", message="bad trade", traceback="Traceback ...\nValueError: bad trade")


@pytest.fixture(autouse=True)
def _fast_retries(aws_stack: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from skyloom_server.functions.resolve import handler as resolve_handler

    resolve_handler.settings.cache_clear()
    sessions._status_cache.clear()


def claim(settings: Settings, task_id: str, worker: str = "w1") -> TaskModel | None:
    t = TaskModel.get(task_id, consistent_read=True)
    return execution.claim(settings, TaskMessage(task_id, t.session_id, t.partition, 0), worker)


def chain(api: ApiClient, sid: str, *, retries: int = 0) -> None:
    """a -> b -> c, each depending on the previous one's output."""
    opts = {"max_retries": retries}
    submit(api, sid, [
        {"id": "a", "handler": "h", "expected_outputs": ["ra"], "options": opts},
        {"id": "b", "handler": "h", "data_dependencies": ["ra"], "expected_outputs": ["rb"], "options": opts},
        {"id": "c", "handler": "h", "data_dependencies": ["rb"], "expected_outputs": ["rc"], "options": opts},
    ], [{"id": r} for r in ("ra", "rb", "rc")])


def drain(stream: StreamReader, times: int = 1) -> list[dict[str, Any]]:
    """Resolve everything on the stream until it is quiet; returns the batches (for replays)."""
    batches = []
    while True:
        batch = stream.batch()
        if not batch["Records"]:
            return batches
        for _ in range(times):
            assert resolve(batch) == {"batchItemFailures": []}
        batches.append(batch)


def test_a_failure_is_retried_then_cascades_through_three_levels(
    api: ApiClient, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = api.session()
    chain(api, sid, retries=1)
    stream = StreamReader(aws_stack)
    # GIVEN the first attempt of a fails: it is queued again, with the attempt recorded
    task = claim(aws_stack, "a")
    assert task is not None
    assert execution.fail(aws_stack, task, "w1", BOOM) == "Submitted"
    a = TaskModel.get("a", consistent_read=True)
    assert [x["outcome"] for x in a.attempts] == ["error"] and a.attempts[0]["error_type"] == "ValueError"
    # WHEN, its backoff over, the last attempt fails too
    after_backoff = float(a.not_before) + 0.1
    monkeypatch.setattr(clock, "now", lambda: after_backoff)
    task = claim(aws_stack, "a", "w2")
    assert task is not None and task.attempt == 2
    assert execution.fail(aws_stack, task, "w2", BOOM) == "Error"
    batches = drain(stream)
    # THEN a is Error, b and c Cancelled, and every output Aborted naming a as the root failure
    assert [status(t) for t in "abc"] == ["Error", "Cancelled", "Cancelled"]
    for rid in ("ra", "rb", "rc"):
        r = ResultModel.get(rid, consistent_read=True)
        assert r.status == "Aborted"
        assert r.error["task_id"] == "a" and r.error["message"] == "bad trade" and r.error["attempts"] == 2
    assert TaskModel.get("c", consistent_read=True).error["cancelled_because"] == "dependency rb was aborted"
    # AND replaying every stream record of the run twice changes nothing
    before = {t: (status(t), TaskModel.get(t).error) for t in "abc"}
    for batch in batches:
        resolve(batch)
        resolve(batch)
    assert {t: (status(t), TaskModel.get(t).error) for t in "abc"} == before
    # AND the client is told which task failed and why
    r = api.call("GET", f"/sessions/{sid}/results/rc")
    assert r.json["status"] == "Aborted" and r.json["error"]["task_id"] == "a"


def test_a_timeout_is_recorded_as_such(api: ApiClient, aws_stack: Settings) -> None:
    sid = api.session()
    submit(api, sid, [{"id": "t", "handler": "h", "expected_outputs": ["o"], "options": {"max_retries": 0}}],
           [{"id": "o"}])
    task = claim(aws_stack, "t")
    assert task is not None
    err = RemoteError(type="TaskTimeout", message="ran past max_duration", traceback="")
    assert execution.fail(aws_stack, task, "w1", err, timed_out=True) == "Timeout"
    assert ResultModel.get("o", consistent_read=True).error["status"] == "Timeout"


def _cancelled_metric(out: str) -> list[float]:
    """The TasksCancelled values in the embedded-metric-format lines the submit function printed."""
    values: list[float] = []
    for line in out.splitlines():
        record = json.loads(line) if line.startswith('{"_aws"') else {}
        if "TasksCancelled" in record:
            value = record["TasksCancelled"]
            values.extend(value if isinstance(value, list) else [value])
    return values


def test_cancelling_queued_and_running_tasks(
    api: ApiClient, db: Db, aws_stack: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = api.session()
    chain(api, sid)
    stream = StreamReader(aws_stack)
    running = claim(aws_stack, "a")
    assert running is not None
    # WHEN the running task a is cancelled
    r = api.call("POST", f"/sessions/{sid}/tasks/cancel", {"ids": ["a"]})
    assert r.status == 200 and r.json["tasks"][0]["status"] == "Cancelled"
    drain(stream)
    # THEN its worker loses the lease at the next heartbeat and can no longer complete it
    assert not execution.heartbeat(aws_stack, running, "w1")
    assert not execution.commit(aws_stack, running, "w1", TaskOutcome(outputs={"ra": b"x"}), {})
    # AND dependents are cancelled with the reason
    assert [status(t) for t in "abc"] == ["Cancelled"] * 3
    assert ResultModel.get("rc").error["message"].endswith("cancelled by " + api.A)
    assert _cancelled_metric(capsys.readouterr().out) == [1.0]  # the request cancelled one task
    # AND cancelling again is a no-op, and counts nothing
    assert api.call("POST", f"/sessions/{sid}/tasks/cancel", {"ids": ["a", "b"]}).status == 200
    assert _cancelled_metric(capsys.readouterr().out) == [0.0]


def test_pause_parks_queued_work_and_resume_requeues_it(api: ApiClient, db: Db, aws_stack: Settings) -> None:
    sid = api.session()
    submit(api, sid, [{"id": "t", "handler": "h", "expected_outputs": ["o"]}], [{"id": "o"}])
    assert api.call("POST", f"/sessions/{sid}/pause").json["status"] == "Paused"
    sessions._status_cache.clear()
    # WHEN a worker receives the queued task of the paused session: it parks it instead of running it
    assert claim(aws_stack, "t") is None
    assert status("t") == "Pending"
    # AND submissions are still accepted, but nothing starts
    submit(api, sid, [{"id": "u", "handler": "h", "expected_outputs": ["p"]}], [{"id": "p"}])
    assert status("u") == "Pending"
    # THEN resume queues both again
    assert api.call("POST", f"/sessions/{sid}/resume").json["status"] == "Running"
    sessions._status_cache.clear()
    assert status("t") == status("u") == "Submitted"
    run_task(aws_stack, "t", {"o": b"done"})
    assert status("t") == "Completed"
    # AND resuming a closed session is refused
    api.call("POST", f"/sessions/{sid}/close")
    r = api.call("POST", f"/sessions/{sid}/resume")
    assert r.status == 409 and r.error == "conflict"


def test_purge_deletes_every_value_and_keeps_metadata(api: ApiClient, aws_stack: Settings) -> None:
    sid = api.session()
    big = b"x" * 5000  # above the test stack's 1 KiB inline limit: stored in S3
    submit(api, sid, [{"id": "t", "handler": "h", "expected_outputs": ["o1", "o2"], "payload": b64(b"args")}],
           [{"id": "o1"}, {"id": "o2"}])
    run_task(aws_stack, "t", {"o1": big, "o2": b"small"})
    s3 = boto3.client("s3", region_name=aws_stack.region)
    assert s3.list_objects_v2(Bucket=aws_stack.bucket).get("KeyCount", 0) == 1
    # a running session cannot be purged
    assert api.call("POST", f"/sessions/{sid}/purge").status == 409
    api.call("POST", f"/sessions/{sid}/close")
    r = api.call("POST", f"/sessions/{sid}/purge")
    assert r.status == 200 and r.json["status"] == "Purged"
    assert s3.list_objects_v2(Bucket=aws_stack.bucket).get("KeyCount", 0) == 0
    for rid in ("o1", "o2"):
        res = ResultModel.get(rid, consistent_read=True)
        assert (res.status, res.inline, res.s3_key) == ("Deleted", None, None)
    assert TaskModel.get("t").payload is None and status("t") == "Completed"
    # submitting to a purged session is a clear error
    r = api.call("POST", f"/sessions/{sid}/tasks", {"tasks": [{"handler": "h", "expected_outputs": ["z"]}],
                                                     "results": [{"id": "z"}]})
    assert r.status == 409 and r.error == "session_closed"


def test_delete_removes_metadata(api: ApiClient, db: Db, aws_stack: Settings) -> None:
    sid = api.session()
    chain(api, sid)
    assert api.call("POST", f"/sessions/{sid}/cancel").json["status"] == "Cancelled"
    assert [status(t) for t in "abc"] == ["Cancelled"] * 3
    r = api.call("DELETE", f"/sessions/{sid}")
    assert r.status == 200 and r.json["status"] == "Deleted"
    assert api.call("GET", f"/sessions/{sid}").status == 404
    counts = db.counts()
    assert counts["tasks"] == counts["results"] == counts["edges"] == 0


def test_another_identity_cannot_drive_my_session(api: ApiClient, db: Db) -> None:
    sid = api.session()
    for method, path in [("POST", "cancel"), ("POST", "pause"), ("POST", "resume"), ("POST", "purge"),
                         ("DELETE", "")]:
        r = api.call(method, f"/sessions/{sid}/{path}".rstrip("/"), identity=api.B)
        assert r.status == 404 and r.error == "session_not_found", (method, path)
    assert api.call("GET", f"/sessions/{sid}").json["status"] == "Running"

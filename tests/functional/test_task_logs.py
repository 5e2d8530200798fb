"""Task logs through the control plane, on in-process moto: the worker's commit and failure paths
store each attempt's log (inline when small, in S3 when large), getTaskLogs reads them back for the
owner only, and a purge deletes them like every other value of the session."""

from __future__ import annotations

import dataclasses

import boto3
import pytest

from skyloom.core import clock, execution, limits, sessions, tasklogs
from skyloom.core.config import Settings
from skyloom.core.dispatching import TaskMessage
from skyloom.core.models import TaskModel
from skyloom.runtime.outcome import RemoteError, TaskLog, TaskOutcome
from tests.functional.conftest import ApiClient
from tests.functional.test_resolution import submit

BOOM = RemoteError(type="ValueError", message="bad trade", traceback="Traceback ...\nValueError: bad trade")
SMALL = TaskLog(b"pricing trade 7\nwarning: negative rate\n")
#: Above the inline limit: stored in S3, and with a cut said.
LARGE = TaskLog(b"".join(b"iteration %05d\n" % i for i in range(1000)), cut=12_345)


@pytest.fixture(autouse=True)
def _fresh_session_cache() -> None:
    sessions._status_cache.clear()


def claim(settings: Settings, task_id: str, worker: str) -> TaskModel:
    t = TaskModel.get(task_id, consistent_read=True)
    task = execution.claim(settings, TaskMessage(task_id, t.session_id, t.partition, 0), worker)
    assert task is not None
    return task


def fail_then_succeed(api: ApiClient, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> str:
    """A task whose first attempt prints a little and fails, and whose second prints a lot and succeeds."""
    sid = api.session()
    submit(api, sid, [{"id": "t", "handler": "h", "expected_outputs": ["o"], "options": {"max_retries": 1}}],
           [{"id": "o"}])
    assert execution.fail(settings, claim(settings, "t", "w1"), "w1", BOOM, log=SMALL) == "Submitted"
    after_backoff = float(TaskModel.get("t", consistent_read=True).not_before) + 0.1
    monkeypatch.setattr(clock, "now", lambda: after_backoff)
    assert execution.commit(settings, claim(settings, "t", "w2"), "w2", TaskOutcome(outputs={"o": b"1"}), {},
                              log=LARGE)
    return sid


def test_each_attempt_keeps_its_log_inline_or_in_s3(
    api: ApiClient, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a task that failed once (a small log) then succeeded (a large one)
    sid = fail_then_succeed(api, aws_stack, monkeypatch)
    # THEN the small log rides in its attempt record and the large one is in S3 under the session
    first, second = TaskModel.get("t", consistent_read=True).attempts
    assert first["log"] == SMALL.text() and "log_key" not in first
    assert "log" not in second and second["log_key"].startswith(f"sessions/{sid}/logs/t/a2-")
    assert (second["log_bytes"], second["log_cut"]) == (LARGE.size, 12_345)
    # AND the task's view says how much each attempt printed, without the text
    info = api.call("GET", f"/sessions/{sid}/tasks/t").json
    assert [a["log_bytes"] for a in info["attempts"]] == [SMALL.size, LARGE.size]
    assert "log" not in info["attempts"][0] and "log_key" not in info["attempts"][1]
    # WHEN the logs are read
    r = api.call("GET", f"/sessions/{sid}/tasks/t/logs")
    # THEN both attempts come back, oldest first, the cut said at the start of the second
    assert r.status == 200, r.raw_body
    assert [(a["number"], a["outcome"], a["worker"]) for a in r.json["attempts"]] == [(1, "error", "w1"),
                                                                                      (2, "completed", "w2")]
    assert r.json["attempts"][0]["text"] == SMALL.text() and r.json["attempts"][0]["cut"] == 0
    assert r.json["attempts"][1]["text"] == f"... 12345 bytes cut ...\n{LARGE.text()}"
    assert r.json["earlier"] == 0
    # AND one attempt can be asked for alone
    only = api.call("GET", f"/sessions/{sid}/tasks/t/logs?attempt=1").json
    assert [a["number"] for a in only["attempts"]] == [1]


def test_a_task_that_printed_nothing_has_empty_logs(api: ApiClient, aws_stack: Settings) -> None:
    sid = api.session()
    submit(api, sid, [{"id": "q", "handler": "h", "expected_outputs": ["o"]}], [{"id": "o"}])
    assert execution.commit(aws_stack, claim(aws_stack, "q", "w1"), "w1", TaskOutcome(outputs={"o": b""}), {},
                              log=TaskLog(b""))
    r = api.call("GET", f"/sessions/{sid}/tasks/q/logs")
    assert r.status == 200 and [(a["text"], a["bytes"]) for a in r.json["attempts"]] == [("", 0)]
    assert api.call("GET", f"/sessions/{sid}/tasks/q").json["attempts"][0]["log_bytes"] is None


def test_unknown_task_attempt_and_other_owners_are_404_naming_the_field(
    api: ApiClient, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = fail_then_succeed(api, aws_stack, monkeypatch)
    r = api.call("GET", f"/sessions/{sid}/tasks/nope/logs")
    assert (r.status, r.error, r.json["field"]) == (404, "task_not_found", "task_id")
    r = api.call("GET", f"/sessions/{sid}/tasks/t/logs?attempt=3")
    assert (r.status, r.error, r.json["field"]) == (404, "attempt_not_found", "attempt")
    r = api.call("GET", f"/sessions/{sid}/tasks/t/logs?attempt=0")
    assert r.status == 400 and r.json["field"] == "attempt"
    # another identity learns nothing, not even that the session exists
    r = api.call("GET", f"/sessions/{sid}/tasks/t/logs", identity=api.B)
    assert (r.status, r.error) == (404, "session_not_found")
    assert "iteration" not in r.raw_body


def test_purge_deletes_the_logs_and_keeps_their_sizes(
    api: ApiClient, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = fail_then_succeed(api, aws_stack, monkeypatch)
    s3 = boto3.client("s3", region_name=aws_stack.region)
    logs = s3.list_objects_v2(Bucket=aws_stack.bucket, Prefix=f"sessions/{sid}/logs/").get("KeyCount", 0)
    assert logs == 1
    # WHEN the session is closed and purged
    api.call("POST", f"/sessions/{sid}/close")
    assert api.call("POST", f"/sessions/{sid}/purge").json["status"] == "Purged"
    # THEN no log is left, in S3 or inline, and the sizes stay as metadata
    assert s3.list_objects_v2(Bucket=aws_stack.bucket, Prefix=f"sessions/{sid}/").get("KeyCount", 0) == 0
    task = TaskModel.get("t", consistent_read=True)
    assert not tasklogs.has_logs(task)
    assert [a["log_bytes"] for a in task.attempts] == [SMALL.size, LARGE.size]
    r = api.call("GET", f"/sessions/{sid}/tasks/t/logs")
    assert r.status == 200 and [a["text"] for a in r.json["attempts"]] == ["", ""]


def test_past_the_answer_limit_the_latest_attempts_come_and_the_earlier_are_counted(
    api: ApiClient, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = fail_then_succeed(api, aws_stack, monkeypatch)
    monkeypatch.setattr(tasklogs, "TASK_LOG_ATTEMPTS", dataclasses.replace(limits.TASK_LOG_ATTEMPTS, value=1))
    r = api.call("GET", f"/sessions/{sid}/tasks/t/logs").json
    assert [a["number"] for a in r["attempts"]] == [2] and r["earlier"] == 1
    # an earlier attempt is still there when asked for by number
    assert api.call("GET", f"/sessions/{sid}/tasks/t/logs?attempt=1").json["attempts"][0]["text"] == SMALL.text()

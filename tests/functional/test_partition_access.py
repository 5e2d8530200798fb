"""Partition allow-lists enforced by the submit function and by the worker commit path, on moto.

``gpu`` is a shared fleet restricted to alice's identities and to installed ``tests.*`` handlers
(no code shipped by value); ``default`` is open. Every refusal is 403 ``forbidden`` naming the field,
and writes nothing; a subtask staged by a running task is held to the same rules, as the session
owner.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from skyloom.core import execution
from skyloom.core.config import POLICIES_ENV, Settings
from skyloom.core.dispatching import TaskMessage
from skyloom.core.models import TaskModel
from skyloom.runtime.outcome import StagedTask, TaskOutcome
from tests.functional.conftest import ApiClient, Db
from tests.functional.test_submit_api import assert_error, nothing_written, task

POLICIES = {"gpu": {"allowed_identities": ["arn:aws:iam::123456789012:user/ali*"],
                    "allowed_handlers": ["tests.*"], "installed_handlers_only": True}}


@pytest.fixture
def restricted(aws_stack: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    from skyloom_server.functions.submit import shared

    monkeypatch.setenv(POLICIES_ENV, json.dumps(POLICIES))
    shared.reset_settings()
    yield Settings.from_env()
    shared.reset_settings()


def test_an_identity_outside_the_allow_list_cannot_open_a_session_on_the_partition(
    api: ApiClient, db: Db, restricted: Settings
) -> None:
    with nothing_written(db):
        body = assert_error(api.call("POST", "/sessions", {"partitions": ["default", "gpu"]}, identity=api.B),
                            403, "forbidden", "partitions.1")
    assert "may not use partition 'gpu'" in body["message"]
    assert api.call("POST", "/sessions", {"partitions": ["default"]}, identity=api.B).status == 201
    assert api.call("POST", "/sessions", {"partitions": ["default", "gpu"]}).status == 201


def test_code_by_value_and_unlisted_handlers_are_refused_at_submission(
    api: ApiClient, db: Db, restricted: Settings
) -> None:
    sid = api.session(partitions=["default", "gpu"])
    on_gpu = {"partition": "gpu"}
    with nothing_written(db):
        body = assert_error(
            api.call("POST", f"/sessions/{sid}/tasks",
                     {"results": [{"id": "o"}], "tasks": [task(["o"], handler="skyloom.call", options=on_gpu)]}),
            403, "forbidden", "tasks.0.handler")
        assert "installed handlers only" in body["message"]
        # one bad task in a batch refuses the whole batch
        body = assert_error(
            api.call("POST", f"/sessions/{sid}/tasks",
                     {"results": [{"id": "o1"}, {"id": "o2"}],
                      "tasks": [task(["o1"], options=on_gpu), task(["o2"], handler="pricing.x", options=on_gpu)]}),
            403, "forbidden", "tasks.1.handler")
        assert "does not run handler 'pricing.x'" in body["message"]
    ok = api.call("POST", f"/sessions/{sid}/tasks",
                  {"results": [{"id": "o3"}, {"id": "o4"}],
                   "tasks": [task(["o3"], options=on_gpu), task(["o4"], handler="skyloom.call")]})
    assert ok.status == 201, ok.raw_body  # installed handlers on gpu, code by value on the open partition


def test_a_subtask_staged_by_a_worker_obeys_the_partition_rules(
    api: ApiClient, db: Db, restricted: Settings
) -> None:
    sid = api.session(partitions=["default", "gpu"])
    r = api.call("POST", f"/sessions/{sid}/tasks", {"results": [{"id": "out"}], "tasks": [task(["out"], id="parent")]})
    assert r.status == 201, r.raw_body
    parent = execution.claim(restricted, TaskMessage("parent", sid, "default", 0), "w1")
    assert parent is not None
    # The parent, allowed on the open partition, tries to launder code by value into the gpu fleet.
    smuggled = StagedTask("child", "skyloom.call", b"pickled", [], ["out"], options={"partition": "gpu"})
    assert execution.commit(restricted, parent, "w1", TaskOutcome(staged_tasks=[smuggled]), {})
    after = TaskModel.get("parent", consistent_read=True)
    assert after.status == "Error", after.status
    last = after.attempts[-1]
    assert last["error_type"] == "OutputContractViolation"
    assert "installed handlers only" in last["message"]
    with pytest.raises(TaskModel.DoesNotExist):
        TaskModel.get("child", consistent_read=True)

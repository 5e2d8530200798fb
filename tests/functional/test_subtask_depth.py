"""``limits.SUBTASK_DEPTH`` on the worker commit path, on moto: a subtask is one level below its parent,
and a task already at the limit cannot stage another level (its attempt fails, nothing is staged)."""

from __future__ import annotations

import pytest

from skyloom.core import execution, limits
from skyloom.core.config import Settings
from skyloom.core.dispatching import TaskMessage
from skyloom.core.models import TaskModel
from skyloom.runtime.outcome import StagedTask, TaskOutcome
from tests.functional.conftest import ApiClient
from tests.functional.test_submit_api import task


def _running_parent(api: ApiClient, settings: Settings, depth: int | None) -> TaskModel:
    sid = api.session()
    r = api.call("POST", f"/sessions/{sid}/tasks", {"results": [{"id": "out"}], "tasks": [task(["out"], id="parent")]})
    assert r.status == 201, r.raw_body
    if depth is not None:
        TaskModel("parent").update(actions=[TaskModel.depth.set(depth)])
    parent = execution.claim(settings, TaskMessage("parent", sid, "default", 0), "w1")
    assert parent is not None
    return parent


def test_a_delegated_subtask_is_one_level_deeper(api: ApiClient, aws_stack: Settings) -> None:
    parent = _running_parent(api, aws_stack, depth=None)  # a client's task: level 0
    child = StagedTask("child", "tests.echo", b"", [], ["out"])
    assert execution.commit(aws_stack, parent, "w1", TaskOutcome(staged_tasks=[child]), {})
    assert TaskModel.get("parent", consistent_read=True).status == "Completed"
    assert TaskModel.get("child", consistent_read=True).depth == 1


def test_the_limit_is_reached_but_not_crossed(api: ApiClient, aws_stack: Settings) -> None:
    parent = _running_parent(api, aws_stack, depth=limits.SUBTASK_DEPTH.value - 1)
    child = StagedTask("child", "tests.echo", b"", [], ["out"])
    assert execution.commit(aws_stack, parent, "w1", TaskOutcome(staged_tasks=[child]), {})
    assert TaskModel.get("child", consistent_read=True).depth == limits.SUBTASK_DEPTH.value


def test_a_task_at_the_limit_cannot_delegate_further(api: ApiClient, aws_stack: Settings) -> None:
    parent = _running_parent(api, aws_stack, depth=limits.SUBTASK_DEPTH.value)
    child = StagedTask("child", "tests.echo", b"", [], ["out"])
    assert execution.commit(aws_stack, parent, "w1", TaskOutcome(staged_tasks=[child]), {})
    after = TaskModel.get("parent", consistent_read=True)
    last = after.attempts[-1]
    assert last["error_type"] == "OutputContractViolation"
    assert "subtask_depth" in last["message"] and str(limits.SUBTASK_DEPTH.value) in last["message"]
    with pytest.raises(TaskModel.DoesNotExist):
        TaskModel.get("child", consistent_read=True)


def test_subtask_options_out_of_range_fail_the_attempt(api: ApiClient, aws_stack: Settings) -> None:
    parent = _running_parent(api, aws_stack, depth=None)
    child = StagedTask("child", "tests.echo", b"", [], ["out"], options={"priority": limits.PRIORITY.value + 1})
    assert execution.commit(aws_stack, parent, "w1", TaskOutcome(staged_tasks=[child]), {})
    last = TaskModel.get("parent", consistent_read=True).attempts[-1]
    assert last["error_type"] == "OutputContractViolation"
    assert "priority" in last["message"]

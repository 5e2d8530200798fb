"""The named limits: one definition, documented, and enforced by the SDK before anything is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skyloom.core import limits
from skyloom.core.graph import subtask_depth
from skyloom.core.protocol import (
    MAX_IDS_PER_REQUEST,
    CreateResultsRequest,
    CreateSessionRequest,
    IdsRequest,
    ResultSpec,
    SubmitTasksRequest,
    TaskSpec,
    WaitRequest,
)
from skyloom.errors import InvalidRequest, SkyloomError
from skyloom.options import TaskOptions

DOC = Path(__file__).resolve().parents[2] / "docs" / "limits.md"
REGENERATE = "python -m skyloom.core.limits > docs/limits.md"


def test_committed_doc_matches_the_code() -> None:
    assert DOC.read_text(encoding="utf-8") == limits.render_markdown(), f"docs/limits.md is stale; run: {REGENERATE}"


def test_every_limit_is_listed_once_and_explained() -> None:
    defined = [v for v in vars(limits).values() if isinstance(v, limits.Limit)]
    assert sorted(id(x) for x in defined) == sorted(id(x) for x in limits.ALL)
    assert len({x.name for x in limits.ALL}) == len(limits.ALL)
    for limit in limits.ALL:
        assert limit.value > 0 and len(limit.why) > 20 and limit.applies_to, limit


def test_the_protocol_reads_its_bounds_from_the_limits() -> None:
    assert limits.IDS_PER_REQUEST.value == MAX_IDS_PER_REQUEST
    schema = TaskSpec.model_json_schema()["properties"]
    assert schema["handler"]["maxLength"] == limits.HANDLER_LENGTH.value
    assert schema["expected_outputs"]["maxItems"] == limits.EXPECTED_OUTPUTS_PER_TASK.value
    options = TaskOptions.model_json_schema()["properties"]
    assert options["priority"]["anyOf"][0]["maximum"] == limits.PRIORITY.value


def _task(**kw: Any) -> dict[str, Any]:
    return {"handler": "h", "expected_outputs": ["o"], **kw}


@pytest.mark.parametrize(
    ("build", "field", "limit"),
    [
        (lambda: TaskSpec(**_task(handler="h" * (limits.HANDLER_LENGTH.value + 1))), "handler",
         limits.HANDLER_LENGTH.value),
        (lambda: TaskSpec(**_task(data_dependencies=["d"] * (limits.DEPENDENCIES_PER_TASK.value + 1))),
         "data_dependencies", limits.DEPENDENCIES_PER_TASK.value),
        (lambda: TaskSpec(**_task(expected_outputs=[f"o{i}" for i in range(65)])), "expected_outputs", 64),
        (lambda: SubmitTasksRequest(tasks=[TaskSpec(**_task())] * (limits.TASKS_PER_REQUEST.value + 1)), "tasks",
         limits.TASKS_PER_REQUEST.value),
        (lambda: CreateResultsRequest(results=[ResultSpec()] * (limits.RESULTS_PER_REQUEST.value + 1)), "results",
         limits.RESULTS_PER_REQUEST.value),
        (lambda: IdsRequest(ids=["i"] * (limits.IDS_PER_REQUEST.value + 1)), "ids", limits.IDS_PER_REQUEST.value),
        (lambda: WaitRequest(ids=["i"], timeout=limits.WAIT_SECONDS.value + 1), "timeout", limits.WAIT_SECONDS.value),
        (lambda: CreateSessionRequest(name="n" * (limits.NAME_LENGTH.value + 1)), "name", limits.NAME_LENGTH.value),
        (lambda: CreateSessionRequest(partitions=["default"] * 33), "partitions", 32),
        (lambda: TaskOptions(priority=limits.PRIORITY.value + 1), "priority", limits.PRIORITY.value),
        (lambda: TaskOptions(max_retries=-1), "max_retries", 0),
        (lambda: TaskOptions.of({"max_duration": limits.MAX_DURATION.value + 1}), "max_duration",
         limits.MAX_DURATION.value),
        (lambda: TaskOptions(extra={"k": "v" * (limits.OPTION_VALUE_LENGTH.value + 1)}), "extra.k",
         limits.OPTION_VALUE_LENGTH.value),
    ],
)
def test_the_sdk_refuses_before_sending_with_a_typed_error(build: Any, field: str, limit: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        build()
    assert isinstance(caught.value, SkyloomError) and isinstance(caught.value, ValueError)
    assert caught.value.field == field
    assert caught.value.details["limit"] == limit
    assert field in caught.value.message


def test_nested_models_keep_the_full_path_when_validated() -> None:
    # The API validates whole bodies: a bad nested field is named from the root, not from its model.
    with pytest.raises(Exception) as caught:
        SubmitTasksRequest.model_validate({"tasks": [_task(), _task(options={"priority": 10})]})
    assert not isinstance(caught.value, SkyloomError)
    assert caught.value.errors()[0]["loc"] == ("tasks", 1, "options", "priority")  # type: ignore[attr-defined]


def test_at_the_limits_the_models_accept() -> None:
    TaskSpec(**_task(handler="h" * limits.HANDLER_LENGTH.value,
                     expected_outputs=[f"o{i}" for i in range(limits.EXPECTED_OUTPUTS_PER_TASK.value)]))
    IdsRequest(ids=["i"] * limits.IDS_PER_REQUEST.value)
    TaskOptions(priority=limits.PRIORITY.value, max_retries=limits.MAX_RETRIES.value,
                max_duration=limits.MAX_DURATION.value,
                extra={f"k{i}": "v" * limits.OPTION_VALUE_LENGTH.value for i in range(limits.OPTION_EXTRAS.value)})


def test_subtask_depth() -> None:
    assert subtask_depth(None, "root") == 1
    assert subtask_depth(limits.SUBTASK_DEPTH.value - 1, "t") == limits.SUBTASK_DEPTH.value
    with pytest.raises(InvalidRequest) as caught:
        subtask_depth(limits.SUBTASK_DEPTH.value, "t")
    assert caught.value.details["limit"] == limits.SUBTASK_DEPTH.value
    assert "subtask_depth" in caught.value.message


@pytest.mark.parametrize("field", ["priority", "max_retries", "max_duration"])
def test_a_boolean_is_not_a_number(field: str) -> None:
    # JSON true once became priority 1 (pydantic's lax mode); the API's fuzzing found it accepted
    with pytest.raises(InvalidRequest) as caught:
        TaskOptions(**{field: True})
    assert caught.value.field == field
    with pytest.raises(Exception) as nested:
        SubmitTasksRequest.model_validate({"tasks": [_task(options={field: True})]})
    assert nested.value.errors()[0]["loc"] == ("tasks", 0, "options", field)  # type: ignore[attr-defined]


def test_wait_and_result_flags_are_booleans_and_numbers() -> None:
    for body in ({"ids": ["a"], "values": 1}, {"ids": ["a"], "timeout": True}):
        with pytest.raises(Exception) as caught:
            WaitRequest.model_validate(body)
        assert not isinstance(caught.value, SkyloomError)
    with pytest.raises(Exception) as refused:
        ResultSpec.model_validate({"upload": "yes"})
    assert refused.value.errors()[0]["loc"] == ("upload",)  # type: ignore[attr-defined]

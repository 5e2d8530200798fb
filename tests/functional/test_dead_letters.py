"""The dispatch function drains the dead-letter queues: a dead letter naming a queued task ends that
task in Error (outputs aborted, reason recorded); anything else is deleted and counted."""

from __future__ import annotations

from typing import Any

import pytest

from skyloom.core import clock
from skyloom.core.aws import client
from skyloom.core.config import Settings
from skyloom.core.dispatching import TaskMessage
from skyloom.core.models import ResultModel, TaskModel
from skyloom.core.states import ResultStatus, TaskStatus
from skyloom_server.functions.dispatch import dead_letters


def _task(task_id: str, status: TaskStatus) -> TaskModel:
    now = clock.now()
    t = TaskModel(task_id, session_id="s1", owner="alice", status=status.value, handler="h",
                  expected_outputs=[f"{task_id}-out"], partition="default", created_at=now, updated_at=now,
                  due_shard="0", due_at=now + 60)
    t.save()
    ResultModel(f"{task_id}-out", session_id="s1", owner="alice", status=ResultStatus.CREATED.value,
                owner_task_id=task_id, created_at=now, updated_at=now).save()
    return t


def _dead_letter(settings: Settings, body: str) -> None:
    sqs = client("sqs", settings)
    url = sqs.get_queue_url(QueueName=settings.dlq_name("default", 0))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=body)


def _dlq_depth(settings: Settings) -> int:
    sqs = client("sqs", settings)
    total = 0
    for url in dead_letters.dead_letter_queue_urls(settings):
        attrs: dict[str, Any] = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        total += int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
    return total


def test_dead_letter_of_a_queued_task_ends_it_in_error_and_aborts_its_outputs(aws_stack: Settings) -> None:
    # GIVEN a queued task whose message reached the DLQ
    _task("t-dead", TaskStatus.SUBMITTED)
    _dead_letter(aws_stack, TaskMessage("t-dead", "s1", "default", 0).body())

    # WHEN the dispatch function drains the DLQs
    done = dead_letters.drain(aws_stack)

    # THEN the task is in Error with a reason, its output aborted, the timer cleared, the DLQ empty
    assert done["task_failed"] == 1
    t = TaskModel.get("t-dead", consistent_read=True)
    assert t.status == TaskStatus.ERROR.value
    assert t.error is not None and t.error["type"] == "UndeliverableMessage"
    assert "dead-letter queue" in t.error["message"]
    assert t.due_at is None
    assert ResultModel.get("t-dead-out", consistent_read=True).status == ResultStatus.ABORTED.value
    assert _dlq_depth(aws_stack) == 0


@pytest.mark.parametrize("status", [TaskStatus.PROCESSING, TaskStatus.COMPLETED])
def test_dead_letter_of_a_running_or_finished_task_is_only_deleted(aws_stack: Settings, status: TaskStatus) -> None:
    _task("t-busy", status)
    _dead_letter(aws_stack, TaskMessage("t-busy", "s1", "default", 0).body())

    done = dead_letters.drain(aws_stack)

    assert done["stale"] == 1
    assert TaskModel.get("t-busy", consistent_read=True).status == status.value
    assert ResultModel.get("t-busy-out", consistent_read=True).status == ResultStatus.CREATED.value
    assert _dlq_depth(aws_stack) == 0


def test_undecodable_dead_letters_are_counted_and_deleted(aws_stack: Settings) -> None:
    _dead_letter(aws_stack, "not json at all")
    _dead_letter(aws_stack, '{"v": 99}')

    done = dead_letters.drain(aws_stack)

    assert done["undecodable"] == 2
    assert _dlq_depth(aws_stack) == 0


def test_replaying_a_drain_changes_nothing(aws_stack: Settings) -> None:
    _task("t-once", TaskStatus.SUBMITTED)
    _dead_letter(aws_stack, TaskMessage("t-once", "s1", "default", 0).body())
    dead_letters.drain(aws_stack)
    # The same dead letter delivered again (a crash between the write and the delete).
    _dead_letter(aws_stack, TaskMessage("t-once", "s1", "default", 0).body())

    done = dead_letters.drain(aws_stack)

    assert done == {"stale": 1}
    assert TaskModel.get("t-once", consistent_read=True).status == TaskStatus.ERROR.value


def test_the_dispatch_handler_drains_dead_letters(aws_stack: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from skyloom_server.functions.dispatch import handler as dispatch

    dispatch.reset_settings()
    _dead_letter(aws_stack, "garbage")

    class Ctx:
        function_name = "dispatch"
        memory_limit_in_mb = 128
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:dispatch"
        aws_request_id = "r1"

    out = dispatch.handler({}, Ctx())  # type: ignore[arg-type]
    dispatch.reset_settings()

    assert out["repairs"]["dead_letter_undecodable"] == 1
    assert _dlq_depth(aws_stack) == 0

"""Sending task messages under AWS's own faults (injected below Skyloom, :mod:`skyloom.local.faults`):
a batch whose entries SQS refuses on its side is sent again after a short pause, and the sweeper's
re-send of a lost message that fails is tried again after the base interval, not after as long as
the task has waited (up to a day)."""

from __future__ import annotations

import pytest

from skyloom.core import clock, dispatching
from skyloom.core.config import Settings
from skyloom.core.dispatching import DispatchFailed, TaskMessage
from skyloom.core.models import TaskModel
from skyloom.core.states import TaskStatus
from skyloom.local import faults
from skyloom.local.faults import FaultConfig
from skyloom_server.functions.dispatch import sweeper
from tests.functional.conftest import Db
from tests.functional.test_aws_faults import _task


def test_a_batch_sqs_refuses_on_its_side_is_sent_again(aws_stack: Settings, db: Db) -> None:
    # GIVEN SQS refusing every entry of the next two batches (InternalError, not the sender's fault)
    messages = [TaskMessage(f"t{i}", "s1", "default", 0) for i in range(3)]
    with faults.injecting(FaultConfig(batch_failure=1.0, limit=2, operations=frozenset({"SendMessageBatch"}))):
        # WHEN task messages are sent THEN they all go, on a later try, and no task waits for the sweeper
        assert dispatching.enqueue(aws_stack, messages) == 3
    assert sum(faults.fault_counts()["batch_failure"].values()) >= 2
    assert db.queued_messages() == 3


def test_a_resend_that_fails_is_tried_again_after_the_base_interval(
    aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a task queued an hour ago whose message was lost, now overdue
    base = aws_stack.redispatch_after_seconds
    t = _task("t5", TaskStatus.SUBMITTED, outputs=1)
    now = clock.now()
    t.update(actions=[TaskModel.submitted_at.set(now - 3600), TaskModel.due_at.set(now - 1)])

    # WHEN the sweeper's re-send fails (SQS refuses every entry of the batch, twice)
    with faults.injecting(FaultConfig(batch_failure=1.0, operations=frozenset({"SendMessageBatch"}))):
        assert sweeper.sweep(aws_stack)["error"] == 1
        with pytest.raises(DispatchFailed):
            sweeper.repair(aws_stack, TaskModel.get("t5", consistent_read=True), clock.now())

    # THEN the next try comes after the base interval, not after the hour the task has waited
    due = TaskModel.get("t5", consistent_read=True).due_at
    assert due is not None and due <= clock.now() + base + 1

    # ... and when it comes, the message is sent and the timer then pushed back by the wait
    later = clock.now() + base + 1
    monkeypatch.setattr(clock, "now", lambda: later)
    assert sweeper.sweep(aws_stack)["redispatched"] == 1
    due = TaskModel.get("t5", consistent_read=True).due_at
    assert due is not None and due >= later + 3600

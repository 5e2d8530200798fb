"""AWS's own faults on the failure, cancellation and repair paths, injected below Skyloom.

The faults come from :mod:`skyloom.local.faults` (a botocore ``before-send`` hook answering in
AWS's place, ahead of moto), so the code under test is the production code end to end:

- a transaction that ends a task and aborts its outputs, cancelled by DynamoDB for a transient
  reason (``TransactionConflict``, ``ThrottlingError``), is retried whole: the outputs are aborted
  and whoever waits on them learns why, on all three paths that end a task (a final failed attempt,
  an undeliverable message, a cancellation);
- an output refused by its own condition (no longer the task's) is left out, and only it;
- a transaction that keeps failing writes nothing at all, so the caller's retry settles it fully.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pynamodb.exceptions import TransactWriteError

from skyloom.core import clock, ddb, execution, retries
from skyloom.core.cancellation import cancel_task
from skyloom.core.config import Settings
from skyloom.core.models import ResultModel, TaskModel
from skyloom.core.states import ResultStatus, TaskStatus
from skyloom.local import faults
from skyloom.local.faults import FaultConfig
from skyloom.runtime.outcome import RemoteError
from tests.functional.conftest import Db

#: One transaction in two refused for a transient reason, never for its conditions.
TRANSIENT = {
    "conflict": FaultConfig(transaction_conflict=1.0, limit=1, operations=frozenset({"TransactWriteItems"})),
    "throttled": FaultConfig(throttling=1.0, limit=1, operations=frozenset({"TransactWriteItems"})),
}


def _task(task_id: str, status: TaskStatus, outputs: int = 2, **extra: Any) -> TaskModel:
    now = clock.now()
    t = TaskModel(task_id, session_id="s1", owner="alice", status=status.value, handler="h",
                  expected_outputs=[f"{task_id}-out{i}" for i in range(outputs)], partition="default",
                  created_at=now, updated_at=now, submitted_at=now, due_shard="0", due_at=now + 60, **extra)
    t.save()
    for rid in t.expected_outputs:
        ResultModel(rid, session_id="s1", owner="alice", status=ResultStatus.CREATED.value, owner_task_id=task_id,
                    created_at=now, updated_at=now).save()
    return t


def _claimed(task_id: str, outputs: int = 2) -> TaskModel:
    return _task(task_id, TaskStatus.PROCESSING, outputs, attempt=1, lease_owner="w1",
                 lease_expires=clock.now() + 60, started_at=clock.now(), options={"max_retries": 0})


def _status(task_id: str) -> str:
    return str(TaskModel.get(task_id, consistent_read=True).status)


def _outputs(task_id: str) -> list[str]:
    t = TaskModel.get(task_id, consistent_read=True)
    return [str(ResultModel.get(rid, consistent_read=True).status) for rid in t.expected_outputs]


def _fired(kind: str) -> int:
    return sum(faults.fault_counts().get(kind, {}).values())


def _fail(settings: Settings, task_id: str) -> bool:
    """A worker records its last failed attempt (no retries left)."""
    task = TaskModel.get(task_id, consistent_read=True)
    status = execution.fail(settings, task, "w1", RemoteError(type="ValueError", message="boom", traceback=""))
    return status == TaskStatus.ERROR.value


def _undeliverable(settings: Settings, task_id: str) -> bool:
    """The dispatch function ends a queued task whose message reached the dead-letter queue."""
    return retries.fail_undeliverable(settings, task_id, "dead letter")


def _cancel(settings: Settings, task_id: str) -> bool:
    """A user cancels a task (running or not)."""
    return cancel_task(task_id, None, "cancelled by alice", running_too=True, by="alice")


#: Each way a task ends with its outputs aborted: (how, the task's state before, its state after).
ENDINGS: dict[str, tuple[Callable[[Settings, str], bool], Callable[[str], TaskModel], str]] = {
    "final failure": (_fail, _claimed, TaskStatus.ERROR.value),
    "undeliverable": (_undeliverable, lambda tid: _task(tid, TaskStatus.SUBMITTED), TaskStatus.ERROR.value),
    "cancellation": (_cancel, lambda tid: _task(tid, TaskStatus.PENDING), TaskStatus.CANCELLED.value),
}


@pytest.mark.parametrize("fault", sorted(TRANSIENT))
@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_transiently_cancelled_ending_is_retried_and_aborts_every_output(
    aws_stack: Settings, ending: str, fault: str
) -> None:
    end, prepare, final = ENDINGS[ending]
    # GIVEN a task with two outputs someone waits on
    prepare("t1")
    kind = "transaction_conflict" if fault == "conflict" else "throttling"
    before = _fired(kind)

    # WHEN its ending transaction is cancelled once by DynamoDB for a reason that is not a condition
    with faults.injecting(TRANSIENT[fault]):
        ended = end(aws_stack, "t1")

    # THEN the fault fired, and the task ended together with its outputs: nobody waits forever
    assert _fired(kind) == before + 1
    assert ended
    assert _status("t1") == final
    assert _outputs("t1") == [ResultStatus.ABORTED.value] * 2


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_an_output_no_longer_the_tasks_own_is_left_out_and_only_it(aws_stack: Settings, ending: str) -> None:
    end, prepare, final = ENDINGS[ending]
    # GIVEN a task whose second output was meanwhile delegated to another task
    prepare("t2")
    ResultModel("t2-out1").update(actions=[ResultModel.owner_task_id.set("someone-else")])

    # WHEN the task ends, its transaction meeting a conflict on the way
    with faults.injecting(TRANSIENT["conflict"]):
        assert end(aws_stack, "t2")

    # THEN its own output is aborted; the other stays as its new owner left it
    assert _status("t2") == final
    assert _outputs("t2") == [ResultStatus.ABORTED.value, ResultStatus.CREATED.value]


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_an_ending_that_keeps_failing_writes_nothing_and_a_retry_settles_it(
    aws_stack: Settings, ending: str, db: Db
) -> None:
    end, prepare, final = ENDINGS[ending]
    prepare("t3")
    before, fired = db.snapshot(), _fired("transaction_conflict")

    # WHEN every attempt of its transaction conflicts
    with faults.injecting(FaultConfig(transaction_conflict=1.0)), pytest.raises(TransactWriteError) as refused:
        end(aws_stack, "t3")

    # THEN it fails as what it is (not a refusal by a condition), and nothing was written: no task
    # ended without its outputs ...
    assert refused.value.cause_response_code == "TransactionCanceledException"
    assert not ddb.failed_indexes(refused.value)
    assert db.snapshot() == before
    assert _fired("transaction_conflict") - fired >= ddb.TRANSACTION_ATTEMPTS  # retried, up to the limit
    # ... and the caller's retry (the sweeper, the redelivered message) ends it whole
    assert end(aws_stack, "t3")
    assert _status("t3") == final
    assert _outputs("t3") == [ResultStatus.ABORTED.value] * 2


def test_a_lost_lease_is_not_retried_into_an_ending(aws_stack: Settings) -> None:
    # GIVEN a task another worker holds now
    _claimed("t4")
    task = TaskModel.get("t4", consistent_read=True)
    TaskModel("t4").update(actions=[TaskModel.lease_owner.set("w2")])

    # WHEN the first worker records its failure through a conflict
    with faults.injecting(TRANSIENT["conflict"]):
        status = execution.fail(aws_stack, task, "w1", RemoteError(type="ValueError", message="x", traceback=""))

    # THEN nothing of it is written
    assert status == "lost"
    assert _status("t4") == TaskStatus.PROCESSING.value
    assert _outputs("t4") == [ResultStatus.CREATED.value] * 2

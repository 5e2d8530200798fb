"""Short tasks run on their message's receipt: read, run, one conditional commit (no claim write).

Driven through ``skyloom.core.execution`` exactly as the agent calls it, on moto. What must hold
without a claim: a duplicate delivery runs at most one commit, a cancellation or another attempt
that came first refuses the commit, a long run is claimed in place, and a retry's backoff cannot be
skipped by an early (duplicate) message.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
import pytest

from skyloom.core import clock, execution
from skyloom.core.config import Settings
from skyloom.core.dispatching import TaskMessage, queue_urls_by_priority
from skyloom.core.models import ResultModel, TaskModel
from skyloom.runtime.outcome import RemoteError, TaskOutcome
from skyloom_server.fargate_worker.messages import Held, Mailbox
from tests.functional.conftest import ApiClient


def _submit(api: ApiClient, sid: str, task_id: str, out: str) -> None:
    r = api.call("POST", f"/sessions/{sid}/tasks",
                 {"tasks": [{"id": task_id, "handler": "h", "expected_outputs": [out]}], "results": [{"id": out}]})
    assert r.status == 201, r.raw_body


def _taken(settings: Settings, task_id: str) -> TaskModel:
    """What an agent holds after reading its received batch and taking the message's task."""
    snapshot = execution.read_tasks([task_id])[task_id]
    task = execution.take(settings, TaskMessage(task_id, snapshot.session_id, snapshot.partition, 0), snapshot)
    assert task is not None
    return task


def test_two_deliveries_run_twice_but_commit_once(api: ApiClient, aws_stack: Settings) -> None:
    # GIVEN one task taken by two agents (a duplicate delivery), neither writing anything yet
    sid = api.session()
    _submit(api, sid, "t", "out")
    first, second = _taken(aws_stack, "t"), _taken(aws_stack, "t")
    assert TaskModel.get("t", consistent_read=True).status == "Submitted"
    # WHEN both finish and commit
    assert execution.commit(aws_stack, first, "w1", TaskOutcome(outputs={"out": b"one"}), {})
    assert not execution.commit(aws_stack, second, "w2", TaskOutcome(outputs={"out": b"two"}), {})
    # THEN the first commit won: one attempt, one value
    task = TaskModel.get("t", consistent_read=True)
    assert task.status == "Completed" and task.attempt == 1
    assert [a["worker"] for a in task.attempts] == ["w1"]
    assert ResultModel.get("out", consistent_read=True).inline == b"one"


def test_a_cancellation_refuses_the_commit_of_a_taken_task(api: ApiClient, aws_stack: Settings) -> None:
    sid = api.session()
    _submit(api, sid, "t", "out")
    task = _taken(aws_stack, "t")
    r = api.call("POST", f"/sessions/{sid}/tasks/cancel", {"ids": ["t"]})
    assert r.status == 200, r.raw_body
    assert not execution.commit(aws_stack, task, "w1", TaskOutcome(outputs={"out": b"late"}), {})
    assert TaskModel.get("t", consistent_read=True).status == "Cancelled"
    assert ResultModel.get("out", consistent_read=True).status == "Aborted"


def test_a_long_run_is_claimed_in_place_then_committed_under_its_lease(api: ApiClient, aws_stack: Settings) -> None:
    sid = api.session()
    _submit(api, sid, "t", "out")
    task = _taken(aws_stack, "t")
    # WHEN the heartbeat sees it run long: the claim writes Processing with this worker's lease
    assert execution.heartbeat(aws_stack, task, "w1")
    stored = TaskModel.get("t", consistent_read=True)
    assert (stored.status, stored.lease_owner, stored.attempt) == ("Processing", "w1", 1)
    # THEN a second copy can no longer claim or commit, and the first commits under its lease
    other = execution.read_tasks(["t"])["t"]
    assert execution.take(aws_stack, TaskMessage("t", sid, other.partition, 0), other) is None
    assert execution.commit(aws_stack, task, "w1", TaskOutcome(outputs={"out": b"v"}), {})
    assert TaskModel.get("t", consistent_read=True).status == "Completed"


def test_a_failed_taken_task_is_retried_and_an_early_duplicate_cannot_skip_the_backoff(
    api: ApiClient, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = api.session()
    _submit(api, sid, "t", "out")
    task = _taken(aws_stack, "t")
    # WHEN its attempt fails with retries left: queued again, after a backoff
    status = execution.fail(aws_stack, task, "w1", RemoteError("ValueError", "boom", "tb"))
    assert status == "Submitted"
    stored = TaskModel.get("t", consistent_read=True)
    assert stored.attempt == 1 and stored.not_before is not None and stored.not_before > clock.now()
    # THEN a message received before the backoff is over starts nothing (taken or claimed)...
    message = TaskMessage("t", sid, stored.partition, 0)
    early = stored.not_before - 0.5
    monkeypatch.setattr(clock, "now", lambda: early)
    assert execution.take(aws_stack, message, execution.read_tasks(["t"])["t"]) is None
    assert execution.claim(aws_stack, message, "w2") is None
    # ...and one received after it runs attempt 2
    later = stored.not_before + 0.1
    monkeypatch.setattr(clock, "now", lambda: later)
    retried: Any = execution.take(aws_stack, message, execution.read_tasks(["t"])["t"])
    assert retried is not None
    assert execution.commit(aws_stack, retried, "w2", TaskOutcome(outputs={"out": b"v"}), {})
    done = TaskModel.get("t", consistent_read=True)
    assert done.attempt == 2 and [a["number"] for a in done.attempts] == [1, 2]


def test_a_grouped_commit_writes_every_attempt_still_ours_and_refuses_the_rest(
    api: ApiClient, aws_stack: Settings
) -> None:
    # GIVEN three taken tasks, one of them cancelled meanwhile, and a duplicate of another
    sid = api.session()
    for i in range(3):
        _submit(api, sid, f"t{i}", f"o{i}")
    taken = [_taken(aws_stack, f"t{i}") for i in range(3)]
    duplicate = _taken(aws_stack, "t2")
    assert api.call("POST", f"/sessions/{sid}/tasks/cancel", {"ids": ["t1"]}).status == 200
    commits = [execution.Commit(t, "w1", TaskOutcome(outputs={f"o{i}": b"v%d" % i}), {})
               for i, t in enumerate(taken)]
    commits.append(execution.Commit(duplicate, "w2", TaskOutcome(outputs={"o2": b"dup"}), {}))
    # WHEN they are committed together
    done = execution.commit_many(aws_stack, commits)
    # THEN the cancelled one and the duplicate were refused, the others written, each value once
    assert done == [True, False, True, False]
    assert [TaskModel.get(f"t{i}", consistent_read=True).status for i in range(3)] == [
        "Completed", "Cancelled", "Completed"]
    assert ResultModel.get("o0", consistent_read=True).inline == b"v0"
    assert ResultModel.get("o2", consistent_read=True).inline == b"v2"


# ------------------------------------------------------------------- dependents released by the writer
def _producer_and_consumer(api: ApiClient, sid: str) -> None:
    """p produces a; c waits on a: submitted together, so p's item names c."""
    r = api.call("POST", f"/sessions/{sid}/tasks", {
        "tasks": [{"id": "p", "handler": "h", "expected_outputs": ["a"]},
                  {"id": "c", "handler": "h", "expected_outputs": ["b"], "data_dependencies": ["a"]}],
        "results": [{"id": "a"}, {"id": "b"}]})
    assert r.status == 201, r.raw_body


def test_the_committing_worker_queues_the_dependents_written_with_its_task(api: ApiClient, aws_stack: Settings) -> None:
    # GIVEN a producer and its consumer submitted together (the consumer waits on the producer's output)
    sid = api.session()
    _producer_and_consumer(api, sid)
    assert TaskModel.get("p", consistent_read=True).releases == {"a": ["c"]}
    assert TaskModel.get("c", consistent_read=True).status == "Pending"
    # WHEN the producer commits (no stream record is resolved here)
    assert execution.commit(aws_stack, _taken(aws_stack, "p"), "w1", TaskOutcome(outputs={"a": b"1"}), {})
    # THEN its worker released and queued the consumer itself
    consumer = TaskModel.get("c", consistent_read=True)
    assert consumer.status == "Submitted" and not consumer.remaining


def test_the_stream_leaves_alone_what_the_writer_released(api: ApiClient, aws_stack: Settings) -> None:
    from skyloom.core import readiness
    from skyloom_server.functions.resolve.resolution import on_completed

    sid = api.session()
    _producer_and_consumer(api, sid)
    assert readiness.still_waiting([("c", "a")]) == [("c", "a")]
    assert execution.commit(aws_stack, _taken(aws_stack, "p"), "w1", TaskOutcome(outputs={"a": b"1"}), {})
    before = TaskModel.get("c", consistent_read=True).updated_at
    # WHEN the stream delivers the completion afterwards (and again: at least once)
    assert readiness.still_waiting([("c", "a")]) == []
    assert on_completed(aws_stack, "a", ["c"]).queued == 0
    assert on_completed(aws_stack, "a", ["c"]).queued == 0
    # THEN nothing was written to the consumer again
    assert TaskModel.get("c", consistent_read=True).updated_at == before


def test_a_released_but_unreadied_dependent_is_readied_by_the_stream(api: ApiClient, aws_stack: Settings) -> None:
    from skyloom.core import readiness
    from skyloom_server.functions.resolve.resolution import on_completed

    sid = api.session()
    _producer_and_consumer(api, sid)
    # GIVEN the writer released the dependency and died before readying the task
    readiness.release("c", "a")
    assert TaskModel.get("c", consistent_read=True).status == "Pending"
    # THEN the stream's resolve readies it
    assert on_completed(aws_stack, "a", ["c"]).queued == 1
    assert TaskModel.get("c", consistent_read=True).status == "Submitted"


def test_a_subtask_taking_over_an_output_releases_its_dependents_too(api: ApiClient, aws_stack: Settings) -> None:
    from skyloom.runtime.outcome import StagedTask

    sid = api.session()
    _producer_and_consumer(api, sid)
    # WHEN the producer delegates its output to a subtask (the recursive tree's join)
    staged = TaskOutcome(staged_tasks=[StagedTask("s", "h", b"", [], ["a"])])
    assert execution.commit(aws_stack, _taken(aws_stack, "p"), "w1", staged, {})
    # THEN the subtask's item names the dependent, and its commit queues it
    assert TaskModel.get("s", consistent_read=True).releases == {"a": ["c"]}
    assert TaskModel.get("c", consistent_read=True).status == "Pending"
    assert execution.commit(aws_stack, _taken(aws_stack, "s"), "w2", TaskOutcome(outputs={"a": b"1"}), {})
    assert TaskModel.get("c", consistent_read=True).status == "Submitted"


class _Agent:
    """An agent's SQS side on the stack's queues, receiving as the agent's poller does."""

    def __init__(self, settings: Settings) -> None:
        self.sqs = boto3.client("sqs", region_name=settings.region)
        self.mailbox = Mailbox(self.sqs, visibility_timeout=30, beat_every=10.0, count=lambda _: None)
        self.plan = [(url, 0) for url in queue_urls_by_priority(settings, "default")]

    def receive_one(self) -> Held:
        received = self.mailbox.receive(self.plan, 10, threading.Event())
        assert received is not None and len(received) == 1
        return received[0]


def test_a_first_delivery_is_taken_from_the_item_its_message_carries_and_a_later_one_is_read(
    api: ApiClient, aws_stack: Settings
) -> None:
    # GIVEN a task just submitted: the submit route sent its message after writing it
    sid = api.session()
    _submit(api, sid, "t", "out")
    agent = _Agent(aws_stack)
    # WHEN an agent receives it for the first time
    held = agent.receive_one()
    # THEN it holds the task's item as written, without having read it
    assert held.read and held.snapshot is not None
    assert held.snapshot.serialize() == TaskModel.get("t", consistent_read=True).serialize()
    # WHEN the message comes back (a lost attempt), THEN that delivery is read like any other
    agent.sqs.change_message_visibility(QueueUrl=held.queue_url, ReceiptHandle=held.receipt, VisibilityTimeout=0)
    again = agent.receive_one()
    assert not again.read and again.snapshot is None
    # AND the task taken from the item commits as one taken from a read would
    task = execution.take(aws_stack, held.message, held.snapshot)
    assert task is not None
    assert execution.commit(aws_stack, task, "w1", TaskOutcome(outputs={"out": b"v"}), {})
    assert TaskModel.get("t", consistent_read=True).status == "Completed"
    assert ResultModel.get("out", consistent_read=True).inline == b"v"


def test_a_task_cancelled_after_its_message_left_cannot_commit_from_the_carried_item(
    api: ApiClient, aws_stack: Settings
) -> None:
    sid = api.session()
    _submit(api, sid, "t", "out")
    r = api.call("POST", f"/sessions/{sid}/tasks/cancel", {"ids": ["t"]})
    assert r.status == 200, r.raw_body
    held = _Agent(aws_stack).receive_one()
    assert held.read  # the item as sent: Submitted
    task = execution.take(aws_stack, held.message, held.snapshot)
    assert task is not None
    assert not execution.commit(aws_stack, task, "w1", TaskOutcome(outputs={"out": b"late"}), {})
    assert TaskModel.get("t", consistent_read=True).status == "Cancelled"
    assert ResultModel.get("out", consistent_read=True).status == "Aborted"


def test_a_dependent_released_by_the_committing_worker_gets_a_message_carrying_its_item(
    api: ApiClient, aws_stack: Settings
) -> None:
    # GIVEN a producer and its consumer, the producer's message received and taken
    sid = api.session()
    _producer_and_consumer(api, sid)
    agent = _Agent(aws_stack)
    producer = agent.receive_one()
    assert producer.message.task_id == "p" and producer.snapshot is not None
    task = execution.take(aws_stack, producer.message, producer.snapshot)
    assert task is not None
    # WHEN the producer commits, releasing and queueing the consumer
    assert execution.commit(aws_stack, task, "w1", TaskOutcome(outputs={"a": b"1"}), {})
    # THEN the consumer's message carries its item as the ready write left it: no read needed
    consumer = agent.receive_one()
    assert consumer.message.task_id == "c" and consumer.read and consumer.snapshot is not None
    assert consumer.snapshot.serialize() == TaskModel.get("c", consistent_read=True).serialize()

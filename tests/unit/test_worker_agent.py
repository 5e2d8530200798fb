"""The worker agent's loop, with no AWS and no processes (its pure decisions: test_worker_policy).

The loop runs against in-memory fakes: an SQS with visibility timeouts, the execution operations over a dict of
tasks, and a child whose behaviour is picked by handler name. The same loop against moto and real
child processes is covered by the end-to-end tests.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from skyloom.core.commits import Commit
from skyloom.core.config import Settings
from skyloom.core.dispatching import TaskMessage
from skyloom.core.models import TaskModel
from skyloom.core.resources import PartitionSpec
from skyloom.errors import Conflict
from skyloom.runtime.outcome import RemoteError, TaskInput, TaskLog, TaskOutcome
from skyloom_server.fargate_worker import attempt
from skyloom_server.fargate_worker.agent import Agent
from skyloom_server.fargate_worker.attempt import INPUT_ERROR
from skyloom_server.fargate_worker.child import TIMEOUT_ERROR, ChildResult, Ending
from skyloom_server.fargate_worker.settings import WorkerSettings

pytestmark = pytest.mark.timeout(60)

HIGH, LOW = "q-high", "q-low"
ERR = RemoteError("ValueError", "boom", "tb")


# ------------------------------------------------------------------------------------ fakes
@dataclass
class FakeMessage:
    id: str
    body: str
    receipt: str = ""
    invisible_until: float = 0.0
    receives: int = 0


class FakeSqs:
    """Just enough SQS: visibility timeouts, receipt handles, injected failures, a call log."""

    def __init__(self) -> None:
        self.queues: dict[str, list[FakeMessage]] = {HIGH: [], LOW: []}
        self.calls: list[tuple[str, Any]] = []
        self.failures: dict[str, int] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def send(self, url: str, body: str) -> None:
        self.queues[url].append(FakeMessage(f"m{next(self._ids)}", body))

    def _fail(self, op: str) -> None:
        if self.failures.get(op, 0) > 0:
            self.failures[op] -= 1
            raise ConnectionError(f"injected {op} failure")

    def receive_message(self, *, QueueUrl: str, MaxNumberOfMessages: int, WaitTimeSeconds: int,
                        VisibilityTimeout: int, MessageSystemAttributeNames: list[str]) -> dict[str, Any]:
        self._fail("receive_message")
        now = time.monotonic()
        with self._lock:
            got = [m for m in self.queues[QueueUrl] if m.invisible_until <= now][:MaxNumberOfMessages]
            for m in got:
                m.receives += 1
                m.receipt = f"{m.id}-r{m.receives}"
                m.invisible_until = now + VisibilityTimeout
            self.calls.append(("receive", (QueueUrl, WaitTimeSeconds, len(got))))
        if not got and WaitTimeSeconds:
            # An empty long poll returns after a while: long for the upper levels' own pollers.
            time.sleep(0.2 if WaitTimeSeconds >= 5 else 0.02)
        return {"Messages": [{"MessageId": m.id, "ReceiptHandle": m.receipt, "Body": m.body,
                              "Attributes": {"ApproximateReceiveCount": str(m.receives)}} for m in got]}

    def _find(self, url: str, receipt: str) -> FakeMessage:
        for m in self.queues[url]:
            if m.receipt == receipt:
                return m
        raise KeyError(receipt)

    def delete_message(self, *, QueueUrl: str, ReceiptHandle: str) -> None:
        self._fail("delete_message")
        with self._lock:
            self.queues[QueueUrl].remove(self._find(QueueUrl, ReceiptHandle))
            self.calls.append(("delete", ReceiptHandle))

    def delete_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self._fail("delete_message_batch")
        ok, failed = [], []
        for e in Entries:
            try:
                self.delete_message(QueueUrl=QueueUrl, ReceiptHandle=e["ReceiptHandle"])
                ok.append({"Id": e["Id"]})
            except KeyError:
                failed.append({"Id": e["Id"], "Code": "ReceiptHandleIsInvalid", "SenderFault": True})
        self.calls.append(("delete_batch", len(Entries)))
        return {"Successful": ok, "Failed": failed}

    def change_message_visibility(self, *, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int) -> None:
        with self._lock:
            self._find(QueueUrl, ReceiptHandle).invisible_until = time.monotonic() + VisibilityTimeout
            self.calls.append(("visibility", (ReceiptHandle, VisibilityTimeout)))

    def change_message_visibility_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        ok, failed = [], []
        for e in Entries:
            try:
                self.change_message_visibility(QueueUrl=QueueUrl, ReceiptHandle=e["ReceiptHandle"],
                                               VisibilityTimeout=e["VisibilityTimeout"])
                ok.append({"Id": e["Id"]})
            except KeyError:
                failed.append({"Id": e["Id"], "Code": "ReceiptHandleIsInvalid", "SenderFault": True})
        self.calls.append(("visibility_batch", len(Entries)))
        return {"Successful": ok, "Failed": failed}

    def left(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def visible_now(self) -> int:
        now = time.monotonic()
        return sum(1 for q in self.queues.values() for m in q if m.invisible_until <= now)

    def ops(self, name: str) -> list[Any]:
        return [args for op, args in self.calls if op == name]


@dataclass
class FakeOps:
    """skyloom.core.execution over a dict: a task is claimable once, while Submitted."""

    status: dict[str, str] = field(default_factory=dict)
    handler: dict[str, str] = field(default_factory=dict)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    lease_ok: bool = True
    failures: dict[str, int] = field(default_factory=dict)
    #: Failures for AWS's reasons (botocore could not reach the endpoint), by operation.
    outages: dict[str, int] = field(default_factory=dict)
    #: What fail() answers: "Error" (no retries left), "Submitted" (retried) or "lost".
    fail_status: str = "Error"
    #: How long a (grouped) commit takes.
    commit_seconds: float = 0.0
    #: The task ids of each grouped commit.
    groups: list[list[str]] = field(default_factory=list)
    #: What each reported attempt printed, as handed to complete() or fail().
    logs: dict[str, TaskLog | None] = field(default_factory=dict)

    def add(self, task_id: str, handler: str = "ok", status: str = "Submitted", **options: Any) -> TaskMessage:
        self.status[task_id], self.handler[task_id], self.options[task_id] = status, handler, options
        return TaskMessage(task_id, "s1", "default", 0)

    def _record(self, op: str, task_id: str, detail: Any = None) -> None:
        self.calls.append((op, task_id, detail))
        if self.failures.get(op, 0) > 0:
            self.failures[op] -= 1
            raise ConnectionError(f"injected {op} failure")
        if self.outages.get(op, 0) > 0:
            self.outages[op] -= 1
            raise EndpointConnectionError(endpoint_url=f"https://dynamodb/{op}")

    def of(self, op: str) -> list[tuple[str, Any]]:
        return [(t, d) for o, t, d in self.calls if o == op]

    def claim(self, settings: Settings, message: TaskMessage, worker_id: str) -> TaskModel | None:
        self._record("claim", message.task_id)
        if self.status.get(message.task_id) != "Submitted":
            return None
        self.status[message.task_id] = "Processing"
        return TaskModel(message.task_id, session_id="s1", handler=self.handler[message.task_id], attempt=1,
                         submitted_at=time.time() - 2.0, options=self.options[message.task_id])

    def heartbeat(self, settings: Settings, task: TaskModel, worker_id: str) -> bool:
        self._record("heartbeat", task.task_id)
        return self.lease_ok

    def load_inputs(self, settings: Settings, task: TaskModel) -> TaskInput:
        self._record("load_inputs", task.task_id)
        return TaskInput(task.task_id, task.session_id, task.handler, b"payload", {"d": b"dep"}, ["out"],
                         dict(task.options))

    def commit(self, settings: Settings, task: TaskModel, worker_id: str, outcome: TaskOutcome,
                 metrics: dict[str, float], log: TaskLog | None = None) -> bool:
        self._record("commit", task.task_id, dict(metrics))
        self.logs[task.task_id] = log
        self.status[task.task_id] = "Completed"
        return True

    def commit_many(self, settings: Settings, commits: list[Commit]) -> list[bool]:
        self.groups.append([c.task.task_id for c in commits])
        time.sleep(self.commit_seconds)
        return [self.commit(settings, c.task, c.worker_id, c.outcome, c.metrics, c.log) for c in commits]

    def fail(self, settings: Settings, task: TaskModel, worker_id: str, error: RemoteError, *,
             timed_out: bool = False, log: TaskLog | None = None) -> str:
        self._record("fail", task.task_id, (error, timed_out))
        self.logs[task.task_id] = log
        self.status[task.task_id] = self.fail_status
        return self.fail_status

    def give_back(self, settings: Settings, task: TaskModel, worker_id: str) -> bool:
        self._record("give_back", task.task_id)
        self.status[task.task_id] = "Submitted"
        return True


class FakeChild:
    """A child whose behaviour is the handler name; "slow" runs until ``finish`` or kill()."""

    finish = threading.Event()
    pid: int | None = None  # no process: the memory watch has nothing to sample

    def __init__(self) -> None:
        self.killed = threading.Event()
        self.running = threading.Event()
        self.closed = False
        self.started = False
        self.ran: list[str] = []

    def start(self) -> None:
        self.started = True

    def execute(self, inp: TaskInput, timeout: float | None = None, *,
                sent: Callable[[], None] | None = None) -> ChildResult:
        self.killed.clear()
        self.ran.append(inp.task_id)
        if sent is not None:
            sent()
        h = inp.handler
        if h == "ok":
            return ChildResult(TaskOutcome(outputs={"out": b"result"}), Ending.RETURNED, 0.25)
        if h == "big":  # a child that says how much memory the task took at its peak
            return ChildResult(TaskOutcome(outputs={"out": b"result"}), Ending.RETURNED, 0.25, 300 << 20)
        if h == "raise":
            return ChildResult(TaskOutcome(error=ERR), Ending.RETURNED, 0.1, log=TaskLog(b"about to raise\n"))
        if h == "printing":
            return ChildResult(TaskOutcome(outputs={"out": b"result"}), Ending.RETURNED, 0.1,
                               log=TaskLog(b"step 3 of 3\n", cut=100))
        if h == "timeout":
            assert timeout == inp.options["max_duration"]
            return ChildResult(TaskOutcome(error=RemoteError(TIMEOUT_ERROR, "slow", "")), Ending.TIMEOUT, timeout,
                               log=TaskLog(b"still going\n"))
        assert h == "slow", h
        self.running.set()
        while not (self.killed.is_set() or FakeChild.finish.is_set()):
            time.sleep(0.01)
        self.running.clear()
        if self.killed.is_set():
            return ChildResult(TaskOutcome(error=RemoteError("TaskKilled", "", "")), Ending.KILLED, 0.1)
        return ChildResult(TaskOutcome(outputs={"out": b"late"}), Ending.RETURNED, 0.1)

    def kill(self) -> None:
        self.killed.set()

    def close(self) -> None:
        self.closed = True


@dataclass
class Harness:
    sqs: FakeSqs
    ops: FakeOps
    children: list[FakeChild]
    make: Callable[..., Agent]

    def submit(self, task_id: str, handler: str = "ok", url: str = HIGH, **options: Any) -> None:
        self.sqs.send(url, self.ops.add(task_id, handler, **options).body())


@pytest.fixture
def h(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setattr("skyloom_server.fargate_worker.agent.queue_urls_by_priority", lambda s, p: [HIGH, LOW])
    FakeChild.finish.clear()
    settings = Settings(stack="utest", partitions=(PartitionSpec("default", priority_levels=2),),
                        lease_seconds=0.3, visibility_timeout=30)
    sqs, ops, children = FakeSqs(), FakeOps(), []

    def child() -> FakeChild:
        c = FakeChild()
        children.append(c)
        return c

    def make(**config: Any) -> Agent:
        config.setdefault("slots", 1)  # the production default is one per vCPU
        config.setdefault("prefetch", 0)  # tests that want it say so
        return Agent(settings, WorkerSettings(**config), ops=ops, sqs=sqs, child_factory=child,  # type: ignore[arg-type]
                     worker_id="w-test")

    yield Harness(sqs, ops, children, make)
    FakeChild.finish.set()  # never leave a slow fake running


def run_in_thread(agent: Agent) -> tuple[threading.Thread, list[int]]:
    codes: list[int] = []
    t = threading.Thread(target=lambda: codes.append(agent.run()), daemon=True)
    t.start()
    return t, codes


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# ------------------------------------------------------------------------------- the loop
def test_burst_completes_every_task_deletes_its_message_and_exits(h: Harness) -> None:
    # GIVEN two ready tasks
    h.submit("t1")
    h.submit("t2")
    # WHEN a burst agent runs (in the main thread: it installs and restores signal handlers)
    code = h.make(burst=True).run()
    # THEN both were completed, with their metrics, and their messages deleted
    assert code == 0
    assert [t for t, _ in h.ops.of("commit")] == ["t1", "t2"]
    metrics = h.ops.of("commit")[0][1]
    assert set(metrics) == {"queue_wait", "fetch", "bytes_in", "compute", "bytes_out"}
    assert metrics["queue_wait"] >= 2.0 and metrics["compute"] == 0.25
    assert metrics["bytes_in"] == len(b"payload") + len(b"dep") and metrics["bytes_out"] == len(b"result")
    assert h.sqs.left() == 0
    assert all(c.started and c.closed for c in h.children)  # warmed up before work, closed at exit


def test_the_high_priority_queue_is_drained_first(h: Harness) -> None:
    h.submit("low", url=LOW)
    h.submit("high", url=HIGH)
    h.make(burst=True).run()
    assert [t for t, _ in h.ops.of("claim")] == ["high", "low"]


def test_short_tasks_are_received_ten_at_a_time_and_empty_upper_levels_rarely_polled(h: Harness) -> None:
    for i in range(40):
        h.submit(f"t{i}", url=LOW)
    h.make(burst=True, prefetch=1).run()
    assert len(h.ops.of("commit")) == 40
    receives = [args for op, args in h.sqs.calls if op == "receive"]
    fetched = [n for url, _, n in receives if n]
    # The first receive asks for slots + prefetch; once a task's duration is known, whole batches.
    assert len(fetched) <= 8 and max(fetched) == 10
    # The empty high level is short-polled only while the agent is idle (it has a long poll of its own).
    assert sum(1 for url, wait, _ in receives if url == HIGH and wait == 0) <= 3


def test_successes_finished_while_a_commit_is_under_way_share_the_next_commit(h: Harness) -> None:
    # GIVEN commits that take as long as a few short tasks
    h.ops.commit_seconds = 0.05
    for i in range(30):
        h.submit(f"t{i}", url=LOW)
    # WHEN one slot runs them, its reporter committing behind it
    h.make(burst=True, prefetch=1).run()
    # THEN each task was committed once, and the commits carried several tasks each
    assert sorted(t for t, _ in h.ops.of("commit")) == sorted(f"t{i}" for i in range(30))
    assert len(h.ops.groups) < 30 and max(len(g) for g in h.ops.groups) > 1
    assert h.sqs.left() == 0


def test_a_message_that_cannot_be_claimed_is_deleted_without_running(h: Harness) -> None:
    h.sqs.send(HIGH, h.ops.add("done", status="Completed").body())  # a duplicate of a finished task
    h.make(burst=True).run()
    assert h.ops.of("claim") == [("done", None)]
    assert not h.ops.of("commit") and not h.ops.of("load_inputs")
    assert h.sqs.left() == 0


def test_a_failing_task_is_reported_with_its_error(h: Harness) -> None:
    h.submit("bad", "raise")
    h.make(burst=True).run()
    [(task_id, (error, timed_out))] = h.ops.of("fail")
    assert task_id == "bad" and error == ERR and not timed_out
    assert h.sqs.left() == 0


def test_a_timeout_is_reported_as_such(h: Harness) -> None:
    h.submit("slowpoke", "timeout", max_duration=1.5)
    h.make(burst=True).run()
    [(_, (error, timed_out))] = h.ops.of("fail")
    assert timed_out and error.type == TIMEOUT_ERROR


@pytest.mark.parametrize("overlap", [True, False])
def test_what_each_attempt_printed_reaches_its_commit_or_failure(h: Harness, overlap: bool) -> None:
    # GIVEN tasks that print and succeed, raise, or time out (reported by a reporter thread or the slot)
    h.submit("ok", "printing")
    h.submit("bad", "raise")
    h.submit("slowpoke", "timeout", max_duration=1.5)
    h.make(burst=True, overlap_reports=overlap).run()
    # THEN each report carries its attempt's log, also the timed-out one
    assert h.ops.logs == {"ok": TaskLog(b"step 3 of 3\n", cut=100), "bad": TaskLog(b"about to raise\n"),
                          "slowpoke": TaskLog(b"still going\n")}


def test_inputs_that_cannot_be_loaded_fail_the_attempt(h: Harness) -> None:
    h.submit("t1")
    h.ops.failures["load_inputs"] = 1
    h.make(burst=True).run()
    [(_, (error, _))] = h.ops.of("fail")
    assert error.type == INPUT_ERROR and error.retryable and "injected" in error.message
    assert not h.children[0].ran  # nothing ran


def test_a_missing_input_is_not_retryable(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.submit("t1")

    def missing(settings: Settings, task: TaskModel) -> TaskInput:
        raise Conflict("input r1 is Deleted, not Completed")

    monkeypatch.setattr(h.ops, "load_inputs", missing)
    h.make(burst=True).run()
    [(_, (error, _))] = h.ops.of("fail")
    assert not error.retryable


def test_an_undecodable_message_is_left_for_the_dead_letter_queue(h: Harness) -> None:
    h.sqs.send(HIGH, "not json")
    h.submit("t1")
    agent = h.make(burst=True)
    assert agent.run() == 0
    assert agent.stats["undecodable"] == 1
    # still there, still invisible: neither deleted nor made visible again
    assert h.sqs.left() == 1 and h.sqs.visible_now() == 0
    assert [t for t, _ in h.ops.of("commit")] == ["t1"]


def test_max_tasks_receives_no_more_than_it_will_run(h: Harness) -> None:
    for i in range(3):
        h.submit(f"t{i}")
    h.make(max_tasks=1, slots=2).run()
    assert [t for t, _ in h.ops.of("claim")] == ["t0"]
    assert h.sqs.left() == 2 and h.sqs.visible_now() == 2


def test_slots_run_tasks_concurrently(h: Harness) -> None:
    h.submit("a", "slow")
    h.submit("b", "slow")
    agent = h.make(slots=2, burst=True)
    t, codes = run_in_thread(agent)
    wait_for(lambda: all(c.running.is_set() for c in h.children))
    FakeChild.finish.set()
    t.join(10)
    assert codes == [0]
    assert sorted(t for t, _ in h.ops.of("commit")) == ["a", "b"]


def test_the_heartbeat_extends_lease_and_visibility_while_a_task_runs(h: Harness) -> None:
    h.submit("t1", "slow")
    t, codes = run_in_thread(h.make(burst=True))
    time.sleep(0.5)  # lease 0.3 s: a beat every 0.1 s
    FakeChild.finish.set()
    t.join(10)
    assert codes == [0]
    assert len(h.ops.of("heartbeat")) >= 2
    assert any(vt == 30 for _, vt in h.sqs.ops("visibility"))
    assert [x for x, _ in h.ops.of("commit")] == ["t1"]


def test_a_lost_lease_kills_the_task_and_reports_nothing(h: Harness) -> None:
    # GIVEN a running task whose lease another worker took over
    h.submit("t1", "slow")
    h.ops.lease_ok = False
    agent = h.make(burst=True)
    t, codes = run_in_thread(agent)
    t.join(10)
    # THEN its child was killed and neither complete nor fail nor release was called
    assert codes == [0] and h.children[0].killed.is_set()
    assert not (h.ops.of("commit") or h.ops.of("fail") or h.ops.of("give_back"))
    assert agent.stats["dropped"] == 1
    # AND the message was made visible at once, so the next claim() decides with DynamoDB's state
    # (here: still Processing under the new owner, so not claimable: deleted)
    assert (h.sqs.ops("visibility")[-1][1]) == 0
    assert [t for t, _ in h.ops.of("claim")] == ["t1", "t1"]
    assert agent.stats["unclaimable"] == 1 and h.sqs.left() == 0


def test_sigterm_lets_the_running_task_finish_and_takes_nothing_new(h: Harness) -> None:
    h.submit("running", "slow")
    h.submit("waiting")
    agent = h.make(grace_seconds=30)
    t, codes = run_in_thread(agent)
    wait_for(h.children[0].running.is_set)
    # WHEN SIGTERM arrives (request_stop is what the handler calls)
    agent.request_stop("SIGTERM")
    time.sleep(0.3)
    assert t.is_alive()  # still draining
    FakeChild.finish.set()
    t.join(10)
    # THEN the running task completed and the other one was never taken
    assert codes == [0]
    assert [x for x, _ in h.ops.of("commit")] == ["running"]
    assert [x for x, _ in h.ops.of("claim")] == ["running"]
    assert h.sqs.left() == 1 and h.sqs.visible_now() == 1


def test_past_the_grace_period_running_tasks_are_given_back(h: Harness) -> None:
    h.submit("stuck", "slow")
    agent = h.make(grace_seconds=0.3)
    t, codes = run_in_thread(agent)
    wait_for(h.children[0].running.is_set)
    agent.request_stop("SIGTERM")
    t.join(10)
    assert codes == [0]
    assert h.children[0].killed.is_set()
    assert h.ops.of("give_back") == [("stuck", None)] and not h.ops.of("fail")
    assert h.ops.status["stuck"] == "Submitted" and h.sqs.visible_now() == 1  # at once, for another agent


def test_a_second_signal_gives_everything_back_at_once(h: Harness) -> None:
    h.submit("stuck", "slow")
    agent = h.make(grace_seconds=100)
    t, codes = run_in_thread(agent)
    wait_for(h.children[0].running.is_set)
    agent.request_stop("SIGTERM")
    agent.request_stop("SIGTERM")
    t.join(10)
    assert codes == [0]
    assert h.ops.of("give_back") == [("stuck", None)] and h.sqs.visible_now() == 1


def test_received_but_unstarted_messages_are_given_back_on_stop(h: Harness) -> None:
    # GIVEN a message received by the poller but not picked by a slot yet
    agent = h.make()
    h.submit("t1")
    received = agent._mailbox.receive([(HIGH, 1)], 1, agent._stop.stop)
    assert received is not None
    agent._ledger.admit(received)
    agent._pool.hand(received)
    # WHEN the agent stops before a slot takes it
    agent._stop.stop.set()
    agent._pool.give_back_unstarted()
    agent._mailbox.flush()
    # THEN it is visible again at once and nothing ran
    assert h.sqs.visible_now() == 1 and not h.ops.calls
    assert agent._ledger.in_flight == 0


def test_aws_errors_do_not_kill_the_agent(h: Harness) -> None:
    # GIVEN a receive that fails once and a complete that fails once
    h.submit("t1")
    h.submit("t2")
    h.sqs.failures["receive_message"] = 1
    h.ops.failures["commit"] = 1
    agent = h.make(burst=True)
    # WHEN the agent runs
    code = agent.run()
    # THEN it carried on: the failed commit's message is left (to come back after its visibility
    # timeout) and the task to the lease sweeper; the other task completed
    assert code == 0
    assert [x for x, _ in h.ops.of("commit")] == ["t1", "t2"]
    assert h.ops.status == {"t1": "Processing", "t2": "Completed"}
    assert h.sqs.left() == 1 and h.sqs.visible_now() == 0


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attempt, "AWS_RETRY_BACKOFF", (0.01, 0.02))


@pytest.mark.parametrize("op", ["claim", "load_inputs", "commit"])
def test_a_step_failing_for_aws_reasons_is_tried_again_not_charged(h: Harness, quick_retries: None, op: str) -> None:
    # GIVEN AWS unreachable for the first two tries of one step of the attempt
    h.submit("t1")
    h.ops.outages[op] = 2
    # WHEN the agent runs
    assert h.make(burst=True).run() == 0
    # THEN the step was tried again and the task completed, with no attempt charged to it
    assert len(h.ops.of(op)) == 3
    assert h.ops.status == {"t1": "Completed"} and not h.ops.of("fail")
    assert h.sqs.left() == 0


def test_a_failure_record_failing_for_aws_reasons_is_tried_again(h: Harness, quick_retries: None) -> None:
    h.submit("t1", "raise")
    h.ops.outages["fail"] = 2
    assert h.make(burst=True).run() == 0
    assert len(h.ops.of("fail")) == 3 and h.ops.status == {"t1": "Error"}
    assert h.sqs.left() == 0


def test_inputs_that_stay_unreachable_give_the_task_back_uncounted(
    h: Harness, quick_retries: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN AWS unreachable for longer than an attempt keeps trying
    monkeypatch.setattr(attempt, "AWS_RETRY_SECONDS", 0.1)
    h.submit("t1")
    h.ops.outages["load_inputs"] = 10**6
    agent = h.make(max_tasks=1)
    t, codes = run_in_thread(agent)
    wait_for(lambda: bool(h.ops.of("give_back")))
    agent.request_stop()
    t.join(10)
    assert codes == [0]
    # THEN the task is given back, not failed: AWS's outage is not the task's attempt
    assert not h.ops.of("fail") and not h.children[0].ran
    assert h.ops.status["t1"] == "Submitted"


def test_an_unknown_partition_exits_2(h: Harness) -> None:
    assert h.make(partition="nope", burst=True).run() == 2


def test_a_slot_starts_its_next_task_while_the_previous_one_is_reported(h: Harness) -> None:
    # GIVEN one slot, two tasks, and a commit that takes a while (S3 upload + transaction)
    h.submit("a")
    h.submit("b")
    committing = threading.Event()
    release = threading.Event()
    original = h.ops.commit

    def slow_complete(*args: Any, **kwargs: Any) -> bool:
        committing.set()
        release.wait(10)
        return original(*args, **kwargs)

    h.ops.commit = slow_complete  # type: ignore[method-assign]
    t, codes = run_in_thread(h.make(slots=1, burst=True))

    # WHEN the first commit is under way, THEN the second task is already claimed and run
    wait_for(committing.is_set)
    wait_for(lambda: [tid for tid, _ in h.ops.of("claim")] == ["a", "b"])
    release.set()
    t.join(10)
    assert codes == [0]
    assert sorted(tid for tid, _ in h.ops.of("commit")) == ["a", "b"]
    assert h.sqs.left() == 0


def test_a_finished_attempt_is_reported_once_the_child_has_the_next_task(h: Harness) -> None:
    # GIVEN a slot running a task while the next one is prefetched
    h.submit("a", "slow")
    h.submit("b")
    agent = h.make(slots=1, prefetch=1, burst=True)
    child = h.children[0]
    commits_when_started: dict[str, list[str]] = {}
    run = child.execute

    def watched(inp: TaskInput, timeout: float | None = None, *,
                sent: Callable[[], None] | None = None) -> ChildResult:
        time.sleep(0.2)  # time enough for a reporter to commit the last attempt, were it handed over
        commits_when_started[inp.task_id] = [t for t, _ in h.ops.of("commit")]
        return run(inp, timeout, sent=sent)

    child.execute = watched  # type: ignore[method-assign]
    t, codes = run_in_thread(agent)
    wait_for(lambda: [x for x, _ in h.ops.of("load_inputs")] == ["a", "b"])
    # WHEN the first task ends
    FakeChild.finish.set()
    t.join(10)
    # THEN its commit waited for the next task to reach the child, not for that task to end
    assert codes == [0]
    assert commits_when_started == {"a": [], "b": []}
    assert sorted(x for x, _ in h.ops.of("commit")) == ["a", "b"]
    assert h.sqs.left() == 0


def test_a_finished_attempt_with_nothing_after_it_is_reported_at_once(h: Harness) -> None:
    h.submit("a")
    agent = h.make(slots=1, prefetch=1)  # not a burst: the agent keeps polling an empty queue
    t, _ = run_in_thread(agent)
    wait_for(lambda: [x for x, _ in h.ops.of("commit")] == ["a"])
    wait_for(lambda: h.sqs.left() == 0)
    agent.request_stop("SIGTERM")
    t.join(10)
    assert not t.is_alive()


def test_reports_inline_when_overlap_is_off(h: Harness) -> None:
    h.submit("a")
    h.submit("b")
    t, codes = run_in_thread(h.make(slots=1, burst=True, overlap_reports=False))
    t.join(10)
    assert codes == [0]
    assert [tid for tid, _ in h.ops.of("commit")] == ["a", "b"]


def test_max_tasks_counts_attempts_still_being_reported(h: Harness) -> None:
    for tid in ("a", "b", "c"):
        h.submit(tid)
    h.make(max_tasks=1, slots=1).run()
    assert [tid for tid, _ in h.ops.of("claim")] == ["a"]


def test_prefetch_claims_and_loads_the_next_task_while_one_computes(h: Harness) -> None:
    h.submit("first", "slow")
    h.submit("second")
    t, codes = run_in_thread(h.make(slots=1, prefetch=1, burst=True))
    wait_for(h.children[0].running.is_set)
    # WHILE the only slot computes, the next task is already claimed and its inputs loaded
    wait_for(lambda: [x for x, _ in h.ops.of("claim")] == ["first", "second"])
    wait_for(lambda: [x for x, _ in h.ops.of("load_inputs")] == ["first", "second"])
    assert h.ops.of("commit") == []
    FakeChild.finish.set()
    t.join(10)
    assert codes == [0]
    assert sorted(x for x, _ in h.ops.of("commit")) == ["first", "second"]
    assert h.sqs.left() == 0


def test_sigterm_releases_a_prefetched_task_at_once(h: Harness) -> None:
    h.submit("running", "slow")
    h.submit("prefetched")
    agent = h.make(slots=1, prefetch=1, grace_seconds=30)
    t, codes = run_in_thread(agent)
    wait_for(h.children[0].running.is_set)
    wait_for(lambda: len(h.ops.of("claim")) == 2)
    agent.request_stop("SIGTERM")
    # THEN the prefetched task is given back (uncounted, visible) while the running one finishes
    wait_for(lambda: [x for x, _ in h.ops.of("give_back")] == ["prefetched"])
    wait_for(lambda: h.sqs.visible_now() == 1)
    FakeChild.finish.set()
    t.join(10)
    assert codes == [0]
    assert [x for x, _ in h.ops.of("commit")] == ["running"]
    assert h.ops.status["prefetched"] == "Submitted"


# ------------------------------------------------------------------------------ telemetry
def _emf(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def _counts(lines: list[dict[str, Any]], name: str) -> int:
    """Data points of ``name``: a line of several attempts (a group commit) lists one per attempt."""
    return sum(len(v) if isinstance(v := line[name], list) else 1 for line in lines if name in line)


def test_started_completed_retried_and_failed_attempts_are_counted(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a task that completes and one whose failure is retried
    h.submit("good")
    h.submit("again", "raise")
    h.ops.fail_status = "Submitted"
    h.make(burst=True).run()
    lines = _emf(capsys.readouterr().out)
    # THEN two attempts started, one completed, one retried, none failed for good
    assert _counts(lines, "TasksStarted") == 2
    assert _counts(lines, "TasksCompleted") == 1 and _counts(lines, "TasksRetried") == 1
    assert _counts(lines, "TasksFailed") == 0
    # AND the dimensions are partition and handler, never a task id
    for line in lines:
        (dims,) = line["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
        assert set(dims) <= {"service", "partition", "handler"}
        assert "good" not in json.dumps(line) and "again" not in json.dumps(line)


def test_a_final_failure_counts_as_failed(h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    h.submit("bad", "raise")
    h.make(burst=True).run()
    lines = _emf(capsys.readouterr().out)
    assert _counts(lines, "TasksFailed") == 1 and _counts(lines, "TasksRetried") == 0


def test_the_childs_memory_peak_goes_on_the_task_and_out_as_a_metric(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    h.submit("t1", "big")
    h.make(burst=True).run()
    [(_, metrics)] = h.ops.of("commit")
    assert metrics["memory_peak"] == 300 << 20  # on the task item, with the phase times
    [line] = [x for x in _emf(capsys.readouterr().out) if "ChildMemoryHighWater" in x]
    assert line["ChildMemoryHighWater"] == [300 << 20] and line["handler"] == "big"

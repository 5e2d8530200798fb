"""Dependency resolution against moto: replayed stream batches, racing writers, the sweeper.

The worker side is driven through ``skyloom.core.execution`` (claim/complete) exactly as the agent
calls it, and resolve is fed real stream records read through the DynamoDB Streams API.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from skyloom.core import clock, commits, execution, readiness, staging
from skyloom.core.config import Settings
from skyloom.core.dispatching import TaskMessage
from skyloom.core.models import ResultModel, TaskModel
from skyloom.core.resources import RESULTS
from skyloom.runtime.outcome import RemoteError, TaskOutcome
from skyloom_server.functions.resolve import handler as resolve_handler
from skyloom_server.functions.resolve import resolution
from tests.functional.conftest import ApiClient, Db, FakeLambdaContext


class StreamReader:
    """Reads the results table's stream from where it last stopped, as Lambda's poller would."""

    def __init__(self, settings: Settings) -> None:
        ddb = boto3.client("dynamodb", region_name=settings.region)
        self.streams = boto3.client("dynamodbstreams", region_name=settings.region)
        arn = ddb.describe_table(TableName=settings.table_name(RESULTS))["Table"]["LatestStreamArn"]
        shards = self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        self.arn = arn
        self.iterators = [
            self.streams.get_shard_iterator(StreamArn=arn, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON")[
                "ShardIterator"
            ]
            for s in shards
        ]

    def batch(self) -> dict[str, Any]:
        records: list[dict[str, Any]] = []
        for i, it in enumerate(self.iterators):
            resp = self.streams.get_records(ShardIterator=it)
            self.iterators[i] = resp["NextShardIterator"]
            for r in resp["Records"]:
                r = dict(r)
                r["eventSourceARN"] = self.arn
                r["dynamodb"] = {k: v for k, v in r["dynamodb"].items() if k != "ApproximateCreationDateTime"}
                records.append(r)
        return {"Records": records}


def resolve(event: dict[str, Any]) -> dict[str, Any]:
    if not event["Records"]:  # Lambda never delivers an empty batch
        return {"batchItemFailures": []}
    out: dict[str, Any] = resolve_handler.handler(event, FakeLambdaContext(function_name="skyloom-resolve"))
    return out


@pytest.fixture(autouse=True)
def _fresh_handler_settings(aws_stack: Settings) -> None:
    resolve_handler.settings.cache_clear()


def submit(api: ApiClient, sid: str, tasks: list[dict[str, Any]], results: list[dict[str, Any]] | None = None) -> Any:
    r = api.call("POST", f"/sessions/{sid}/tasks", {"tasks": tasks, "results": results or []})
    assert r.status == 201, r.raw_body
    return r.json


def run_task(settings: Settings, task_id: str, outputs: dict[str, bytes], worker: str = "w1") -> None:
    """What an agent does for a task that succeeds: claim it, then complete it."""
    t = TaskModel.get(task_id, consistent_read=True)
    task = execution.claim(settings, TaskMessage(task_id, t.session_id, t.partition, 0), worker)
    assert task is not None, f"task {task_id} was not claimable ({t.status})"
    assert execution.commit(settings, task, worker, TaskOutcome(outputs=outputs), {})


def status(task_id: str) -> str:
    return str(TaskModel.get(task_id, consistent_read=True).status)


def test_replaying_a_stream_batch_enqueues_nothing_twice(api: ApiClient, db: Db, aws_stack: Settings) -> None:
    # GIVEN a diamond a -> (b, c) -> d
    sid = api.session()
    submit(api, sid, [
        {"id": "a", "handler": "h", "expected_outputs": ["ra"]},
        {"id": "b", "handler": "h", "data_dependencies": ["ra"], "expected_outputs": ["rb"]},
        {"id": "c", "handler": "h", "data_dependencies": ["ra"], "expected_outputs": ["rc"]},
        {"id": "d", "handler": "h", "data_dependencies": ["rb", "rc"], "expected_outputs": ["rd"]},
    ], [{"id": r} for r in ("ra", "rb", "rc", "rd")])
    stream = StreamReader(aws_stack)
    assert db.queued_messages() == 1  # only a is ready
    stream.batch()  # the creations: nothing to resolve

    # WHEN a completes and its stream batch is delivered twice
    run_task(aws_stack, "a", {"ra": b"1"})
    batch = stream.batch()
    assert resolve(batch) == {"batchItemFailures": []}
    after_once = db.queued_messages()
    resolve(batch)

    # THEN b and c were queued exactly once
    assert after_once == 3
    assert db.queued_messages() == 3
    assert status("b") == status("c") == "Submitted"
    assert status("d") == "Pending"

    # AND the same holds one level down, with the batch replayed three times
    run_task(aws_stack, "b", {"rb": b"2"})
    run_task(aws_stack, "c", {"rc": b"3"})
    batch = stream.batch()
    for _ in range(3):
        resolve(batch)
    assert db.queued_messages() == 4
    assert status("d") == "Submitted"


def _submit_dependent_while(api: ApiClient, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch,
                            producer_ends: Callable[[str], None]) -> None:
    """Submit t (waiting on r, made by p) while ``producer_ends(session id)`` ends p and resolve runs,
    in the window after t was validated and written but before its edge exists: resolve finds no
    dependent, and only the re-check after the edge can see r's end."""
    sid = api.session()
    submit(api, sid, [{"id": "p", "handler": "h", "expected_outputs": ["r"]}], [{"id": "r"}])
    stream = StreamReader(aws_stack)
    stream.batch()
    real_register = readiness.register_edges

    def end_first(tasks: Any, **kwargs: Any) -> None:
        producer_ends(sid)
        resolve(stream.batch())
        real_register(tasks, **kwargs)

    monkeypatch.setattr(readiness, "register_edges", end_first)
    submit(api, sid, [{"id": "t", "handler": "h", "data_dependencies": ["r"], "expected_outputs": ["out"]}],
           [{"id": "out"}])


def test_dependency_completing_while_the_task_is_written_still_readies_it(
    api: ApiClient, db: Db, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a producer p of r; WHEN r completes while t, waiting on it, is written
    _submit_dependent_while(api, aws_stack, monkeypatch, lambda sid: run_task(aws_stack, "p", {"r": b"done"}))
    # THEN the re-check after registering the edge readies it, exactly once
    assert status("t") == "Submitted"
    assert db.queued_messages() == 2  # p's message (never deleted here) and t's


def test_a_dependency_aborted_while_the_task_is_written_cancels_it(
    api: ApiClient, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a producer p of r; WHEN p fails for good (r aborted) while t, waiting on r, is written
    def fail_p(sid: str) -> None:
        task = execution.claim(aws_stack, TaskMessage("p", sid, "default", 0), "w1")
        assert task is not None
        error = RemoteError(type="ValueError", message="boom", traceback="", retryable=False)
        assert execution.fail(aws_stack, task, "w1", error) == "Error"

    _submit_dependent_while(api, aws_stack, monkeypatch, fail_p)
    # THEN the re-check after registering the edge cancels it with p's error, and aborts its output
    t = TaskModel.get("t", consistent_read=True)
    assert t.status == "Cancelled"
    assert t.error["task_id"] == "p" and "dependency r was aborted" in t.error["cancelled_because"]
    assert ResultModel.get("out", consistent_read=True).status == "Aborted"


def test_a_completion_between_the_edge_and_its_flag_still_readies_the_dependent(
    api: ApiClient, db: Db, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a result r created alone (nobody waits on it yet: written with has_dependents False)
    sid = api.session()
    submit(api, sid, [{"id": "p", "handler": "h", "expected_outputs": ["r"]}], [{"id": "r"}])
    stream = StreamReader(aws_stack)
    stream.batch()
    real_flag = readiness._flag

    # WHEN r completes after the dependent's edge is written but before r is flagged, so that its
    # stream record says "no dependents" and resolve looks nothing up
    def complete_then_flag(result_id: str, task_ids: set[str]) -> None:
        run_task(aws_stack, "p", {"r": b"done"})
        resolve(stream.batch())
        real_flag(result_id, task_ids)

    monkeypatch.setattr(readiness, "_flag", complete_then_flag)
    submit(api, sid, [{"id": "t", "handler": "h", "data_dependencies": ["r"], "expected_outputs": ["out"]}],
           [{"id": "out"}])

    # THEN the re-check after the flag readies the dependent, exactly once
    assert status("t") == "Submitted"
    assert db.queued_messages() == 2


def test_resolve_looks_up_dependents_only_of_results_someone_waits_on(
    api: ApiClient, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a producer whose result nobody waits on, and a chain a -> b submitted together
    sid = api.session()
    submit(api, sid, [
        {"id": "lonely", "handler": "h", "expected_outputs": ["rl"]},
        {"id": "a", "handler": "h", "expected_outputs": ["ra"]},
        {"id": "b", "handler": "h", "data_dependencies": ["ra"], "expected_outputs": ["rb"]},
    ], [{"id": r} for r in ("rl", "ra", "rb")])
    stream = StreamReader(aws_stack)
    stream.batch()
    looked_up: list[str] = []
    real_dependents = resolution.dependents

    def counting(result_id: str) -> list[str]:
        looked_up.append(result_id)
        return real_dependents(result_id)

    monkeypatch.setattr(resolution, "dependents", counting)
    # WHEN both producers complete and resolve runs
    run_task(aws_stack, "lonely", {"rl": b"1"})
    run_task(aws_stack, "a", {"ra": b"2"})
    resolve(stream.batch())
    # THEN nothing was looked up (ra carries its dependent, rl has none), and the dependent is ready
    assert looked_up == []
    assert status("b") == "Submitted"


def test_a_result_with_more_dependents_than_it_carries_is_looked_up(
    api: ApiClient, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN results that carry at most one dependent, and r waited on by two tasks submitted apart
    monkeypatch.setattr(readiness, "DEPENDENTS_ON_ITEM", 1)
    sid = api.session()
    submit(api, sid, [{"id": "p", "handler": "h", "expected_outputs": ["r"]}], [{"id": "r"}])
    for t in ("t1", "t2"):
        submit(api, sid, [{"id": t, "handler": "h", "data_dependencies": ["r"], "expected_outputs": [f"o{t}"]}],
               [{"id": f"o{t}"}])
    item = ResultModel.get("r", consistent_read=True)
    assert item.has_dependents and item.dependents is None  # the second one did not fit
    stream = StreamReader(aws_stack)
    stream.batch()
    looked_up: list[str] = []
    real_dependents = resolution.dependents
    monkeypatch.setattr(resolution, "dependents", lambda rid: looked_up.append(rid) or real_dependents(rid))
    # WHEN r completes
    run_task(aws_stack, "p", {"r": b"v"})
    resolve(stream.batch())
    # THEN its edges were looked up and both dependents are ready
    assert looked_up == ["r"]
    assert status("t1") == status("t2") == "Submitted"


def test_racing_writers_never_lose_or_duplicate_a_ready_task(api: ApiClient, db: Db, aws_stack: Settings) -> None:
    sid = api.session()
    rounds = 8
    for i in range(rounds):
        submit(api, sid, [{"id": f"p{i}", "handler": "h", "expected_outputs": [f"r{i}"]}], [{"id": f"r{i}"}])
    stream = StreamReader(aws_stack)
    stream.batch()
    base = db.queued_messages()
    for i in range(rounds):
        # GIVEN a dependent submission and the producer's completion + resolution, started together
        go = threading.Barrier(2)
        errors: list[BaseException] = []

        def writer_submit(i: int = i, go: threading.Barrier = go, errors: list[BaseException] = errors) -> None:
            try:
                go.wait()
                submit(api, sid, [{"id": f"t{i}", "handler": "h", "data_dependencies": [f"r{i}"],
                                   "expected_outputs": [f"o{i}"]}], [{"id": f"o{i}"}])
            except BaseException as exc:
                errors.append(exc)

        def writer_complete(i: int = i, go: threading.Barrier = go, errors: list[BaseException] = errors) -> None:
            try:
                go.wait()
                run_task(aws_stack, f"p{i}", {f"r{i}": b"v"})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer_submit), threading.Thread(target=writer_complete)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        # Resolve runs after both writers: in-process moto's stream reads are not thread-safe. The
        # interleaving where resolve runs before the edge exists is pinned by the test above.
        resolve(stream.batch())
        # THEN the dependent is ready, with exactly one message
        assert status(f"t{i}") == "Submitted"
        assert db.queued_messages() == base + i + 1


def test_sweeper_resends_a_lost_message_once(
    api: ApiClient, db: Db, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skyloom_server.functions.dispatch.sweeper import sweep

    sid = api.session()
    submit(api, sid, [{"id": "x", "handler": "h", "expected_outputs": ["rx"]}], [{"id": "rx"}])
    sqs = boto3.client("sqs", region_name=aws_stack.region)
    for q in sqs.list_queues()["QueueUrls"]:
        sqs.purge_queue(QueueUrl=q)  # the message is lost
    assert db.queued_messages() == 0
    assert sweep(aws_stack)["redispatched"] == 0  # not overdue yet

    base = aws_stack.redispatch_after_seconds
    queued = clock.now()
    later = queued + base + 1
    monkeypatch.setattr(clock, "now", lambda: later)
    assert sweep(aws_stack)["redispatched"] == 1
    assert sweep(aws_stack)["redispatched"] == 0  # timer re-armed: no duplicate on the next pass
    assert db.queued_messages() == 1

    # Still queued (a long backlog): the next copy comes after as long again as it has waited.
    [item] = TaskModel.by_session.query(sid)
    assert item.submitted_at is not None and item.submitted_at <= queued
    assert item.due_at == pytest.approx(later + (later - item.submitted_at))  # (``queued`` is read after it)
    monkeypatch.setattr(clock, "now", lambda: later + base)
    assert sweep(aws_stack)["redispatched"] == 0  # a fixed interval would have re-sent it here


def _claimed_parent(api: ApiClient, aws_stack: Settings) -> TaskModel:
    """A task "parent" owing result "out", claimed by worker w1."""
    sid = api.session()
    submit(api, sid, [{"id": "parent", "handler": "h", "expected_outputs": ["out"]}], [{"id": "out"}])
    t = TaskModel.get("parent", consistent_read=True)
    task = execution.claim(aws_stack, TaskMessage("parent", sid, t.partition, 0), "w1")
    assert task is not None
    return task


@pytest.mark.parametrize("in_commit", [True, False], ids=["children-in-commit", "children-staged-before"])
def test_sweeper_finalizes_a_parent_whose_worker_died_after_commit(
    api: ApiClient, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch, in_commit: bool
) -> None:
    from skyloom.runtime.outcome import StagedTask
    from skyloom_server.functions.dispatch.sweeper import sweep

    task = _claimed_parent(api, aws_stack)
    # the worker commits, delegating its output to a child, then dies before queueing it: a child
    # small enough rides in the commit itself (written live), a larger staging is written before it
    outcome = TaskOutcome(staged_tasks=[StagedTask("child", "h", b"", [], ["out"])])
    with monkeypatch.context() as m:
        m.setattr(commits, "finalize", lambda *a, **k: None)
        m.setattr(commits, "finalize_live", lambda *a, **k: None)
        if not in_commit:
            m.setattr(staging, "STAGED_IN_COMMIT_BYTES", -1)
        assert execution.commit(aws_stack, task, "w1", outcome, {})
    assert status("child") == ("Submitted" if in_commit else "Creating")
    assert status("parent") == "Completed"
    assert TaskModel.get("parent", consistent_read=True).finalize_pending is not None

    later = clock.now() + aws_stack.finalize_after_seconds + 1
    monkeypatch.setattr(clock, "now", lambda: later)
    assert sweep(aws_stack)["finalized"] == 1
    assert status("child") == "Submitted"
    # the delegated output now belongs to the child, which completes it
    run_task(aws_stack, "child", {"out": b"42"})
    from skyloom.core.models import ResultModel

    r = ResultModel.get("out", consistent_read=True)
    assert (r.status, r.owner_task_id, r.inline) == ("Completed", "child", b"42")


def test_a_staged_join_waits_on_edges_its_parents_commit_wrote(
    api: ApiClient, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skyloom.core.models import EdgeModel
    from skyloom.runtime.outcome import StagedResult, StagedTask

    # GIVEN a parent that stages two halves and a join waiting on both (the tree sum's inner node)
    task = _claimed_parent(api, aws_stack)
    outcome = TaskOutcome(
        staged_results=[StagedResult("l"), StagedResult("r")],
        staged_tasks=[StagedTask("left", "h", b"", [], ["l"]), StagedTask("right", "h", b"", [], ["r"]),
                      StagedTask("join", "h", b"", ["l", "r"], ["out"])],
    )
    stream = StreamReader(aws_stack)
    stream.batch()

    # WHEN it commits and its worker dies before anything after the commit (no edge written then)
    with monkeypatch.context() as m:
        m.setattr(commits, "finalize_live", lambda *a, **k: None)
        assert execution.commit(aws_stack, task, "w1", outcome, {})

    # THEN the commit itself wrote the join's edges, so the halves completing ready it
    assert {e.task_id for rid in ("l", "r") for e in EdgeModel.query(rid)} == {"join"}
    assert status("join") == "Pending"
    run_task(aws_stack, "left", {"l": b"1"})
    run_task(aws_stack, "right", {"r": b"2"})
    resolve(stream.batch())
    assert status("join") == "Submitted"


def test_a_failing_batch_falls_back_to_record_by_record(
    api: ApiClient, db: Db, aws_stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a fan-in: t waits on three results completed in one stream batch
    sid = api.session()
    submit(api, sid, [{"id": f"p{i}", "handler": "h", "expected_outputs": [f"r{i}"]} for i in range(3)]
           + [{"id": "t", "handler": "h", "data_dependencies": ["r0", "r1", "r2"], "expected_outputs": ["o"]}],
           [{"id": r} for r in ("r0", "r1", "r2", "o")])
    stream = StreamReader(aws_stack)
    stream.batch()
    for i in range(3):
        run_task(aws_stack, f"p{i}", {f"r{i}": b"v"})
    # WHEN the whole-batch path breaks
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(resolve_handler, "resolve_batch", broken)
    # THEN each record is resolved on its own and the task is readied once
    assert resolve(stream.batch()) == {"batchItemFailures": []}
    assert status("t") == "Submitted"
    assert db.queued_messages() == 4

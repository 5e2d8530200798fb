"""The fast path's reads and writes (issue 17): a large submission queues its tasks as its write
lands, and a worker reads a Completed value once per process.

Through the submit Lambda in-process on moto (the ``api`` fixture), and ``fetch_values`` on the same
tables, with the calls that matter counted by wrapping the functions that make them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest

from skyloom.core import ddb, readiness, results, submission
from skyloom.core.models import ResultModel, TaskModel
from skyloom.core.protocol import b64encode as b64
from skyloom.errors import Conflict

if TYPE_CHECKING:  # fixtures provide the instances; the classes are only needed for types
    from skyloom.core.config import Settings
    from tests.functional.conftest import ApiClient, Db


def _tasks(n: int, shared: str) -> list[dict[str, Any]]:
    return [{"handler": "tests.echo", "id": f"t{i:03}", "expected_outputs": [f"o{i:03}"],
             "data_dependencies": [shared]} for i in range(n)]


class TestSubmissionQueuesAsItWrites:
    def test_first_tasks_are_queued_before_the_last_chunk_is_written(
        self, api: ApiClient, db: Db, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # GIVEN a submission of 150 ready tasks, each with its own output, all reading one value
        # created in the same request (301 items: four transactions or more)
        sid = api.session()
        body = {"results": [{"id": "shared", "data": b64(b"v")}, *({"id": f"o{i:03}"} for i in range(150))],
                "tasks": _tasks(150, "shared")}
        writes: list[int] = []
        sends: list[list[str]] = []
        first_sent = threading.Event()
        real_transact, real_enqueue = ddb.transact, readiness.enqueue_tasks

        def transact(ops: Sequence[ddb.Op], **kwargs: Any) -> None:
            if len(writes) >= 3:
                # THEN by the fourth transaction the first tasks are already on their way
                assert first_sent.wait(10.0), "no task was queued before the rest of the write"
            writes.append(len(ops))
            real_transact(ops, **kwargs)

        def enqueue_tasks(settings: Settings, tasks: Sequence[TaskModel], **kwargs: Any) -> int:
            tasks = list(tasks)
            sends.append([t.task_id for t in tasks])
            sent = real_enqueue(settings, tasks, **kwargs)
            first_sent.set()
            return sent

        monkeypatch.setattr(ddb, "transact", transact)
        monkeypatch.setattr(readiness, "enqueue_tasks", enqueue_tasks)
        # WHEN it is submitted
        r = api.call("POST", f"/sessions/{sid}/tasks", body)
        # THEN every task is Submitted and queued exactly once, the first ones with the first write
        assert r.status == 201, r.raw_body
        assert {t["status"] for t in r.json["tasks"]} == {"Submitted"}
        assert writes[0] == submission.FIRST_WRITE_ITEMS and len(writes) >= 4
        queued = [tid for batch in sends for tid in batch]
        assert sorted(queued) == [f"t{i:03}" for i in range(150)]
        first_tasks = (submission.FIRST_WRITE_ITEMS - 1) // 2  # the shared value, then output + task each
        assert sends[0] == [f"t{i:03}" for i in range(first_tasks)]
        assert db.queued_messages() == 150

    def test_a_producer_waited_on_in_the_same_batch_is_queued_after_the_edges(
        self, api: ApiClient, db: Db, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # GIVEN a batch with 60 independent tasks, a producer, and a task waiting on the producer's
        # output and on a result no task of the batch produces (so its edges are written)
        sid = api.session()
        (later,) = api.results(sid, [{"id": "later"}])
        body = {"results": [{"id": "shared", "data": b64(b"v")}, *({"id": f"o{i:03}"} for i in range(60)),
                            {"id": "p_out"}, {"id": "c_out"}],
                "tasks": [{"handler": "tests.echo", "id": "producer", "expected_outputs": ["p_out"]},
                          *_tasks(60, "shared"),
                          {"handler": "tests.echo", "id": "consumer", "expected_outputs": ["c_out"],
                           "data_dependencies": ["p_out", later]}]}
        events: list[str] = []
        real_edges, real_enqueue = readiness.register_edges, readiness.enqueue_tasks

        def register_edges(tasks: Sequence[TaskModel], **kwargs: Any) -> None:
            real_edges(tasks, **kwargs)
            events.append("edges")

        def enqueue_tasks(settings: Settings, tasks: Sequence[TaskModel], **kwargs: Any) -> int:
            tasks = list(tasks)
            events.extend(t.task_id for t in tasks)
            return real_enqueue(settings, tasks, **kwargs)

        monkeypatch.setattr(readiness, "register_edges", register_edges)
        monkeypatch.setattr(readiness, "enqueue_tasks", enqueue_tasks)
        # WHEN it is submitted
        r = api.call("POST", f"/sessions/{sid}/tasks", body)
        # THEN the independent tasks may go early, but the producer is queued only once the
        # consumer's edges exist: failing at once, it still finds the consumer to cancel
        assert r.status == 201, r.raw_body
        assert events.index("producer") > events.index("edges")
        assert sorted(e for e in events if e != "edges") == sorted(["producer", *(f"t{i:03}" for i in range(60))])
        assert db.queued_messages() == 61

    def test_a_replayed_submission_queues_again_without_writing_twice(self, api: ApiClient, db: Db) -> None:
        # GIVEN a large submission already written and queued
        sid = api.session()
        body = {"results": [{"id": "shared", "data": b64(b"v")}, *({"id": f"o{i:03}"} for i in range(60))],
                "tasks": _tasks(60, "shared")}
        first = api.call("POST", f"/sessions/{sid}/tasks", body)
        assert first.status == 201, first.raw_body
        items = db.counts()
        # WHEN the client sends it again (its answer was lost)
        again = api.call("POST", f"/sessions/{sid}/tasks", body)
        # THEN it succeeds and writes nothing new (the sweeper-style re-send of its messages is
        # harmless: a duplicate message never runs a task twice)
        assert again.status == 201, again.raw_body
        assert db.counts() == items


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The ids of each BatchGetItem of results from now on."""
    reads: list[list[str]] = []
    real = ResultModel.batch_get

    def batch_get(ids: Sequence[str], **kwargs: Any) -> Any:
        reads.append(sorted(ids))
        return real(ids, **kwargs)

    monkeypatch.setattr(ResultModel, "batch_get", batch_get)
    return reads


class TestWorkersReadValuesOnce:
    def test_a_completed_value_is_read_once_per_process(
        self, api: ApiClient, monkeypatch: pytest.MonkeyPatch, aws_stack: Settings
    ) -> None:
        # GIVEN two Completed results
        sid = api.session()
        a, b = api.results(sid, [{"id": "fa", "data": b64(b"A" * 100)}, {"id": "fb", "data": b64(b"B")}])
        results._values_read.clear()
        reads = _count_reads(monkeypatch)
        # WHEN a worker fetches them for one task, then for the next, and one with them
        assert results.fetch_values(aws_stack, [a], session_id=sid) == {a: b"A" * 100}
        assert results.fetch_values(aws_stack, [a, b], session_id=sid) == {a: b"A" * 100, b: b"B"}
        assert results.fetch_values(aws_stack, [b, a], session_id=sid) == {b: b"B", a: b"A" * 100}
        # THEN each value was read from the table once
        assert reads == [[a], [b]]

    def test_a_value_not_completed_is_refused_and_not_kept(
        self, api: ApiClient, aws_stack: Settings
    ) -> None:
        # GIVEN a result still to be produced
        sid = api.session()
        (pending,) = api.results(sid, [{"id": "later"}])
        results._values_read.clear()
        # WHEN a worker asks for it, THEN it is refused, every time (nothing stale is kept)
        for _ in range(2):
            with pytest.raises(Conflict, match="not Completed"):
                results.fetch_values(aws_stack, [pending], session_id=sid)

    def test_a_result_id_taken_again_after_its_session_was_deleted_is_read_afresh(
        self, api: ApiClient, aws_stack: Settings
    ) -> None:
        # GIVEN a value a worker process read in session 1, which is then closed and deleted
        first = api.session()
        api.results(first, [{"id": "named", "data": b64(b"old")}])
        assert results.fetch_values(aws_stack, ["named"], session_id=first) == {"named": b"old"}
        for method, path in (("POST", f"/sessions/{first}/close"), ("DELETE", f"/sessions/{first}")):
            r = api.call(method, path)
            assert r.status == 200, r.raw_body
        # WHEN a new session creates a result under the same id, with another value
        second = api.session()
        api.results(second, [{"id": "named", "data": b64(b"new")}])
        # THEN the same process reads the new value
        assert results.fetch_values(aws_stack, ["named"], session_id=second) == {"named": b"new"}

    def test_a_value_the_worker_committed_is_not_read_back_but_one_refused_is(
        self, api: ApiClient, monkeypatch: pytest.MonkeyPatch, aws_stack: Settings
    ) -> None:
        from skyloom.core import execution
        from skyloom.core.dispatching import TaskMessage
        from skyloom.runtime.outcome import TaskOutcome

        # GIVEN two producers; the second is taken over (its commit is refused)
        sid = api.session()
        for name in ("p", "q"):
            r = api.call("POST", f"/sessions/{sid}/tasks", {
                "results": [{"id": f"{name}-out"}], "tasks": [{"id": name, "handler": "h",
                                                                 "expected_outputs": [f"{name}-out"]}]})
            assert r.status == 201, r.raw_body
        results._values_read.clear()
        p = execution.claim(aws_stack, TaskMessage("p", sid, "default", 0), "w1")
        q = execution.claim(aws_stack, TaskMessage("q", sid, "default", 0), "w1")
        assert p is not None and q is not None
        TaskModel(q.task_id).update(actions=[TaskModel.lease_owner.set("w2")])
        # WHEN this worker commits both
        assert execution.commit(aws_stack, p, "w1", TaskOutcome(outputs={"p-out": b"P"}), {})
        assert not execution.commit(aws_stack, q, "w1", TaskOutcome(outputs={"q-out": b"Q"}), {})
        reads = _count_reads(monkeypatch)
        # THEN its committed output comes from memory, and the refused one was never kept
        assert results.fetch_values(aws_stack, ["p-out"], session_id=sid) == {"p-out": b"P"}
        assert reads == []
        with pytest.raises(Conflict, match="not Completed"):
            results.fetch_values(aws_stack, ["q-out"], session_id=sid)

    def test_the_cache_is_bounded_in_bytes(self) -> None:
        # GIVEN a cache of 10 bytes that keeps values of up to 6
        cache = results._ValueCache(10, 6)
        # WHEN values are put beyond its size, and one larger than it keeps
        cache.put_many({"a": b"1234", "b": b"5678"})
        cache.get_many(["a"])  # a is now the most recently used
        cache.put_many({"c": b"90ab", "big": b"x" * 7})
        # THEN the least recently used went, and the large one was never kept
        assert cache.get_many(["a", "b", "c", "big"]) == {"a": b"1234", "c": b"90ab"}

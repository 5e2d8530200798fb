"""Failures, timeouts, cancellation, pause/resume, purge, partitions and priorities, end to end:
the SDK over HTTP, the functions on the local stack, real worker agents."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest

import skyloom
from skyloom.core.protocol import ResultSpec, TaskSpec
from skyloom_server.fargate_worker.settings import WorkerSettings

pytestmark = pytest.mark.slow


@skyloom.task(max_retries=1)
def explode(x: int) -> int:
    raise ValueError(f"bad trade {x}")


class PricingError(Exception):
    """A user's exception type, importable on the workers and the client (the repository's tests)."""

    def __init__(self, trade: str, code: int) -> None:
        super().__init__(trade, code)
        self.trade, self.code = trade, code


@skyloom.task(max_retries=0)
def refuse(trade: str) -> int:
    raise PricingError(trade, 7)


@skyloom.task
def inc(x: int) -> int:
    return x + 1


@skyloom.task(max_retries=0, max_duration=1.0)
def too_slow() -> None:
    time.sleep(30)


@skyloom.task(max_retries=0)
def nap(seconds: float, tag: str) -> tuple[str, float, float]:
    start = time.time()
    time.sleep(seconds)
    return tag, start, time.time()


def task_of(client: skyloom.Client, future: skyloom.Future[Any]) -> str:
    [info] = client.get_results(future.session_id, [future.id])
    assert info.owner_task_id is not None
    return info.owner_task_id


def wait_status(client: skyloom.Client, session_id: str, task_id: str, wanted: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get_tasks(session_id, [task_id])[0].status == wanted:
            return
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} never reached {wanted}")


def test_last_failure_cascades_through_a_three_level_graph(client: skyloom.Client) -> None:
    with client.session() as s:
        a = explode.submit(7)
        c = inc.submit(inc.submit(a))
        with pytest.raises(skyloom.DependencyAborted) as err:
            c.result(timeout=120)
        with pytest.raises(skyloom.TaskFailed) as root:
            a.result(timeout=10)
    failed = task_of(client, a)
    assert err.value.task_id == failed and root.value.attempts == 2
    assert "ValueError" in str(err.value) and "bad trade 7" in str(err.value)
    assert "raise ValueError" in (root.value.remote_traceback or "")
    [t] = client.get_tasks(s.session_id, [failed])
    assert t.status == "Error" and [x.outcome for x in t.attempts] == ["error", "error"]


def test_result_raises_the_tasks_own_exception_type(client: skyloom.Client) -> None:
    # GIVEN a task that raises ValueError and one that raises a user type, and a dependent of it
    with client.session():
        bad, mine = explode.options(max_retries=0).submit(3), refuse.submit("T-1")
        after = inc.submit(mine)
        # THEN except ValueError / except PricingError catch them, and they are TaskFailed too
        with pytest.raises(ValueError) as value_error:
            bad.result(timeout=60)
        with pytest.raises(PricingError) as info:
            after.result(timeout=60)
    exc = value_error.value
    assert isinstance(exc, skyloom.TaskFailed) and exc.args == ("bad trade 3",)
    assert "raise ValueError" in (exc.remote_traceback or "") and "raise ValueError" in str(exc)
    assert isinstance(info.value, skyloom.DependencyAborted) and (info.value.trade, info.value.code) == ("T-1", 7)


def test_a_task_past_its_max_duration_times_out(client: skyloom.Client) -> None:
    with client.session():
        f = too_slow.submit()
        with pytest.raises(skyloom.TaskTimedOut):
            f.result(timeout=60)


def test_cancelling_a_running_task_stops_it(client: skyloom.Client) -> None:
    with client.session() as s:
        f = nap.submit(60, "long")
        s.flush()
        tid = task_of(client, f)
        wait_status(client, s.session_id, tid, "Processing")
        client.cancel_tasks(s.session_id, [tid])
        with pytest.raises(skyloom.TaskCancelled):
            f.result(timeout=30)
        # the worker noticed within a heartbeat and is free again
        assert nap.submit(0, "next").result(timeout=60)[0] == "next"


def test_pause_and_resume_with_tasks_in_flight(client: skyloom.Client) -> None:
    with client.session() as s:
        running = nap.submit(2, "in flight")
        s.flush()
        wait_status(client, s.session_id, task_of(client, running), "Processing")
        client.pause_session(s.session_id)
        queued = [nap.submit(0, f"q{i}") for i in range(3)]
        s.flush()
        # the running task finishes; nothing new starts while paused
        assert running.result(timeout=60)[0] == "in flight"
        time.sleep(3)
        assert not any(f.done() for f in queued)
        client.resume_session(s.session_id)
        assert sorted(f.result(timeout=60)[0] for f in queued) == ["q0", "q1", "q2"]


def test_purge_leaves_no_blob_in_the_bucket(client: skyloom.Client, local_stack: Any) -> None:
    if getattr(local_stack, "aws_endpoint", None) is None:
        pytest.skip("needs direct access to the stack's bucket")
    s = client.create_session()
    big = client.upload(s.session_id, b"z" * (2 * 1024 * 1024))
    sess = client.attach(s.session_id)
    with sess:
        doubled = inc.submit(41)
    assert doubled.result(timeout=60) == 42
    s3 = boto3.client("s3", endpoint_url=local_stack.aws_endpoint, region_name=local_stack.settings.region)
    prefix = f"sessions/{s.session_id}/"

    def objects() -> int:
        return int(s3.list_objects_v2(Bucket=local_stack.settings.bucket, Prefix=prefix).get("KeyCount", 0))

    assert objects() >= 1
    client.close_session(s.session_id)
    assert client.purge_session(s.session_id).status == "Purged"
    assert objects() == 0
    [info] = client.get_results(s.session_id, [big])
    assert info.status == "Deleted"


def test_a_partition_outside_the_session_is_rejected(client: skyloom.Client) -> None:
    s = client.create_session()
    with pytest.raises(skyloom.InvalidRequest) as err:
        client.submit_tasks(
            s.session_id,
            [TaskSpec(handler="skyloom.call", expected_outputs=["o1"], options=skyloom.TaskOptions(partition="gpu"))],
            results=[ResultSpec(id="o1")],
        )
    assert err.value.field is not None and "partition" in err.value.field


def test_higher_priority_runs_first(client: skyloom.Client, local_stack: Any) -> None:
    workers = len(getattr(local_stack.workers, "pids", []) or []) or 2
    # The agents inherit this process's environment: the same slots and prefetch as here.
    agent = WorkerSettings.from_env()
    held = workers * (agent.slots + agent.prefetch)
    with client.session() as s:
        client.pause_session(s.session_id)
        low = [nap.options(priority=0).submit(0.2, "low") for _ in range(3 * held)]
        high = [nap.options(priority=2).submit(0.2, "high") for _ in range(8)]
        s.flush()
        client.resume_session(s.session_id)
        for f in low + high:
            f.result(timeout=120)
        infos = client.get_results(s.session_id, [f.id for f in low + high])
        owner = {r.result_id: r.owner_task_id or "" for r in infos}
        claimed = {t.task_id: t.started_at or 0.0 for t in client.get_tasks(s.session_id, list(owner.values()))}
    lows = [claimed[owner[f.id]] for f in low]
    last_high = max(claimed[owner[f.id]] for f in high)
    # When the high tasks are queued, each agent may already hold a low task per slot and per
    # prefetch; past those, a low task is received only once the high queue is empty, and its claim
    # may still race the claim of the last high task another agent received just before: one per
    # agent. Claim times (not start times) because a high task received last may wait in its
    # agent's prefetch while another agent, its high queue empty, rightly starts a low one.
    # Three times as many low tasks as that, so that ignoring priorities could not pass.
    assert sum(1 for at in lows if at < last_high) <= held + workers

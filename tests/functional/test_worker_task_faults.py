"""A task that cannot be run or whose result cannot be kept fails alone, with an error naming the
cause; the agent survives it and runs the next task. The agent runs in-process on moto (tasks
submitted through the submit Lambda), with real child processes and the SDK's executor.

What is covered, by cause (the child-level details are in ``test_worker_child``):

- a payload the executor cannot decode: ``CallSpecError``;
- a function returning a value that cannot be pickled: ``ReturnValueError``;
- outputs larger than the worker's ``max_output_bytes``: ``OutputTooLarge``.
"""

from __future__ import annotations

import threading
from typing import Any

import cloudpickle
import pytest

from skyloom.client.callspec import CallSpec, encode
from skyloom.core.config import Settings
from skyloom_server.fargate_worker.agent import Agent
from skyloom_server.fargate_worker.child import OUTPUT_TOO_LARGE_ERROR
from skyloom_server.fargate_worker.settings import WorkerSettings
from tests.functional.conftest import ApiClient, b64

pytestmark = pytest.mark.timeout(180)

LIMIT = 4096


def returns_a_lock() -> Any:
    return threading.Lock()  # no pickler can ship this


def returns_bytes(n: int) -> bytes:
    return b"x" * n


def plus_one(x: int) -> int:
    return x + 1


def call_payload(fn: Any, *args: Any) -> bytes:
    """A ``skyloom.call`` payload for ``fn(*args)``, as the client builds it for small calls."""
    return encode(cloudpickle.dumps(CallSpec(cloudpickle.dumps(fn), args, {})), [])


def test_bad_tasks_fail_alone_with_a_clear_error_and_the_agent_runs_the_next(
    api: ApiClient, aws_stack: Settings
) -> None:
    # GIVEN three tasks that each break in their own way, then a good one
    payloads = {
        "undecodable": b"\x00 not a call spec",
        "unpicklable": call_payload(returns_a_lock),
        "too_big": call_payload(returns_bytes, LIMIT * 2),
        "fine": call_payload(plus_one, 41),
    }
    sid = api.session()
    for name, payload in payloads.items():
        r = api.call("POST", f"/sessions/{sid}/tasks", {
            "results": [{"id": f"{name}-out"}],
            "tasks": [{"id": name, "handler": "skyloom.call", "expected_outputs": [f"{name}-out"],
                       "payload": b64(payload), "options": {"max_retries": 0}}],
        })
        assert r.status == 201, r.raw_body

    # WHEN one agent with one slot works through them
    agent = Agent(aws_stack, WorkerSettings(slots=1, prefetch=0, burst=True, max_output_bytes=LIMIT))
    assert agent.run() == 0

    # THEN each bad task failed with an error naming its cause (and the limit), the agent took the
    # next task each time, and the good one completed
    tasks = {name: api.call("GET", f"/sessions/{sid}/tasks/{name}").json for name in payloads}
    errors = {name: t["error"] for name, t in tasks.items() if t["status"] == "Error"}
    assert set(errors) == {"undecodable", "unpicklable", "too_big"}, {n: t["status"] for n, t in tasks.items()}
    assert errors["undecodable"]["type"].endswith("CallSpecError")
    assert "call spec" in errors["undecodable"]["message"]
    assert errors["unpicklable"]["type"].endswith("ReturnValueError")
    assert "cannot be pickled" in errors["unpicklable"]["message"] and "lock" in errors["unpicklable"]["message"]
    assert errors["too_big"]["type"] == OUTPUT_TOO_LARGE_ERROR
    assert f"limit of {LIMIT} bytes" in errors["too_big"]["message"]
    assert tasks["fine"]["status"] == "Completed"
    (out,) = api.call("POST", f"/sessions/{sid}/results/get", {"ids": ["fine-out"]}).json["results"]
    assert out["status"] == "Completed"
    assert agent.stats["failed"] == 3 and agent.stats["completed"] == 1

"""Task graphs end to end: the SDK over HTTP, the API, the stream, the queues and real workers.

Functions defined here reach the workers by value (this module is not installed). The low-level
handlers are imported by the workers through ``SKYLOOM_HANDLER_MODULES`` (see ``conftest.py``), so
this module must stay importable without pytest fixtures running.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import skyloom
from skyloom.core.protocol import ResultData

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "portfolio.py"
TIMEOUT = 240.0
TEN_MB = 10 * 1024 * 1024


# ------------------------------------------------------------------------------ task functions
@skyloom.task
def inc(x: int) -> int:
    return x + 1


@skyloom.task
def double(x: int) -> int:
    return 2 * x


@skyloom.task
def square(x: int) -> int:
    return x * x


@skyloom.task
def add(*xs: int) -> int:
    return sum(xs)


@skyloom.task
def leaf(i: int) -> int:
    return i * i


@skyloom.task
def fan_out(n: int):  # type: ignore[no-untyped-def]
    return add.submit(*[leaf.submit(i) for i in range(n)])


@skyloom.task
def blob(n: int) -> bytes:
    return bytes(range(256)) * (n // 256) + bytes(n % 256)


@skyloom.task
def checksum(data: bytes, salt: int) -> int:
    return (sum(data) + salt) % 1_000_003


@skyloom.task(max_retries=0)
def broken(message: str) -> int:
    raise ValueError(message)


# ----------------------------------------------------------------------------- low-level handlers
@skyloom.handler("e2e.reverse")
def reverse(ctx: skyloom.TaskContext) -> None:
    # Inputs in value order: the order of ctx.dependencies is not part of the contract.
    data = b"".join(sorted(ctx.dependencies.values()))
    ctx.send_result(ctx.expected_outputs[0], ctx.payload + data[::-1])


@skyloom.handler("e2e.split")
def split(ctx: skyloom.TaskContext) -> None:
    # Two subtasks, and a third that takes over this task's output (delegation).
    left, right = ctx.create_results(["left", "right"])
    half = len(ctx.payload) // 2
    ctx.submit_tasks(
        [
            skyloom.TaskRequest("e2e.reverse", expected_outputs=[left], payload=ctx.payload[:half]),
            skyloom.TaskRequest("e2e.reverse", expected_outputs=[right], payload=ctx.payload[half:]),
            skyloom.TaskRequest(
                "e2e.reverse", expected_outputs=list(ctx.expected_outputs), data_dependencies=[left, right]
            ),
        ]
    )


# ------------------------------------------------------------------------------------------ tests
def test_portfolio_dynamic_graph(client: skyloom.Client) -> None:
    example = _load_example()
    trades = example.make_trades()
    with client.session(name="portfolio"):
        value = example.portfolio.submit(trades).result(timeout=TIMEOUT)
    assert value == pytest.approx(example.sequential(trades), rel=1e-9)


def test_diamond_with_static_dependencies(client: skyloom.Client) -> None:
    with client.session() as s:
        a = inc.submit(2)
        b, c = double.submit(a), square.submit(a)
        d = add.submit(b, c)
    assert d.result(timeout=TIMEOUT) == 2 * 3 + 3 * 3
    # The join waited on both branches through data dependencies, never through the client.
    (info,) = s.get_results([d.id])
    assert info.owner_task_id is not None
    (task,) = s.get_tasks([info.owner_task_id])
    assert set(task.data_dependencies) >= {b.id, c.id}
    assert task.status == "Completed"


@pytest.mark.timeout(900)
def test_fan_out_of_200_subtasks_with_fan_in(client: skyloom.Client) -> None:
    # Slow on the local stack (about 0.5 s of bookkeeping per task per worker on moto).
    with client.session(name="fan-out"):
        f = fan_out.submit(200)
    assert f.result(timeout=3 * TIMEOUT) == sum(i * i for i in range(200))


def test_large_result_through_s3_small_inline(client: skyloom.Client) -> None:
    with client.session() as s:
        big, small = blob.submit(TEN_MB), blob.submit(10)
    assert big.result(timeout=TIMEOUT) == bytes(range(256)) * (TEN_MB // 256)
    assert small.result(timeout=TIMEOUT) == bytes(10)
    transport: Any = client._t
    big_data = ResultData.model_validate(transport.request("GET", f"/sessions/{s.session_id}/results/{big.id}/data"))
    small_data = ResultData.model_validate(
        transport.request("GET", f"/sessions/{s.session_id}/results/{small.id}/data")
    )
    assert big_data.download_url and big_data.data is None and big_data.size > TEN_MB
    assert small_data.data is not None and small_data.download_url is None


def test_uploaded_input_consumed_by_several_tasks(client: skyloom.Client) -> None:
    data = bytes(range(256)) * 1024  # 256 KiB: goes to S3 through a presigned PUT
    with client.session() as s:
        shared = s.put(data)
        futures = [checksum.submit(shared, salt) for salt in range(5)]
    assert [f.result(timeout=TIMEOUT) for f in futures] == [(sum(data) + i) % 1_000_003 for i in range(5)]
    (info,) = s.get_results([shared.id])
    assert info.status == "Completed" and info.owner_task_id is None


def test_failure_reports_the_remote_traceback(client: skyloom.Client) -> None:
    with client.session():
        bad = broken.submit("no curve for EUR")
        after = add.submit(bad, 1)
    with pytest.raises(skyloom.TaskFailed, match="no curve for EUR") as info:
        bad.result(timeout=TIMEOUT)
    assert info.value.remote_type == "ValueError" and "in broken" in (info.value.remote_traceback or "")
    with pytest.raises(skyloom.DependencyAborted, match="no curve for EUR"):
        after.result(timeout=TIMEOUT)


def test_low_level_handlers_and_delegation(client: skyloom.Client) -> None:
    with client.session(name="low-level") as s:
        out, data = s.create_results(["out", b"dlrow"])
        s.submit_tasks([skyloom.TaskRequest("e2e.reverse", [out], payload=b"hello ", data_dependencies=[data])])
        (split_out,) = s.create_results(["split"])
        s.submit_tasks([skyloom.TaskRequest("e2e.split", [split_out], payload=b"abcdef")])
        infos = s.wait([out, split_out], timeout=TIMEOUT)
    assert [i.status for i in infos] == ["Completed", "Completed"]
    assert s.download(out) == b"hello world"
    # The leaves echo "abc" and "def"; the delegated join reverses their concatenation.
    assert s.download(split_out) == b"fedcba"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("skyloom_example_portfolio", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module

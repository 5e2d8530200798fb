"""The cost estimate's arithmetic: compute by partition x rate, requests x list prices, overrides."""

from __future__ import annotations

import pytest

from skyloom.core import cost
from skyloom.core.config import Settings
from skyloom.core.protocol import Attempt, ResultInfo, TaskInfo
from skyloom.core.resources import PartitionSpec


def _task(tid: str, spans: list[tuple[float, float, str]], *, partition: str | None = None,
          deps: tuple[str, ...] = (), parent: str | None = None) -> TaskInfo:
    return TaskInfo(task_id=tid, session_id="s", status="Completed", handler="h", data_dependencies=list(deps),
                    expected_outputs=[f"{tid}-out"], options={}, partition=partition, parent_task_id=parent,
                    created_at=0.0, attempts=[Attempt(number=i + 1, started_at=a, ended_at=b, outcome=o)
                                              for i, (a, b, o) in enumerate(spans)])


def test_partition_rate_spot_on_demand_and_override() -> None:
    prices = cost.Prices.parse({"partitions": {"big": {"vcpuHour": 0.1}}})
    spot = cost.partition_rate(PartitionSpec("default"), prices)
    assert (spot.vcpus, spot.memory_gb, spot.slots, spot.vcpu_hour) == (1, 2, 1, prices.fargate_spot_vcpu_hour)
    assert spot.per_task_second == pytest.approx((0.01245 + 2 * 0.00137) / 3600)
    steady = cost.partition_rate(PartitionSpec("steady", spot=False), prices)
    assert steady.vcpu_hour == prices.fargate_vcpu_hour and steady.gb_hour == prices.fargate_gb_hour
    big = cost.partition_rate(PartitionSpec("big", cpu=4096, memory=8192), prices)
    # 4 slots share a 4 vCPU / 8 GB worker: one task-second holds a quarter of it.
    assert big.slots == 4 and big.per_task_second == pytest.approx((4 * 0.1 + 8 * 0.00137) / 3600 / 4)


def test_estimate_counts_every_attempt_by_partition_and_adds_up() -> None:
    tasks = [
        _task("a", [(0.0, 10.0, "error"), (20.0, 30.0, "completed")]),
        _task("b", [(0.0, 5.0, "completed")], partition="big", deps=("a-out",), parent="a"),
    ]
    results = [ResultInfo(result_id="a-out", session_id="s", status="Completed", owner_task_id="a", size=100_000,
                          created_at=0.0),
               ResultInfo(result_id="b-out", session_id="s", status="Completed", owner_task_id="b", size=2048,
                          created_at=0.0)]
    u = cost.usage_of(tasks, results, inline_max_bytes=32 * 1024, default_partition="default")
    assert u.compute_seconds == {"default": 20.0, "big": 5.0}
    assert (u.attempts, u.failed_attempts, u.client_tasks, u.s3_values, u.s3_reads) == (3, 1, 1, 1, 1)
    sheet = cost.pricing([PartitionSpec("default"), PartitionSpec("big", cpu=2048, memory=4096)], cost.Prices(),
                         32 * 1024)
    bill = cost.estimate(u, sheet)
    assert bill.total == pytest.approx(sum(line.dollars for line in (*bill.compute, *bill.requests)))
    lines = {line.item.split(" (")[0]: line for line in bill.compute}
    assert lines["compute default"].dollars == pytest.approx(20 * sheet.rates["default"].per_task_second)
    assert lines["compute big"].dollars == pytest.approx(5 * sheet.rates["big"].per_task_second)
    requests = {line.item: line for line in bill.requests}
    assert requests["SQS requests"].quantity == 9  # 3 per attempt
    assert requests["S3 PUT"].quantity == 1 and requests["S3 GET"].quantity == 1


def test_bad_overrides_name_the_key() -> None:
    with pytest.raises(ValueError, match="fargateSpotGbHour"):
        Settings(prices='{"fargateSpotGbHour": -1}')
    with pytest.raises(ValueError, match="SKYLOOM_PRICES must be a JSON object"):
        Settings.from_env({"SKYLOOM_PRICES": "[1, 2"})
    overridden = Settings.from_env(Settings(prices='{"sqsPerMillion": 0.5}').to_env())
    assert cost.Prices.parse(overridden.prices).sqs_per_million == 0.5

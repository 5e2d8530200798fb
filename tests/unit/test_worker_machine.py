"""The machine a worker describes once at start: ECS task metadata v4, EC2 IMDSv2, /proc, locally."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from skyloom.core.machine import Machine
from skyloom.core.models import TaskModel
from skyloom.core.protocol import Attempt
from skyloom.core.retries import attempt_record
from skyloom_server.fargate_worker import machine

BASE = "http://169.254.170.2/v4/abc"
CONTAINER = {"Name": "worker", "Image": "123.dkr.ecr.eu-west-1.amazonaws.com/skyloom:abc"}


def _proc(tmp_path: Path) -> tuple[str, str]:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)  Platinum 8375C\n"
                       "processor\t: 1\nmodel name\t: Intel(R) Xeon(R)  Platinum 8375C\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16303360 kB\nMemFree: 1 kB\n")
    return str(cpuinfo), str(meminfo)


def _fake(pages: Mapping[tuple[str, str], str]) -> machine.Fetch:
    def fetch(url: str, headers: Mapping[str, str], method: str) -> str | None:
        if "meta-data" in url:
            assert headers.get("X-aws-ec2-metadata-token") == "tok"  # IMDSv2: every read carries the token
        return pages.get((method, url))

    return fetch


def test_local_worker_reads_proc_and_says_local(tmp_path: Path) -> None:
    cpuinfo, meminfo = _proc(tmp_path)
    m = machine.describe({}, cpuinfo=cpuinfo, meminfo=meminfo, fetch=_fake({}))
    assert (m.instance_type, m.availability_zone, m.capacity, m.image) == ("local", "local", "local", "local")
    assert m.cpu_model == "Intel(R) Xeon(R) Platinum 8375C"
    assert m.memory_mb == 15921 and m.vcpus >= 1


def test_fargate_spot_task_from_metadata_and_one_describe_tasks(tmp_path: Path) -> None:
    cpuinfo, meminfo = _proc(tmp_path)
    task = {"Cluster": "arn:cluster", "TaskARN": "arn:task", "Limits": {"CPU": 2, "Memory": 4096},
            "AvailabilityZone": "eu-west-1b", "LaunchType": "FARGATE"}
    asked: list[tuple[str, str]] = []

    def provider(cluster: str, arn: str) -> str | None:
        asked.append((cluster, arn))
        return "FARGATE_SPOT"

    m = machine.describe({machine.METADATA_ENV: BASE}, cpuinfo=cpuinfo, meminfo=meminfo, capacity_provider=provider,
                         fetch=_fake({("GET", BASE): json.dumps(CONTAINER), ("GET", f"{BASE}/task"): json.dumps(task)}))
    assert m == Machine(instance_type="fargate-2vcpu-4gb", cpu_model="Intel(R) Xeon(R) Platinum 8375C", vcpus=2,
                        memory_mb=4096, availability_zone="eu-west-1b", capacity="spot", image=CONTAINER["Image"],
                        launch_type="FARGATE")
    assert asked == [("arn:cluster", "arn:task")]


def test_fargate_capacity_unknown_when_ecs_refuses(tmp_path: Path) -> None:
    cpuinfo, meminfo = _proc(tmp_path)
    task = {"Cluster": "c", "TaskARN": "t", "Limits": {"CPU": 0.5, "Memory": 1024}, "LaunchType": "FARGATE"}

    def refused(cluster: str, arn: str) -> str | None:
        raise PermissionError("AccessDenied")

    m = machine.describe({machine.METADATA_ENV: BASE}, cpuinfo=cpuinfo, meminfo=meminfo, capacity_provider=refused,
                         fetch=_fake({("GET", f"{BASE}/task"): json.dumps(task)}))
    assert (m.instance_type, m.capacity, m.availability_zone) == ("fargate-0.5vcpu-1gb", "unknown", "unknown")


def test_ec2_task_reads_imdsv2(tmp_path: Path) -> None:
    cpuinfo, meminfo = _proc(tmp_path)
    task = {"Limits": {"CPU": 4}, "LaunchType": "EC2", "AvailabilityZone": "eu-west-1a"}
    imds = machine.IMDS_URL
    m = machine.describe({machine.METADATA_ENV: BASE}, cpuinfo=cpuinfo, meminfo=meminfo, fetch=_fake({
        ("GET", BASE): json.dumps(CONTAINER), ("GET", f"{BASE}/task"): json.dumps(task),
        ("PUT", f"{imds}/api/token"): "tok",
        ("GET", f"{imds}/meta-data/instance-type"): "c6i.2xlarge",
        ("GET", f"{imds}/meta-data/placement/availability-zone"): "eu-west-1c",
        ("GET", f"{imds}/meta-data/instance-life-cycle"): "spot",
    }))
    assert (m.instance_type, m.availability_zone, m.capacity, m.vcpus, m.memory_mb) == (
        "c6i.2xlarge", "eu-west-1c", "spot", 4.0, 15921)


def test_unreachable_metadata_never_raises(tmp_path: Path) -> None:
    m = machine.describe({machine.METADATA_ENV: BASE}, cpuinfo=str(tmp_path / "none"), meminfo=str(tmp_path / "x"),
                         fetch=_fake({}))
    assert (m.cpu_model, m.memory_mb, m.instance_type) == ("unknown", 0, "unknown")


@pytest.mark.parametrize("with_machine", [True, False])
def test_attempt_record_carries_the_machine_and_reads_back(with_machine: bool) -> None:
    m = Machine(instance_type="local", cpu_model="cpu", vcpus=2, memory_mb=1024, availability_zone="local",
                capacity="local", image="local")
    rec = attempt_record(TaskModel("t1", attempt=1, started_at=1.0), "w1", "completed",
                          machine=m if with_machine else None)
    assert json.loads(json.dumps(rec)) == rec  # stored as JSON on the task item
    assert Attempt(**rec).machine == (m if with_machine else None)

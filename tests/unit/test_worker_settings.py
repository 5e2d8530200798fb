"""The agent's configuration from the environment and the command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skyloom_server.fargate_worker.__main__ import parse_args
from skyloom_server.fargate_worker.settings import WorkerConfigError, WorkerSettings, cpu_quota, default_slots, load


def test_defaults_suit_production() -> None:
    s = WorkerSettings.from_env({})
    assert s == WorkerSettings(partition="default", slots=default_slots(), poll_wait=1, grace_seconds=100.0,
                               max_tasks=None, burst=False, busy_report_seconds=60.0,
                               overlap_reports=True, prefetch=1)
    assert WorkerSettings().slots == default_slots()


def test_auto_slots_is_one_per_vcpu() -> None:
    assert WorkerSettings.from_env({"SKYLOOM_WORKER_SLOTS": "auto"}).slots == default_slots() >= 1


@pytest.mark.parametrize(
    ("v2", "v1", "quota"),
    [
        ("200000 100000\n", None, 2.0),  # Fargate, 2 vCPU
        ("25000 100000\n", None, 0.25),  # 0.25 vCPU
        ("max 100000\n", None, None),  # no quota
        (None, ("150000", "100000"), 1.5),  # cgroup v1
        (None, ("-1", "100000"), None),  # v1 without a quota
        (None, None, None),  # nothing readable
    ],
)
def test_the_containers_cpu_quota_is_read_from_its_cgroup(
    tmp_path: Path, v2: str | None, v1: tuple[str, str] | None, quota: float | None
) -> None:
    cpu_max, q, p = tmp_path / "cpu.max", tmp_path / "quota", tmp_path / "period"
    if v2 is not None:
        cpu_max.write_text(v2)
    if v1 is not None:
        q.write_text(v1[0])
        p.write_text(v1[1])
    assert cpu_quota(str(cpu_max), (str(q), str(p))) == quota


def test_slots_are_capped_by_the_quota_rounded_up(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("25000 100000")
    assert default_slots(str(cpu_max)) == 1  # a quarter vCPU still runs one task
    cpu_max.write_text(f"{1000 * 100000} 100000")
    assert default_slots(str(cpu_max)) == len(os.sched_getaffinity(0))  # never more than the CPUs


def test_every_variable_is_read() -> None:
    s = WorkerSettings.from_env({
        "SKYLOOM_WORKER_PARTITION": "gpu", "SKYLOOM_WORKER_SLOTS": "4", "SKYLOOM_WORKER_POLL_WAIT": "20",
        "SKYLOOM_WORKER_GRACE_SECONDS": "90.5", "SKYLOOM_WORKER_MAX_TASKS": "7", "SKYLOOM_WORKER_BURST": "true",
        "SKYLOOM_WORKER_UPPER_POLL_WAIT": "3",
    })
    assert s == WorkerSettings(partition="gpu", slots=4, poll_wait=20, grace_seconds=90.5, max_tasks=7, burst=True,
                               upper_poll_wait=3)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("SKYLOOM_WORKER_SLOTS", "0", "at least 1"),
        ("SKYLOOM_WORKER_SLOTS", "two", "integer"),
        ("SKYLOOM_WORKER_POLL_WAIT", "0", "1-20"),
        ("SKYLOOM_WORKER_POLL_WAIT", "21", "1-20"),
        ("SKYLOOM_WORKER_UPPER_POLL_WAIT", "0", "1-20"),
        ("SKYLOOM_WORKER_UPPER_POLL_WAIT", "30", "1-20"),
        ("SKYLOOM_WORKER_GRACE_SECONDS", "-1", ">= 0"),
        ("SKYLOOM_WORKER_MAX_TASKS", "-2", "at least 1"),
        ("SKYLOOM_WORKER_BURST", "maybe", "true or false"),
    ],
)
def test_invalid_values_name_the_variable(key: str, value: str, words: str) -> None:
    with pytest.raises(WorkerConfigError, match=key) as info:
        WorkerSettings.from_env({key: value})
    assert words in str(info.value)


def test_load_reads_both_halves_and_wraps_stack_errors() -> None:
    settings, worker = load({"SKYLOOM_STACK": "st", "SKYLOOM_WORKER_SLOTS": "2"})
    assert settings.stack == "st" and worker.slots == 2
    with pytest.raises(WorkerConfigError, match="SKYLOOM_LEASE_SECONDS"):
        load({"SKYLOOM_LEASE_SECONDS": "soon"})


def test_flags_override_the_environment_only_when_given() -> None:
    base = WorkerSettings(partition="env", slots=3)
    args = parse_args(["--partition", "gpu", "--burst", "--max-tasks", "5"])
    s = base.with_overrides(partition=args.partition, slots=args.slots, burst=args.burst, max_tasks=args.max_tasks)
    assert s == WorkerSettings(partition="gpu", slots=3, burst=True, max_tasks=5)
    assert parse_args([]).burst is None  # absent flag: the environment decides

"""The agent's configuration from the environment and the command line."""

from __future__ import annotations

import pytest

from fargate_worker.__main__ import parse_args
from fargate_worker.settings import WorkerConfigError, WorkerSettings, default_slots, load


def test_defaults_suit_production() -> None:
    s = WorkerSettings.from_env({})
    assert s == WorkerSettings(partition="default", slots=1, poll_wait=1, grace_seconds=100.0,
                               max_tasks=None, burst=False, busy_report_seconds=60.0,
                               overlap_reports=True, prefetch=0)


def test_auto_slots_is_one_per_vcpu() -> None:
    assert WorkerSettings.from_env({"SKYLOOM_WORKER_SLOTS": "auto"}).slots == default_slots() >= 1


def test_every_variable_is_read() -> None:
    s = WorkerSettings.from_env({
        "SKYLOOM_WORKER_PARTITION": "gpu", "SKYLOOM_WORKER_SLOTS": "4", "SKYLOOM_WORKER_POLL_WAIT": "20",
        "SKYLOOM_WORKER_GRACE_SECONDS": "90.5", "SKYLOOM_WORKER_MAX_TASKS": "7", "SKYLOOM_WORKER_BURST": "true",
    })
    assert s == WorkerSettings(partition="gpu", slots=4, poll_wait=20, grace_seconds=90.5, max_tasks=7, burst=True)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("SKYLOOM_WORKER_SLOTS", "0", "at least 1"),
        ("SKYLOOM_WORKER_SLOTS", "two", "integer"),
        ("SKYLOOM_WORKER_POLL_WAIT", "0", "1-20"),
        ("SKYLOOM_WORKER_POLL_WAIT", "21", "1-20"),
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

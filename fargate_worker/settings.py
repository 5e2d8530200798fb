"""The agent's own configuration, read from the environment (the ECS task definition sets it).

Stack-wide settings (tables, queues, leases, visibility timeout) stay in
:class:`skyloom.core.config.Settings`, shared with the control plane; only what concerns one agent
process lives here. Command-line flags override the environment (see ``__main__``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from skyloom.core.config import EnvReader, Settings

#: SQS caps WaitTimeSeconds at 20.
MAX_POLL_WAIT = 20
#: The container's CPU quota: cgroup v2 (``<quota> <period>`` or ``max <period>``), then v1's two files.
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"
#: Default of :attr:`WorkerSettings.max_output_bytes`: 1 GiB.
DEFAULT_MAX_OUTPUT_BYTES = 1 << 30
CGROUP_V1_CPU_QUOTA = ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")


class WorkerConfigError(ValueError):
    """The agent's configuration is invalid; retrying cannot help, so the process exits 2."""


@dataclass(frozen=True)
class WorkerSettings:
    """How one agent process works. Defaults suit production on Fargate Spot."""

    #: The partition whose queues this agent drains (SKYLOOM_WORKER_PARTITION).
    partition: str = "default"
    #: Tasks run at once, each in its own child process (SKYLOOM_WORKER_SLOTS; ``auto`` or unset:
    #: :func:`default_slots`, one per vCPU the container may use). One per vCPU because user code
    #: is usually CPU-bound and each child is its own interpreter: more slots only share the CPU.
    slots: int = field(default_factory=lambda: default_slots())
    #: Seconds of the long poll made when every level was empty (SKYLOOM_WORKER_POLL_WAIT, 1-20).
    #: Short on purpose: while it waits on the top level, new lower-level work waits up to this long.
    #: Not 0: an idle agent would then spin on ReceiveMessage.
    poll_wait: int = 1
    #: Seconds of each upper priority level's own long poll (SKYLOOM_WORKER_UPPER_POLL_WAIT, 1-20).
    #: Long, because an idle level costs one call per wait; but a stopping agent waits for its
    #: pollers' calls to return (a long poll abandoned in flight would still take a message and hide
    #: it for a visibility timeout), so this is also how long a stop can take. Local stacks use 2.
    upper_poll_wait: int = 10
    #: After SIGTERM, how long running tasks may finish before they are given back
    #: (SKYLOOM_WORKER_GRACE_SECONDS). Spot gives 120 s; keep the ECS stopTimeout above this.
    grace_seconds: float = 100.0
    #: Stop after this many claimed tasks; None runs forever (SKYLOOM_WORKER_MAX_TASKS).
    max_tasks: int | None = None
    #: Stop when the queues are empty (SKYLOOM_WORKER_BURST); for tests and batch runs.
    burst: bool = False
    #: Seconds between two reports of the busy fraction (SKYLOOM_WORKER_BUSY_REPORT_SECONDS).
    busy_report_seconds: float = 60.0
    #: Report a finished attempt (upload, commit, delete) from a reporter thread while the slot
    #: starts its next task (SKYLOOM_WORKER_OVERLAP_REPORTS): on moto and on AWS the commit costs
    #: as much as a short task, so doing it inline leaves the CPU idle for that long.
    overlap_reports: bool = True
    #: Messages claimed, with inputs downloaded, ahead of the slots (SKYLOOM_WORKER_PREFETCH; 0
    #: turns prefetch off). One by default, so that a slot finishing a task starts the next one at
    #: once instead of waiting for a receive, a claim and a download. Small on purpose: a
    #: prefetched task holds a lease and a message that another, idle agent (or a higher-priority
    #: task arriving later) could have had. An agent thus holds at most ``slots + prefetch``
    #: tasks that have not started (the bound the priority tests check), plus, once its tasks are
    #: seen to be short, a backlog received ahead (unclaimed: see ``policy.in_flight_limit``).
    prefetch: int = 1
    #: Largest outcome one attempt may return, in bytes: its outputs, the data of the results it
    #: creates and the payloads of its subtasks, together (SKYLOOM_WORKER_MAX_OUTPUT_BYTES). A task
    #: over it fails without retry (``OutputTooLarge``, naming its size and this limit) and the
    #: agent takes its next task. Why a limit: an outcome is held in memory twice on its way out
    #: (pickled in the child, then in the agent, which serves every slot) and S3 takes at most
    #: 5 GiB in one PutObject; past a limit the task, not the agent, must be the one that fails.
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES

    def __post_init__(self) -> None:
        if not self.partition:
            raise WorkerConfigError("SKYLOOM_WORKER_PARTITION must not be empty")
        if self.slots < 1:
            raise WorkerConfigError(f"SKYLOOM_WORKER_SLOTS must be at least 1, got {self.slots}")
        if not 1 <= self.poll_wait <= MAX_POLL_WAIT:
            raise WorkerConfigError(f"SKYLOOM_WORKER_POLL_WAIT must be 1-{MAX_POLL_WAIT}, got {self.poll_wait}")
        if not 1 <= self.upper_poll_wait <= MAX_POLL_WAIT:
            raise WorkerConfigError(
                f"SKYLOOM_WORKER_UPPER_POLL_WAIT must be 1-{MAX_POLL_WAIT}, got {self.upper_poll_wait}")
        if self.grace_seconds < 0:
            raise WorkerConfigError(f"SKYLOOM_WORKER_GRACE_SECONDS must be >= 0, got {self.grace_seconds}")
        if not 0 <= self.prefetch <= 10:
            raise WorkerConfigError(f"SKYLOOM_WORKER_PREFETCH must be 0-10, got {self.prefetch}")
        if self.max_output_bytes < 1:
            raise WorkerConfigError(f"SKYLOOM_WORKER_MAX_OUTPUT_BYTES must be at least 1, got {self.max_output_bytes}")
        if self.busy_report_seconds <= 0:
            raise WorkerConfigError(f"SKYLOOM_WORKER_BUSY_REPORT_SECONDS must be > 0, got {self.busy_report_seconds}")
        if self.max_tasks is not None and self.max_tasks < 1:
            raise WorkerConfigError(f"SKYLOOM_WORKER_MAX_TASKS must be at least 1, got {self.max_tasks}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        """The settings of the ``SKYLOOM_WORKER_*`` variables of ``env`` (default ``os.environ``).

        Raises:
            WorkerConfigError: a variable's value is invalid; the message names it.
        """
        given = _WorkerEnv.read(env, error=WorkerConfigError).given()
        if given.get("slots") == "auto":
            del given["slots"]  # the field's default: one per vCPU
        if given.get("max_tasks") == 0:
            del given["max_tasks"]  # 0 means no limit, as unset
        return cls(**given)

    def with_overrides(self, **overrides: Any) -> WorkerSettings:
        """These settings with every override that is not None applied (command-line flags)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class _WorkerEnv(EnvReader):
    """The ``SKYLOOM_WORKER_*`` variables (the ECS task definition and local mode set them)."""

    partition: str | None = Field(None, validation_alias="SKYLOOM_WORKER_PARTITION")
    slots: Annotated[Literal["auto"] | int | None, BeforeValidator(_lower)] = Field(
        None, validation_alias="SKYLOOM_WORKER_SLOTS"
    )
    poll_wait: int | None = Field(None, validation_alias="SKYLOOM_WORKER_POLL_WAIT")
    upper_poll_wait: int | None = Field(None, validation_alias="SKYLOOM_WORKER_UPPER_POLL_WAIT")
    grace_seconds: float | None = Field(None, validation_alias="SKYLOOM_WORKER_GRACE_SECONDS")
    max_tasks: int | None = Field(None, validation_alias="SKYLOOM_WORKER_MAX_TASKS")
    burst: bool | None = Field(None, validation_alias="SKYLOOM_WORKER_BURST")
    busy_report_seconds: float | None = Field(None, validation_alias="SKYLOOM_WORKER_BUSY_REPORT_SECONDS")
    overlap_reports: bool | None = Field(None, validation_alias="SKYLOOM_WORKER_OVERLAP_REPORTS")
    prefetch: int | None = Field(None, validation_alias="SKYLOOM_WORKER_PREFETCH")
    max_output_bytes: int | None = Field(None, validation_alias="SKYLOOM_WORKER_MAX_OUTPUT_BYTES")


def default_slots(cpu_max: str = CGROUP_CPU_MAX, v1_quota: tuple[str, str] = CGROUP_V1_CPU_QUOTA) -> int:
    """One task slot per vCPU the process may use: the CPUs it may run on (its affinity), capped
    by the container's CPU quota when the cgroup sets one. Fargate grants vCPUs as a quota (a
    1-vCPU task can see every CPU of its host), so the quota is the number that matters there;
    a fractional quota (0.25 vCPU) rounds up to one slot."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cpu_quota(cpu_max, v1_quota)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cpu_quota(cpu_max: str = CGROUP_CPU_MAX, v1_quota: tuple[str, str] = CGROUP_V1_CPU_QUOTA) -> float | None:
    """The container's CPU quota in vCPUs (quota / period), or None if it has none or it cannot be read."""
    try:
        quota, period = Path(cpu_max).read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota, period = (Path(name).read_text().strip() for name in v1_quota)
        except (OSError, ValueError):
            return None
    try:
        q, p = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    return q / p if q > 0 and p > 0 else None  # v1 says -1 for no quota


def load(env: Mapping[str, str] | None = None) -> tuple[Settings, WorkerSettings]:
    """Both halves of the agent's configuration from one environment."""
    try:
        return Settings.from_env(env), WorkerSettings.from_env(env)
    except WorkerConfigError:
        raise
    except ValueError as exc:
        raise WorkerConfigError(str(exc)) from exc

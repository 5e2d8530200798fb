"""The agent's own configuration, read from the environment (the ECS task definition sets it).

Stack-wide settings (tables, queues, leases, visibility timeout) stay in
:class:`skyloom.core.config.Settings`, shared with the control plane; only what concerns one agent
process lives here. Command-line flags override the environment (see ``__main__``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from skyloom.core.config import Settings

#: SQS caps WaitTimeSeconds at 20.
MAX_POLL_WAIT = 20


class WorkerConfigError(ValueError):
    """The agent's configuration is invalid; retrying cannot help, so the process exits 2."""


@dataclass(frozen=True)
class WorkerSettings:
    """How one agent process works. Defaults suit production on Fargate Spot."""

    #: The partition whose queues this agent drains (SKYLOOM_WORKER_PARTITION).
    partition: str = "default"
    #: Tasks run at once, each in its own child process (SKYLOOM_WORKER_SLOTS). Set it to
    #: :func:`default_slots` (one per vCPU: user code is usually CPU-bound and each child is its
    #: own interpreter) with ``SKYLOOM_WORKER_SLOTS=auto``. The default stays 1 for now: the e2e
    #: priority test assumes an agent holds at most one task (see the issue 4 report).
    slots: int = 1
    #: Seconds of the long poll made when every level was empty (SKYLOOM_WORKER_POLL_WAIT, 1-20).
    #: Short on purpose: while it waits on the top level, new lower-level work waits up to this long.
    #: Not 0: an idle agent would then spin on ReceiveMessage.
    poll_wait: int = 1
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
    #: turns prefetch off). Small on purpose: a prefetched task holds a lease and a message that
    #: another, idle agent (or a higher-priority task arriving later) could have had. Off by
    #: default for the same reason as ``slots``; 1 is the recommended production value.
    prefetch: int = 0

    def __post_init__(self) -> None:
        if not self.partition:
            raise WorkerConfigError("SKYLOOM_WORKER_PARTITION must not be empty")
        if self.slots < 1:
            raise WorkerConfigError(f"SKYLOOM_WORKER_SLOTS must be at least 1, got {self.slots}")
        if not 1 <= self.poll_wait <= MAX_POLL_WAIT:
            raise WorkerConfigError(f"SKYLOOM_WORKER_POLL_WAIT must be 1-{MAX_POLL_WAIT}, got {self.poll_wait}")
        if self.grace_seconds < 0:
            raise WorkerConfigError(f"SKYLOOM_WORKER_GRACE_SECONDS must be >= 0, got {self.grace_seconds}")
        if not 0 <= self.prefetch <= 10:
            raise WorkerConfigError(f"SKYLOOM_WORKER_PREFETCH must be 0-10, got {self.prefetch}")
        if self.busy_report_seconds <= 0:
            raise WorkerConfigError(f"SKYLOOM_WORKER_BUSY_REPORT_SECONDS must be > 0, got {self.busy_report_seconds}")
        if self.max_tasks is not None and self.max_tasks < 1:
            raise WorkerConfigError(f"SKYLOOM_WORKER_MAX_TASKS must be at least 1, got {self.max_tasks}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        e = os.environ if env is None else env
        max_tasks = _int(e, "SKYLOOM_WORKER_MAX_TASKS", 0)
        return cls(
            partition=e.get("SKYLOOM_WORKER_PARTITION") or "default",
            slots=default_slots() if e.get("SKYLOOM_WORKER_SLOTS", "").strip().lower() == "auto"
            else _int(e, "SKYLOOM_WORKER_SLOTS", 1),
            poll_wait=_int(e, "SKYLOOM_WORKER_POLL_WAIT", 1),
            grace_seconds=_float(e, "SKYLOOM_WORKER_GRACE_SECONDS", 100.0),
            max_tasks=max_tasks or None,
            burst=_bool(e, "SKYLOOM_WORKER_BURST"),
            busy_report_seconds=_float(e, "SKYLOOM_WORKER_BUSY_REPORT_SECONDS", 60.0),
            overlap_reports=_bool(e, "SKYLOOM_WORKER_OVERLAP_REPORTS", default=True),
            prefetch=_int(e, "SKYLOOM_WORKER_PREFETCH", 0),
        )

    def with_overrides(self, **overrides: Any) -> WorkerSettings:
        """These settings with every override that is not None applied (command-line flags)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


def default_slots() -> int:
    """One task slot per vCPU the process may use (its CPU affinity: what Fargate grants)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load(env: Mapping[str, str] | None = None) -> tuple[Settings, WorkerSettings]:
    """Both halves of the agent's configuration from one environment."""
    try:
        return Settings.from_env(env), WorkerSettings.from_env(env)
    except WorkerConfigError:
        raise
    except ValueError as exc:
        raise WorkerConfigError(str(exc)) from exc


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise WorkerConfigError(f"{key} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise WorkerConfigError(f"{key} must be a number, got {raw!r}") from None


def _bool(env: Mapping[str, str], key: str, *, default: bool = False) -> bool:
    raw = env.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise WorkerConfigError(f"{key} must be true or false, got {raw!r}")

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
    #: Tasks run at once, each in its own child process (SKYLOOM_WORKER_SLOTS).
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

    def __post_init__(self) -> None:
        if not self.partition:
            raise WorkerConfigError("SKYLOOM_WORKER_PARTITION must not be empty")
        if self.slots < 1:
            raise WorkerConfigError(f"SKYLOOM_WORKER_SLOTS must be at least 1, got {self.slots}")
        if not 1 <= self.poll_wait <= MAX_POLL_WAIT:
            raise WorkerConfigError(f"SKYLOOM_WORKER_POLL_WAIT must be 1-{MAX_POLL_WAIT}, got {self.poll_wait}")
        if self.grace_seconds < 0:
            raise WorkerConfigError(f"SKYLOOM_WORKER_GRACE_SECONDS must be >= 0, got {self.grace_seconds}")
        if self.max_tasks is not None and self.max_tasks < 1:
            raise WorkerConfigError(f"SKYLOOM_WORKER_MAX_TASKS must be at least 1, got {self.max_tasks}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        e = os.environ if env is None else env
        max_tasks = _int(e, "SKYLOOM_WORKER_MAX_TASKS", 0)
        return cls(
            partition=e.get("SKYLOOM_WORKER_PARTITION") or "default",
            slots=_int(e, "SKYLOOM_WORKER_SLOTS", 1),
            poll_wait=_int(e, "SKYLOOM_WORKER_POLL_WAIT", 1),
            grace_seconds=_float(e, "SKYLOOM_WORKER_GRACE_SECONDS", 100.0),
            max_tasks=max_tasks or None,
            burst=_bool(e, "SKYLOOM_WORKER_BURST"),
        )

    def with_overrides(self, **overrides: Any) -> WorkerSettings:
        """These settings with every override that is not None applied (command-line flags)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


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


def _bool(env: Mapping[str, str], key: str) -> bool:
    raw = env.get(key, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise WorkerConfigError(f"{key} must be true or false, got {raw!r}")

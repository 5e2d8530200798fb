"""What the agent measures about itself: per-task metrics, how busy its slots are, and how close a
task's child is to its memory limit.

Metrics are CloudWatch embedded metric format (Powertools ``EphemeralMetrics``: one object per
emission, so slot threads never share a metric buffer) printed to stdout, which the awslogs driver
ships. Dimensions are only ever the partition and the handler (plus Powertools' service): a task id
as a dimension would create one metric per task, unbounded cost; task ids go in the logs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Skyloom")
SERVICE = "skyloom-worker"
#: Fraction of the memory limit at which a task's child is reported.
MEMORY_WARN_FRACTION = 0.8
#: cgroup files holding the container's memory limit (v2, then v1).
CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
#: A v1 cgroup without a limit reports about 2**63; anything above this means "no limit".
_NO_LIMIT = 1 << 60

#: Task metric key -> (metric name, unit).
TASK_METRICS: dict[str, tuple[str, MetricUnit]] = {
    "queue_wait": ("TaskQueueWait", MetricUnit.Seconds),
    "fetch": ("TaskFetchTime", MetricUnit.Seconds),
    "compute": ("TaskComputeTime", MetricUnit.Seconds),
    "upload": ("TaskUploadTime", MetricUnit.Seconds),
    "bytes_in": ("TaskBytesIn", MetricUnit.Bytes),
    "bytes_out": ("TaskBytesOut", MetricUnit.Bytes),
}


def _metrics(partition: str, handler: str | None = None) -> EphemeralMetrics:
    m = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    m.add_dimension(name="partition", value=partition)
    if handler is not None:
        m.add_dimension(name="handler", value=handler)
    return m


def emit_task_metrics(partition: str, handler: str, metrics: Mapping[str, float], outcome: str) -> None:
    """One EMF line per finished attempt: its phase times and bytes, and a count by outcome."""
    m = _metrics(partition, handler)
    for key, value in metrics.items():
        named = TASK_METRICS.get(key)
        if named is not None:
            m.add_metric(name=named[0], unit=named[1], value=float(value))
    m.add_metric(name=f"Tasks{outcome.capitalize()}", unit=MetricUnit.Count, value=1)
    m.flush_metrics()


def emit_busy_fraction(partition: str, fraction: float) -> None:
    m = _metrics(partition)
    m.add_metric(name="WorkerBusyFraction", unit=MetricUnit.Percent, value=round(100 * fraction, 2))
    m.flush_metrics()


def emit_memory_warning(partition: str, handler: str) -> None:
    m = _metrics(partition, handler)
    m.add_metric(name="TaskMemoryNearLimit", unit=MetricUnit.Count, value=1)
    m.flush_metrics()


class BusyMeter:
    """Slot-seconds spent holding a task, so that the agent can say what fraction of its capacity
    was used: low means too many workers (or too little work), near 1 means scale out."""

    def __init__(self, slots: int) -> None:
        self._slots = slots
        self._clock = time.monotonic
        self._lock = threading.Lock()
        self._since: dict[int, float] = {}  # slot -> start of its current task
        self._busy = 0.0
        self._window_start = self._clock()

    def start(self, slot: int) -> None:
        with self._lock:
            self._since[slot] = self._clock()

    def stop(self, slot: int) -> None:
        with self._lock:
            began = self._since.pop(slot, None)
            if began is not None:
                self._busy += self._clock() - began

    def take(self) -> float:
        """The busy fraction since the previous call (or creation), and start a new window."""
        with self._lock:
            now = self._clock()
            busy = self._busy + sum(now - max(t, self._window_start) for t in self._since.values())
            elapsed = now - self._window_start
            self._busy = 0.0
            self._since = dict.fromkeys(self._since, now)
            self._window_start = now
        return min(1.0, busy / (self._slots * elapsed)) if elapsed > 0 else 0.0


def memory_limit_bytes(env: Mapping[str, str] | None = None, files: tuple[str, ...] = CGROUP_LIMIT_FILES,
                       slots: int = 1) -> int | None:
    """A task child's memory limit: SKYLOOM_WORKER_MEMORY_LIMIT_MB, else the container's cgroup
    limit shared by the slots; None if neither is known."""
    e = os.environ if env is None else env
    raw = e.get("SKYLOOM_WORKER_MEMORY_LIMIT_MB", "").strip()
    if raw:
        try:
            return int(float(raw) * 1024 * 1024)
        except ValueError:
            return None
    for name in files:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _NO_LIMIT:
            return int(text) // max(1, slots)
    return None


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process (Linux /proc), None if it is gone or unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None

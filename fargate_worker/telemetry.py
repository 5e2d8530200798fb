"""What the agent measures about itself: per-task metrics and traces, how busy its slots are, and
how close a task's child is to its memory limit.

Traces (X-Ray, Powertools ``Tracer``): each attempt is one trace whose phases (``fetch``,
``compute``, ``upload``) are subsegments; see :class:`AttemptTrace`. Unlike in Lambda, the tracer
is on by default (an X-Ray daemon sidecar receives it); ``POWERTOOLS_TRACE_DISABLED=true`` turns it
off, which the local stack and the tests do.

Metrics are CloudWatch embedded metric format (Powertools ``EphemeralMetrics``: one object per
emission, so slot threads never share a metric buffer) printed to stdout, which the awslogs driver
ships. Dimensions are only ever the partition and the handler (plus Powertools' service): a task id
as a dimension would create one metric per task, unbounded cost; task ids go in the logs.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Skyloom")
SERVICE = "skyloom-worker"
#: The agent's one logger: every module of the agent logs through it, so that the keys appended
#: at start (worker id, partition) are on every line.
logger = Logger(service=SERVICE)
#: Disabled only by POWERTOOLS_TRACE_DISABLED: Powertools would otherwise disable it anywhere but in
#: Lambda. No auto-patching: the heartbeat's AWS calls run outside any segment, and would log errors.
tracer = Tracer(service=SERVICE, auto_patch=False,
                disabled=os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in ("1", "true", "yes", "on"))
#: Fraction of the memory limit at which a task's child is reported.
MEMORY_WARN_FRACTION = 0.8
#: cgroup files holding the container's memory limit (v2, then v1). Read by hand: no well-kept
#: library reads cgroup limits, and psutil (which reads /proc) has no peak-memory reset (VmHWM,
#: ``clear_refs``) for ``child.py``, so the agent reads its four /proc and cgroup fields itself.
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
    "memory_peak": ("ChildMemoryHighWater", MetricUnit.Bytes),
}
#: How an attempt ended (``emit_task_metrics``'s outcome) -> the count metric it adds to.
OUTCOME_METRICS = {"completed": "TasksCompleted", "failed": "TasksFailed", "retried": "TasksRetried"}


def _metrics(partition: str, handler: str | None = None) -> EphemeralMetrics:
    m = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    m.add_dimension(name="partition", value=partition)
    if handler is not None:
        m.add_dimension(name="handler", value=handler)
    return m


#: A finished attempt as its metrics see it: handler, phase times and sizes, outcome.
TaskEnding = tuple[str, Mapping[str, float], str | None]


def emit_task_metrics(partition: str, endings: Sequence[TaskEnding]) -> None:
    """The finished attempts' phase times, bytes and memory peaks, and a count by outcome
    (``completed``, ``failed`` for good, ``retried``; None counts nothing: a lost lease).

    One EMF line per handler for all of ``endings`` (each metric's values as a list, one data point
    per attempt, as CloudWatch reads EMF): the attempts an agent commits together are told together,
    where a line (and Powertools' object) per attempt was a twentieth of an agent's CPU.
    """
    by_handler: dict[str, list[TaskEnding]] = {}
    for ending in endings:
        by_handler.setdefault(ending[0], []).append(ending)
    for handler, group in by_handler.items():
        m = _metrics(partition, handler)
        for _, metrics, outcome in group:
            for key, value in metrics.items():
                named = TASK_METRICS.get(key)
                if named is not None:
                    m.add_metric(name=named[0], unit=named[1], value=float(value))
            if outcome is not None:
                m.add_metric(name=OUTCOME_METRICS[outcome], unit=MetricUnit.Count, value=1)
        if m.metric_set:
            m.flush_metrics()


#: Attempts started are told at most this often, per handler, rather than one line each.
STARTS_EVERY_SECONDS = 1.0


class StartCounts:
    """Attempts an agent started (``TasksStarted``: with completed, failed and retried, where they
    went), told in one EMF line per handler at most every ``every`` seconds; the heartbeat's tick
    and the agent's exit tell the rest.

    A line per attempt was a thirtieth of an agent's CPU at a few hundred tasks a second, and a fifth
    of the lines it logs. Each start stays one data point (the line lists a value per attempt), so
    CloudWatch's statistics are what they were; a SIGKILLed agent loses at most a second of them.
    """

    def __init__(self, partition: str, every: float = STARTS_EVERY_SECONDS) -> None:
        self._partition = partition
        self._every = every
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._told = time.monotonic()

    def add(self, handler: str) -> None:
        with self._lock:
            self._counts[handler] += 1
            due = time.monotonic() - self._told >= self._every
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, Counter()
            self._told = time.monotonic()
        for handler, n in counts.items():
            m = _metrics(self._partition, handler)
            for _ in range(n):
                m.add_metric(name="TasksStarted", unit=MetricUnit.Count, value=1)
            m.flush_metrics()


def emit_label_run_times(partition: str, label: str, values: Sequence[float]) -> None:
    """A minute of one handler's or function's run times (``FunctionRunTime``): unlike
    ``TaskComputeTime``, per ``@skyloom.task`` function, which all run as the handler ``skyloom.call``.
    One metric per function: bounded by the code deployed, not by the data."""
    if not values:
        return
    m = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    m.add_dimension(name="partition", value=partition)
    m.add_dimension(name="label", value=label[:250])
    for v in values:
        m.add_metric(name="FunctionRunTime", unit=MetricUnit.Seconds, value=float(v))
    m.flush_metrics()


def emit_busy_fraction(partition: str, fraction: float) -> None:
    m = _metrics(partition)
    m.add_metric(name="WorkerBusyFraction", unit=MetricUnit.Percent, value=round(100 * fraction, 2))
    m.flush_metrics()


def emit_memory_warning(partition: str, handler: str) -> None:
    m = _metrics(partition, handler)
    m.add_metric(name="TaskMemoryNearLimit", unit=MetricUnit.Count, value=1)
    m.flush_metrics()


class AttemptTrace:
    """One X-Ray trace per attempt, its phases as subsegments.

    The phases run on different threads (a preparer fetches, a slot computes, a reporter uploads)
    and X-Ray keeps its current segment per thread, so each phase opens its own segment in the
    attempt's trace (same trace id, one sampling decision taken at the claim) around a subsegment
    named after the phase. The task id is an annotation: fine in a trace, never a metric dimension.
    """

    def __init__(self, task_id: str, handler: str) -> None:
        self._task_id = task_id
        self._handler = handler
        recorder: Any = None if tracer.disabled else tracer.provider  # the X-Ray SDK's recorder
        self._recorder = recorder
        self._trace_id = ""
        self._sampled = 0
        if recorder is not None:
            from aws_xray_sdk.core.models.traceid import TraceId

            self._trace_id = TraceId().to_id()
            self._sampled = 1 if recorder.sampler.should_trace({"service": SERVICE}) else 0

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Trace the ``with`` body as the attempt's ``name`` phase (a no-op when tracing is off)."""
        recorder = self._recorder
        if recorder is None:
            yield
            return
        recorder.begin_segment(name=SERVICE, traceid=self._trace_id, sampling=self._sampled)
        try:
            recorder.put_annotation("task_id", self._task_id)
            recorder.put_annotation("handler", self._handler)
            with recorder.in_subsegment(name):
                yield
        finally:
            recorder.end_segment()


class BusyMeter:
    """Slot-seconds spent holding a task, so that the agent can say what fraction of its capacity
    was used: low means too many workers (or too little work), near 1 means scale out."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
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
        return min(1.0, busy / (self.slots * elapsed)) if elapsed > 0 else 0.0


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

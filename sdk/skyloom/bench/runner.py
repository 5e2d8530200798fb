"""The benchmark itself: throughput of a large submission, latency of small batches, and the AWS
API calls each task costs, on a local stack it starts or on a deployed one.

Definitions (what the report's numbers mean):

- submission tasks/s: tasks / time to hand every batch to the API (``flush`` returned);
- processing tasks/s: tasks / (last task ended - first task started), from the task items;
- end-to-end tasks/s: tasks / (every result final - first submission);
- latency: submit -> every result of the batch final, for batches of 1, 10 and 100 zero-work
  tasks, one batch at a time, percentiles over the repetitions;
- busy fraction: time slots spent running user code / (slots x processing window), from the
  ``compute`` metric each task records;
- API calls per task: every AWS call of every process during the throughput phase (client side,
  functions, workers, idle polling included) / tasks; see ``SKYLOOM_COUNT_API_CALLS``. Reported with
  and without DynamoDB Streams polling (on AWS the resolve function's event source mapping polls, at
  no request charge); a fork-join phase (nested fan-out and join, 1 KiB inputs and outputs) reports
  its own figure after an independent run.

Processing numbers and per-phase times need read access to the tasks table (always true locally).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import skyloom
from skyloom.bench import tasks
from skyloom.core import aws

#: Seconds to let every process dump its API call counts (they dump every 2 s).
SETTLE_SECONDS = aws.DUMP_EVERY_SECONDS + 0.75


@dataclass(frozen=True)
class BenchConfig:
    """What to run. Defaults: 1,000 zero-work independent tasks on a local stack of 2 workers."""

    tasks: int = 1000
    #: "independent" tasks, or "forkjoin": tasks/fanout forks of ``fanout`` work tasks and a join.
    shape: str = "independent"
    fanout: int = 10
    payload_bytes: int = 0
    output_bytes: int = 0
    #: "zero" (no work), "sleep" or "compute" (a busy loop) for ``seconds``.
    mode: str = "zero"
    seconds: float = 0.0
    #: Tasks per submission (one flush each).
    batch_size: int = 500
    workers: int = 2
    #: Task slots per worker; None keeps the worker's default.
    slots: int | None = None
    #: Tasks each worker claims ahead of its slots; None keeps the worker's default.
    prefetch: int | None = None
    #: A deployed REST endpoint; None starts a local stack.
    endpoint: str | None = None
    latency_batches: tuple[int, ...] = (1, 10, 100)
    latency_repeats: int = 5
    timeout: float = 3600.0
    count_api_calls: bool = True
    #: Tasks of the fork-join phase after an independent run (forks of ``fanout`` work tasks and a
    #: join, 1 KiB in and out); 0 skips it.
    forkjoin_tasks: int = 240

    def __post_init__(self) -> None:
        if self.shape not in ("independent", "forkjoin"):
            raise ValueError(f"shape must be independent or forkjoin, not {self.shape!r}")
        if self.mode not in ("zero", "sleep", "compute"):
            raise ValueError(f"mode must be zero, sleep or compute, not {self.mode!r}")
        if self.tasks < 1 or self.batch_size < 1 or self.workers < 0 or self.fanout < 1:
            raise ValueError("tasks, batch_size and fanout must be >= 1, workers >= 0")


@dataclass
class _Counting:
    directory: Path | None = None
    baseline: dict[str, dict[str, int]] = field(default_factory=dict)


def run(config: BenchConfig) -> dict[str, Any]:
    """Run the benchmark and return its report (JSON-ready)."""
    counting = _Counting()
    with _api_counting(config, counting), _stack(config) as (endpoint, local):
        client = skyloom.connect(endpoint) if not local else _local_client(endpoint)
        try:
            counting.baseline = _total_calls(counting.directory)
            throughput = _throughput(client, config, local)
            after = _total_calls(counting.directory)
            calls = _diff(after, counting.baseline)
            forkjoin: dict[str, Any] | None = None
            if config.shape == "independent" and config.forkjoin_tasks:
                fj_config = replace(config, shape="forkjoin", tasks=config.forkjoin_tasks, payload_bytes=1024,
                                    output_bytes=1024, mode="zero", seconds=0.0)
                forkjoin = _throughput(client, fj_config, local)
                if counting.directory:
                    forkjoin.update(_calls_report(_diff(_total_calls(counting.directory), after),
                                                  int(forkjoin["tasks"])))
            latency = {str(b): _latency(client, b, config) for b in config.latency_batches}
        finally:
            client.close()
    report: dict[str, Any] = {
        "config": asdict(config),
        "throughput": throughput,
        "latency_seconds": latency,
        "forkjoin": forkjoin,
        **(_calls_report(calls, int(throughput["tasks"])) if counting.directory else {
            "api_calls_per_task": None, "api_calls_total_per_task": None,
            "api_calls_excluding_streams_per_task": None}),
    }
    return report


#: The service of the stream polling that, on AWS, Lambda's event source mapping does for free.
STREAMS_SERVICE = "dynamodbstreams"


def _calls_report(calls: dict[str, dict[str, int]], tasks: int) -> dict[str, Any]:
    n = max(1, tasks)
    total = sum(sum(o.values()) for o in calls.values())
    streams = sum(calls.get(STREAMS_SERVICE, {}).values())
    return {
        "api_calls_per_task": {svc: {op: round(c / n, 3) for op, c in sorted(ops.items())}
                               for svc, ops in sorted(calls.items())},
        "api_calls_total_per_task": round(total / n, 3),
        "api_calls_excluding_streams_per_task": round((total - streams) / n, 3),
    }


# ------------------------------------------------------------------------------------- phases
def _throughput(client: skyloom.Client, config: BenchConfig, local: bool) -> dict[str, Any]:
    payload = bytes(config.payload_bytes)
    args = (payload, config.output_bytes, config.mode, config.seconds)
    futures: list[skyloom.Future[Any]] = []
    start = time.monotonic()
    with client.session(name="bench") as session:
        if config.shape == "independent":
            units, per_unit = config.tasks, 1
        else:
            units, per_unit = max(1, config.tasks // (config.fanout + 2)), config.fanout + 2
        for first in range(0, units, config.batch_size):
            for _ in range(min(config.batch_size, units - first)):
                if config.shape == "independent":
                    futures.append(tasks.work.submit(*args))
                else:
                    futures.append(tasks.fork.submit(config.fanout, *args))
            session.flush()
        submitted = time.monotonic()
        session.wait(futures, timeout=config.timeout)
        done = time.monotonic()
        session_id = session.session_id
    total = units * per_unit
    out: dict[str, Any] = {
        "tasks": total,
        "submission_seconds": round(submitted - start, 3),
        "end_to_end_seconds": round(done - start, 3),
        "submission_tasks_per_s": round(units / max(submitted - start, 1e-9), 1),
        "end_to_end_tasks_per_s": round(total / max(done - start, 1e-9), 1),
    }
    if local:
        out.update(_task_stats(session_id, config))
    return out


def _task_stats(session_id: str, config: BenchConfig) -> dict[str, Any]:
    """Processing rate, busy fraction and per-phase means from the task items."""
    from skyloom.core.models import TaskModel

    items = list(TaskModel.by_session.query(session_id))
    started = [float(t.started_at) for t in items if t.started_at is not None]
    ended = [float(t.ended_at) for t in items if t.ended_at is not None]
    if not started or not ended:
        return {}
    window = max(ended) - min(started)
    phases: dict[str, list[float]] = {}
    for t in items:
        for key, value in (t.metrics or {}).items():
            phases.setdefault(key, []).append(float(value))
    compute = sum(phases.get("compute", []))
    stats: dict[str, Any] = {
        "processing_seconds": round(window, 3),
        "processing_tasks_per_s": round(len(items) / max(window, 1e-9), 1),
        "mean_per_task": {k: round(sum(v) / len(v), 6) for k, v in sorted(phases.items())},
    }
    per_worker = _slots_per_worker(config)
    if per_worker is not None:
        stats["slots"] = config.workers * per_worker
        stats["busy_fraction"] = round(compute / max(config.workers * per_worker * window, 1e-9), 3)
    return stats


def _slots_per_worker(config: BenchConfig) -> int | None:
    """The slots each agent ran: as asked, else the agents' default on this machine for a local
    stack; unknown for a deployed one (its agents' size is not ours to see: pass ``--slots``)."""
    if config.slots:
        return config.slots
    if config.endpoint:
        return None
    # Here, not at the top: only a local stack's bench needs the agent's rule (and skyloom[server]).
    from skyloom_server.fargate_worker.settings import default_slots

    slots: int = default_slots()
    return slots


def _latency(client: skyloom.Client, batch: int, config: BenchConfig) -> dict[str, float]:
    samples: list[float] = []
    with client.session(name=f"bench-latency-{batch}") as session:
        for _ in range(config.latency_repeats):
            start = time.monotonic()
            futures = [tasks.work.submit(b"", 0, "zero", 0.0) for _ in range(batch)]
            session.wait(futures, timeout=config.timeout)
            samples.append(time.monotonic() - start)
    return {"p50": _pct(samples, 50), "p90": _pct(samples, 90), "p99": _pct(samples, 99),
            "min": round(min(samples), 4), "max": round(max(samples), 4), "n": float(len(samples))}


def _pct(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return round(ordered[rank], 4)


# ---------------------------------------------------------------------------- infrastructure
@contextmanager
def _api_counting(config: BenchConfig, counting: _Counting) -> Iterator[None]:
    """Every process started from here on (stack functions, workers) counts its AWS calls."""
    if not config.count_api_calls:
        yield
        return
    directory = Path(tempfile.mkdtemp(prefix="skyloom-bench-calls-"))
    previous = os.environ.get(aws.COUNT_API_CALLS_ENV)
    os.environ[aws.COUNT_API_CALLS_ENV] = str(directory)
    aws.start_counting_api_calls(str(directory))
    counting.directory = directory
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(aws.COUNT_API_CALLS_ENV, None)
        else:
            os.environ[aws.COUNT_API_CALLS_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _stack(config: BenchConfig) -> Iterator[tuple[str, bool]]:
    if config.endpoint:
        yield config.endpoint, False
        return
    from skyloom.local import LocalStack

    env = {"SKYLOOM_WORKER_SLOTS": str(config.slots)} if config.slots else {}
    if config.prefetch is not None:
        env["SKYLOOM_WORKER_PREFETCH"] = str(config.prefetch)
    with LocalStack(workers=config.workers, worker_env=env) as stack:
        yield stack.endpoint, True


def _local_client(endpoint: str) -> skyloom.Client:
    from skyloom.local import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY

    return skyloom.connect(endpoint, credentials=(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY))


def _total_calls(directory: Path | None) -> dict[str, dict[str, int]]:
    """The sum of every process's latest dump (after letting them all dump once more)."""
    if directory is None:
        return {}
    aws.dump_api_call_counts()
    time.sleep(SETTLE_SECONDS)
    return aws.collect_counts(directory)


def _diff(after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for svc, ops in after.items():
        for op, n in ops.items():
            d = n - before.get(svc, {}).get(op, 0)
            if d > 0:
                out.setdefault(svc, {})[op] = d
    return out


def summary(report: dict[str, Any]) -> str:
    """A few human-readable lines of a report."""
    t = report["throughput"]
    lines = [
        f"tasks: {t['tasks']}  submission: {t['submission_tasks_per_s']}/s  "
        f"processing: {t.get('processing_tasks_per_s', '?')}/s  end-to-end: {t['end_to_end_tasks_per_s']}/s  "
        f"busy fraction: {t.get('busy_fraction', '? (pass --slots)')} of {t.get('slots', '?')} slots",
    ]
    for b, lat in report["latency_seconds"].items():
        lines.append(f"latency, batch of {b}: p50 {lat['p50']} s  p90 {lat['p90']} s  p99 {lat['p99']} s")
    if report.get("api_calls_per_task"):
        lines.append(f"AWS API calls per task: {report['api_calls_excluding_streams_per_task']} "
                     f"({report['api_calls_total_per_task']} with DynamoDB Streams polling)")
        for svc, ops in report["api_calls_per_task"].items():
            lines.append(f"  {svc}: " + ", ".join(f"{op} {n}" for op, n in ops.items()))
    fj = report.get("forkjoin")
    if fj:
        line = f"fork-join, {fj['tasks']} tasks with 1 KiB values: end-to-end {fj['end_to_end_tasks_per_s']}/s"
        if fj.get("api_calls_excluding_streams_per_task") is not None:
            line += (f", AWS API calls per task {fj['api_calls_excluding_streams_per_task']} "
                     f"({fj['api_calls_total_per_task']} with DynamoDB Streams polling)")
        lines.append(line)
    return "\n".join(lines)

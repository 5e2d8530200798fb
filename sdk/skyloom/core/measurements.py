"""Measurements that outlive sessions: values tasks record under business keys, and run-time history.

Intesa sizes Monte Carlo tasks from the time earlier runs took per path of the same trade; CACIB
probes at start for the same reason. A task records ``skyloom.metrics.record(trade_id,
"seconds_per_path", s)``; a later task of any session asks for that value in its options
(``TaskOptions(metrics=[(trade_id, "seconds_per_path")])``) and reads it at start with
``skyloom.metrics.latest``: the worker fetched it with the task's inputs (one BatchGetItem), so the
task makes no call of its own. Clients read values and history through ``/metrics``.

Storage: the measurements table (:data:`skyloom.core.resources.MEASUREMENTS`), never touched by a
session's close, purge or delete; each item expires by DynamoDB TTL after
``Settings.metrics_retention_days``. One partition key per (owner, business key): an identity reads
and writes only its own, as with sessions. Under it, per name:

- ``latest#<name>``: the last value, updated only by a newer one (a conditional write);
- ``h#<name>#<time>#<task>-a<attempt>-<n>``: every value, written with the attempt's commit, under an
  id fixed by the attempt so that a replayed commit writes nothing twice.

A measurement is written when the attempt that recorded it succeeds, like its outputs and its
subtasks: a failed attempt's measurements are discarded with the rest of what it staged. They are
written just before the commit (as staged subtasks are): an attempt whose lease is lost at that very
moment leaves them behind, which is harmless, since they measure work that did run.

Run-time history (:func:`add_durations`, :func:`duration_stats`): each worker adds its completed
attempts' compute times to a histogram per (owner, handler or function) and minute, and writes each
minute once (``d#<label>#<minute>#<worker>`` under the reserved key ``~durations``, which no business
key can take), so history costs one write per worker, function and minute, never one per task.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pynamodb.exceptions import PutError, TransactWriteError
from pynamodb.transactions import TransactWrite

from skyloom.core.config import Settings
from skyloom.core.ddb import Op, condition_failed, transact_idempotent, update_if
from skyloom.core.models import MeasurementModel
from skyloom.core.protocol_metrics import DurationStats, DurationWindow, MetricValue
from skyloom.runtime.outcome import Recorded

#: The reserved business key of run-time history (``~`` is not a key character).
DURATIONS_KEY = "~durations"
#: Seconds a run-time window spans.
WINDOW_SECONDS = 60
#: Histogram buckets: bucket i holds run times up to ``BUCKET_BASE * BUCKET_GROWTH ** (i + 1)``,
#: from 1 ms up: 25% apart, so a percentile read as its bucket's bound is at most 25% high.
BUCKET_BASE = 0.001
BUCKET_GROWTH = 1.25
#: Minutes averaged by :attr:`DurationStats.moving_average`.
MOVING_WINDOWS = 10


def _series(owner: str, key: str) -> str:
    return f"{owner}#{key}"


def _expiry(settings: Settings, at: float) -> int:
    return int(at + settings.metrics_retention_days * 86400)


def _value(m: MeasurementModel) -> MetricValue:
    return MetricValue(key=str(m.key), name=str(m.name), value=float(m.value or 0.0),
                       recorded_at=float(m.recorded_at or 0.0), session_id=m.session_id, task_id=m.task_id)


# ------------------------------------------------------------------------------------- recording
def record(settings: Settings, *, owner: str, session_id: str, task_id: str, attempt: int,
           values: Sequence[Recorded]) -> None:
    """Store what one attempt recorded: its history items in one transaction, then each (key,
    name)'s last value. Idempotent: a replay finds the history written and the last values as new."""
    if not values:
        return
    ops: list[Op] = []
    for n, v in enumerate(values):
        item = MeasurementModel(
            _series(owner, v.key), f"h#{v.name}#{v.at:017.6f}#{task_id}-a{attempt}-{n}", key=v.key, name=v.name,
            value=v.value, recorded_at=v.at, session_id=session_id, task_id=task_id,
            expires_at=_expiry(settings, v.at),
        )

        def put(tx: TransactWrite, item: MeasurementModel = item) -> None:
            tx.save(item, condition=MeasurementModel.entry.does_not_exist())

        ops.append(put)
    # A refused put is this attempt's own item written before (its id is fixed by the attempt).
    transact_idempotent(ops, lambda i: True)
    newest: dict[tuple[str, str], Recorded] = {}
    for v in values:
        if (v.key, v.name) not in newest or v.at >= newest[(v.key, v.name)].at:
            newest[(v.key, v.name)] = v
    for (key, name), v in newest.items():
        latest = MeasurementModel(_series(owner, key), f"latest#{name}")
        update_if(latest, [
            MeasurementModel.key.set(key), MeasurementModel.name.set(name), MeasurementModel.value.set(v.value),
            MeasurementModel.recorded_at.set(v.at), MeasurementModel.session_id.set(session_id),
            MeasurementModel.task_id.set(task_id), MeasurementModel.expires_at.set(_expiry(settings, v.at)),
        ], MeasurementModel.recorded_at.does_not_exist() | (MeasurementModel.recorded_at <= v.at))


# --------------------------------------------------------------------------------------- reading
def latest(owner: str, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], MetricValue]:
    """The last values of ``pairs`` (absent: never recorded, or expired), one BatchGetItem per 100."""
    keys = list(dict.fromkeys((_series(owner, k), f"latest#{n}") for k, n in pairs))
    return {(str(m.key), str(m.name)): _value(m) for m in MeasurementModel.batch_get(keys, consistent_read=True)}


def latest_by_key(owner: str, key: str) -> list[MetricValue]:
    """Every name recorded under ``key`` with its last value, names in order."""
    found = MeasurementModel.query(_series(owner, key), MeasurementModel.entry.startswith("latest#"))
    return [_value(m) for m in found]


def history(owner: str, key: str, name: str, *, limit: int, before: float | None = None) -> list[MetricValue]:
    """Values of (key, name) newest first, at most ``limit``, recorded before ``before`` if given."""
    prefix = f"h#{name}#"
    condition = (MeasurementModel.entry.between(prefix, f"{prefix}{before:017.6f}") if before is not None
                 else MeasurementModel.entry.startswith(prefix))
    found = MeasurementModel.query(_series(owner, key), condition, scan_index_forward=False, limit=limit,
                                   consistent_read=True)
    out = [_value(m) for m in found]
    return [v for v in out if before is None or v.recorded_at < before][:limit]


# ---------------------------------------------------------------------------------- run times
def bucket_of(seconds: float) -> int:
    """The histogram bucket of a run time (see :data:`BUCKET_GROWTH`)."""
    if seconds <= BUCKET_BASE:
        return 0
    return max(0, math.ceil(math.log(seconds / BUCKET_BASE, BUCKET_GROWTH)) - 1)


def bucket_bound(index: int) -> float:
    return BUCKET_BASE * BUCKET_GROWTH ** (index + 1)


@dataclass
class Histogram:
    """Run times of one (owner, label) in one window: count, sum, max and bucket counts."""

    count: int = 0
    total: float = 0.0
    max: float = 0.0
    buckets: dict[int, int] | None = None

    def add(self, seconds: float) -> None:
        self.buckets = self.buckets if self.buckets is not None else {}
        b = bucket_of(seconds)
        self.buckets[b] = self.buckets.get(b, 0) + 1
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)


def add_durations(settings: Settings, *, owner: str, label: str, window: int, worker: str, hist: Histogram) -> bool:
    """Write one worker's window of one label, once: False if it was written already (a replay)."""
    item = MeasurementModel(
        _series(owner, DURATIONS_KEY), f"d#{label}#{window:012d}#{worker}", label=label, window=window,
        samples=hist.count, total=hist.total, value=hist.max,
        buckets={str(k): v for k, v in sorted((hist.buckets or {}).items())},
        expires_at=_expiry(settings, float(window)),
    )
    try:
        item.save(condition=MeasurementModel.entry.does_not_exist())
    except (PutError, TransactWriteError) as exc:
        if condition_failed(exc):
            return False
        raise
    return True


def duration_stats(owner: str, label: str, *, since: float, until: float) -> DurationStats:
    """Count, mean, moving average and percentiles of ``label``'s run times between two times."""
    prefix = f"d#{label}#"
    found = MeasurementModel.query(
        _series(owner, DURATIONS_KEY),
        MeasurementModel.entry.between(f"{prefix}{int(since) // WINDOW_SECONDS * WINDOW_SECONDS:012d}",
                                       f"{prefix}{int(until):012d}~"),
    )
    per_window: dict[int, list[float]] = {}
    buckets: dict[int, int] = {}
    count, total, top = 0, 0.0, None
    for m in found:
        c, t = int(m.samples or 0), float(m.total or 0.0)
        w = per_window.setdefault(int(m.window or 0), [0.0, 0.0])
        w[0] += c
        w[1] += t
        count += c
        total += t
        top = max(top or 0.0, float(m.value or 0.0))
        for b, n in (m.buckets or {}).items():
            buckets[int(b)] = buckets.get(int(b), 0) + int(n)
    windows = [DurationWindow(start=float(start), count=int(c), mean=t / c)
               for start, (c, t) in sorted(per_window.items()) if c]
    recent = windows[-MOVING_WINDOWS:]
    recent_count = sum(w.count for w in recent)
    return DurationStats(
        label=label, since=since, until=until, count=count, mean=total / count if count else None,
        moving_average=sum(w.mean * w.count for w in recent) / recent_count if recent_count else None,
        moving_windows=len(recent), p50=_percentile(buckets, count, 50), p90=_percentile(buckets, count, 90),
        p99=_percentile(buckets, count, 99), max=top, windows=windows,
    )


def _percentile(buckets: Mapping[int, int], count: int, q: float) -> float | None:
    if not count:
        return None
    rank = max(1, math.ceil(q / 100 * count))
    seen = 0
    for b in sorted(buckets):
        seen += buckets[b]
        if seen >= rank:
            return bucket_bound(b)
    return None

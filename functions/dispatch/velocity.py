"""Each partition's backlog and shape, published every sweep (once a minute on AWS) so that a user
composes a scaling or alerting formula in CloudWatch without Skyloom owning it (docs/scaling.md).

Per partition (dimensions ``service`` and ``partition``): ``PartitionBacklog`` (messages waiting in
its queues, every priority level), ``PartitionInFlight`` (received, not yet deleted: running or
prefetched), ``PartitionMinWorkers`` and ``PartitionMaxWorkers`` (its declared floor and ceiling).
The rates that go with them are published where the events happen: ``TasksStarted`` and
``TasksCompleted`` by the workers (per partition and handler), and SQS's own ``NumberOfMessagesSent``
per queue for the inflow; the dashboard sums them per partition.

Costs one GetQueueAttributes per queue at most once a minute (:data:`EVERY_SECONDS`), whatever the
load and however often the sweeper runs (the local stack sweeps every second).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from skyloom.core.aws import client
from skyloom.core.config import Settings
from skyloom.core.dispatching import queue_urls_by_priority

NAMESPACE = "Skyloom"
SERVICE = "skyloom-dispatch"
#: CloudWatch's finest standard resolution: publishing more often adds calls, not information.
EVERY_SECONDS = 60.0


class Cadence:
    """Says when the gauges are due: the first sweep of a process, then every :data:`EVERY_SECONDS`."""

    def __init__(self, every: float = EVERY_SECONDS) -> None:
        self._every = every
        self._last: float | None = None
        self._lock = threading.Lock()

    def due(self, now: float | None = None) -> bool:
        t = time.monotonic() if now is None else now
        with self._lock:
            if self._last is not None and t - self._last < self._every:
                return False
            self._last = t
            return True


@dataclass(frozen=True)
class PartitionGauge:
    partition: str
    backlog: int
    in_flight: int
    min_workers: int
    max_workers: int


def read(settings: Settings) -> list[PartitionGauge]:
    """Every partition's queued and in-flight messages (summed over its priority levels) and shape."""
    sqs = client("sqs", settings)
    out: list[PartitionGauge] = []
    for spec in settings.partitions:
        backlog = in_flight = 0
        for url in queue_urls_by_priority(settings, spec.name):
            attrs = sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            backlog += int(attrs.get("ApproximateNumberOfMessages", 0))
            in_flight += int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
        out.append(PartitionGauge(spec.name, backlog, in_flight, spec.min_workers, spec.max_workers))
    return out


def publish(gauges: list[PartitionGauge]) -> None:
    """One EMF object per partition (its own ``partition`` dimension)."""
    for g in gauges:
        m = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
        m.add_dimension(name="partition", value=g.partition)
        m.add_metric(name="PartitionBacklog", unit=MetricUnit.Count, value=g.backlog)
        m.add_metric(name="PartitionInFlight", unit=MetricUnit.Count, value=g.in_flight)
        m.add_metric(name="PartitionMinWorkers", unit=MetricUnit.Count, value=g.min_workers)
        m.add_metric(name="PartitionMaxWorkers", unit=MetricUnit.Count, value=g.max_workers)
        m.flush_metrics()

"""Lambda entry point: the results table's DynamoDB stream -> dependency resolution.

Partial batch responses: a record that fails is reported alone and redelivered (with every record
after it in the shard, as Lambda does), so one poisoned record cannot block a whole batch forever.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from skyloom.core.config import Settings
from skyloom.core.models import bind
from skyloom_server.functions.resolve.resolution import Resolved, resolve_batch, resolve_record

logger = Logger(service="skyloom-resolve")
tracer = Tracer(service="skyloom-resolve")
metrics = Metrics(namespace="Skyloom", service="skyloom-resolve")
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


@cache
def settings() -> Settings:
    """Read once per container (cold start); tests clear the cache to rebuild from their env."""
    s = Settings.from_env()
    bind(s)
    return s


def images(record: DynamoDBRecord) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    data = record.dynamodb
    new = dict(data.new_image) if data and data.new_image else None
    old = dict(data.old_image) if data and data.old_image else None
    return old, new


def count(done: Resolved) -> None:
    for latency in done.latencies:
        metrics.add_metric(name="ResolutionLatency", unit=MetricUnit.Seconds, value=round(latency, 6))
    if done.queued:
        metrics.add_metric(name="TasksQueuedByResolve", unit=MetricUnit.Count, value=done.queued)
    if done.cancelled:
        metrics.add_metric(name="TasksCancelledByAbort", unit=MetricUnit.Count, value=done.cancelled)
    if done.spared:
        metrics.add_metric(name="AbortsStoppedAtOptionalEdge", unit=MetricUnit.Count, value=done.spared)


@tracer.capture_method
def record_handler(record: DynamoDBRecord) -> None:
    count(resolve_record(settings(), *images(record)))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The whole batch at once (fast path); on any error, record by record with partial failures,
    so only the records that really fail are redelivered. Both paths are idempotent."""
    try:
        changes = [images(DynamoDBRecord(r)) for r in event.get("Records", [])]
        count(resolve_batch(settings(), changes))
        return {"batchItemFailures": []}
    except Exception:
        logger.exception("batch resolution failed; resolving record by record")
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)


def reset_settings() -> None:
    """Forget the cached settings, as a fresh container would (local mode calls it per stack)."""
    settings.cache_clear()

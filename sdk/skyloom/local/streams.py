"""A DynamoDB stream event source mapping: what Lambda does between a table's stream and a function.

moto records the results table's changes but cannot invoke a function without Docker, so this thread
does what Lambda's poller does: it reads every shard through the DynamoDB Streams API (from
``TRIM_HORIZON``, children after their parents), turns up to ``batch_size`` records into the event
Lambda delivers, and calls the resolve handler, in order per shard and at least once.

Filter criteria as Lambda applies them: with ``filters`` (event filter patterns), a record that
matches none is dropped before the handler sees it, and a batch left empty invokes nothing. Only
the rules Skyloom's mapping uses are matched here (:func:`matches`: exact values and ``exists``),
walking the pattern rather than the record: moto's implementation of the whole syntax flattens
each record through a JSON round trip, and took a third of the poller's time. The unit tests hold
this matcher to moto's on every record shape that matters (``tests/unit/test_stream_filters.py``).

Failures follow ``ReportBatchItemFailures``: a response ``{"batchItemFailures": [{"itemIdentifier":
SEQ}]}`` checkpoints just before the lowest failed sequence number and re-delivers from there; an
exception (or an item identifier that is missing or not in the batch) re-delivers the whole batch.
Retries back off exponentially. With ``max_retries`` set, a batch that keeps failing is dropped
with an error log, as Lambda does when its retry attempts run out and no on-failure destination is
configured; by default it is retried until it succeeds, Lambda's default.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from skyloom.core import wire
from skyloom.local.invoke import Handler, LambdaContext

logger = logging.getLogger(__name__)

#: Lambda's maximum batch size for DynamoDB streams is 10,000; 100 is the default.
DEFAULT_BATCH_SIZE = 100
#: Pause after a round in which no shard had a full batch to read at once: the records written
#: meanwhile are read together (Lambda's mapping batches too, up to its batching window). Polling again
#: at once after every record or two cost a GetRecords, and an invocation, per task or so.
IDLE_SLEEP_SECONDS = 0.05
#: How often the shard list is re-read to find new (child) shards.
SHARD_REFRESH_SECONDS = 1.0


def _base64(value: Any) -> Any:
    return base64.b64encode(value).decode("ascii") if isinstance(value, bytes | bytearray) else value


def _image(image: Mapping[str, Any]) -> Any:
    """An item as Lambda's JSON carries it: binary values as base64 text.

    boto3 decodes ``B`` and ``BS`` to bytes, but the event Lambda delivers is JSON, so a handler on
    AWS sees base64 strings there; local mode must hand it the same. Records read as sent
    (:class:`RecordsAsSent`) already are; an item that is not well formed is passed on as it is.
    """
    converted = wire.convert_map(image, _base64)
    return image if converted is None else converted


class RecordsAsSent(wire.ItemParser):
    """The poller's parser: a ``GetRecords`` answer is handed over as it came, decoded from JSON
    only. Its records are already what Lambda's event carries (binary values in base64, times in
    epoch seconds): botocore's walk turned them into bytes and datetimes, which :func:`lambda_record`
    then turned back, and the two cost the poller half its time."""

    def _handle_json_body(self, raw_body: Any, shape: Any) -> Any:
        if shape is not None and shape.name == "GetRecordsOutput":
            return self._parse_body_as_json(raw_body)
        return super()._handle_json_body(raw_body, shape)


def lambda_record(record: Mapping[str, Any], *, region: str, stream_arn: str) -> dict[str, Any]:
    """Convert one ``GetRecords`` record (as boto3 returns it, or as sent: :class:`RecordsAsSent`)
    to a record of Lambda's event."""
    source = record["dynamodb"]
    change: dict[str, Any] = {}
    created = source.get("ApproximateCreationDateTime")
    # botocore's walk turns the wire's epoch number into a datetime and binary values into bytes, in
    # the same pass: a record whose time is still a number was read as sent, images included, and
    # walking its images again (a sixth of the poller's time) would change nothing.
    as_sent = isinstance(created, int | float)
    if isinstance(created, datetime):
        # Lambda sends epoch seconds; boto3 parsed the wire number into a datetime.
        change["ApproximateCreationDateTime"] = int(created.timestamp())
    elif isinstance(created, int | float):
        change["ApproximateCreationDateTime"] = int(created)
    elif created is not None:
        change["ApproximateCreationDateTime"] = created
    for name in ("Keys", "NewImage", "OldImage"):
        if name in source:
            change[name] = source[name] if as_sent else _image(source[name])
    for name in ("SequenceNumber", "SizeBytes", "StreamViewType"):
        if name in source:
            change[name] = source[name]
    converted: dict[str, Any] = {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": change,
        "eventSourceARN": stream_arn,
    }
    if "userIdentity" in record:  # TTL deletions carry the DynamoDB service principal
        converted["userIdentity"] = dict(record["userIdentity"])
    return converted


def check_pattern(pattern: Mapping[str, Any]) -> None:
    """Refuse a filter pattern that uses rules :func:`matches` does not implement."""
    for key, rule in pattern.items():
        if isinstance(rule, Mapping):
            check_pattern(rule)
        elif not isinstance(rule, list) or not rule:
            raise ValueError(f"filter pattern {key!r}: expected an object or a non-empty list, got {rule!r}")
        else:
            for each in rule:
                if isinstance(each, Mapping) and (set(each) != {"exists"} or not isinstance(each["exists"], bool)):
                    raise ValueError(f"filter pattern {key!r}: only exact values and 'exists' are supported, "
                                     f"got {each!r}")


_MISSING = object()


def matches(pattern: Mapping[str, Any], record: Any) -> bool:
    """Whether ``record`` matches an event filter pattern of exact values and ``exists`` rules
    (checked by :func:`check_pattern`): every field the pattern names must match one of its rules;
    a list value in the record matches if any of its elements does; under a missing field, every
    field is missing (``exists: false`` holds)."""
    for key, rule in pattern.items():
        value = record.get(key, _MISSING)
        if isinstance(rule, Mapping):
            if not matches(rule, value if isinstance(value, Mapping) else {}):
                return False
        elif not any(_matches_rule(r, value) for r in rule):
            return False
    return True


def _matches_rule(rule: Any, value: Any) -> bool:
    if isinstance(rule, Mapping):  # {"exists": bool}; a field holding an object is not a leaf
        return (value is not _MISSING and not isinstance(value, Mapping)) is rule["exists"]
    if isinstance(value, list):
        return any(type(v) is type(rule) and v == rule for v in value)
    return type(value) is type(rule) and value == rule


def first_failure(response: Any, batch: list[dict[str, Any]]) -> int | None:
    """Index of the first record to re-deliver after ``response``, or None if the batch succeeded.

    Implements Lambda's reading of a partial batch response for streams: no ``batchItemFailures``
    (or an empty list) is success; a failure whose ``itemIdentifier`` is empty or not a sequence
    number of the batch fails the whole batch; otherwise the lowest failed sequence number wins.
    """
    if not isinstance(response, Mapping):
        return None
    failures = response.get("batchItemFailures")
    if not failures:
        return None
    positions = {r["dynamodb"]["SequenceNumber"]: i for i, r in enumerate(batch)}
    failed: list[int] = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if not identifier or identifier not in positions:
            return 0
        failed.append(positions[identifier])
    return min(failed)


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    iterator: str | None = None
    #: Fetched, not yet successfully delivered; the head is the next record to deliver.
    pending: list[dict[str, Any]] = field(default_factory=list)
    last_sequence: str | None = None
    closed: bool = False
    attempts: int = 0
    retry_at: float = 0.0

    @property
    def finished(self) -> bool:
        return self.closed and not self.pending


class StreamPoller:
    """Feed one DynamoDB stream to a handler, like a Lambda event source mapping.

    Args:
        streams: A boto3 ``dynamodbstreams`` client (:class:`RecordsAsSent` spares parsing its records).
        stream_arn: The stream to read (``LatestStreamArn`` of the table).
        handler: The function's ``handler(event, context)``.
        region: ``awsRegion`` of the records and region of the function ARN.
        function_name: Name in the Lambda context.
        batch_size: Records per invocation at most.
        max_retries: Retries of a failing batch before it is dropped; None retries forever.
        backoff: First and largest delay between retries of a failing batch, in seconds.
        filters: The mapping's filter criteria (event patterns); none: every record is delivered.
    """

    def __init__(
        self,
        streams: Any,
        stream_arn: str,
        handler: Handler,
        *,
        region: str,
        function_name: str = "skyloom-resolve",
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_retries: int | None = None,
        backoff: tuple[float, float] = (0.1, 5.0),
        idle_sleep: float = IDLE_SLEEP_SECONDS,
        filters: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self._streams = streams
        self._stream_arn = stream_arn
        self._handler = handler
        self._region = region
        self._function_name = function_name
        self._batch_size = batch_size
        self._max_retries = max_retries
        self._backoff = backoff
        self._idle_sleep = idle_sleep
        for pattern in filters:
            check_pattern(pattern)
        self._filters = list(filters)
        self._shards: dict[str, _Shard] = {}
        self._next_refresh = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Invocations made, for tests and logs.
        self.invocations = 0
        #: Records dropped by the filters.
        self.filtered = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="skyloom-stream-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current invocation; a handler stuck longer than ``timeout`` is abandoned
        (the thread is a daemon, so it never keeps the process alive)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("stream poller did not stop within %.1f s (handler still running)", timeout)
            self._thread = None

    # -- loop ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                progressed = self.poll_once()
            except Exception:
                logger.exception("stream poller round failed; retrying")
                progressed = False
            if not progressed:
                self._stop.wait(self._idle_sleep)

    def poll_once(self) -> bool:
        """One round over the shards; True if a shard may have more to read at once (it fetched a
        full batch, or holds records still to deliver)."""
        now = time.monotonic()
        if now >= self._next_refresh:
            self._refresh_shards()
            self._next_refresh = now + SHARD_REFRESH_SECONDS
        progressed = False
        for shard in list(self._shards.values()):
            if self._stop.is_set():
                break
            if shard.finished or not self._parent_done(shard) or shard.retry_at > time.monotonic():
                continue
            progressed = self._poll_shard(shard) or progressed
        return progressed

    # -- steps -----------------------------------------------------------------------------------
    def _refresh_shards(self) -> None:
        start: str | None = None
        while True:
            kwargs: dict[str, Any] = {"StreamArn": self._stream_arn}
            if start is not None:
                kwargs["ExclusiveStartShardId"] = start
            description = self._streams.describe_stream(**kwargs)["StreamDescription"]
            for shard in description.get("Shards", []):
                if shard["ShardId"] not in self._shards:
                    self._shards[shard["ShardId"]] = _Shard(shard["ShardId"], shard.get("ParentShardId"))
            start = description.get("LastEvaluatedShardId")
            if not start:
                return

    def _parent_done(self, shard: _Shard) -> bool:
        # Lambda processes a child shard only once its parent is fully processed, keeping key order.
        parent = self._shards.get(shard.parent_id) if shard.parent_id else None
        return parent is None or parent.finished

    def _iterator(self, shard: _Shard) -> str:
        if shard.iterator is None:
            kwargs: dict[str, Any] = {"StreamArn": self._stream_arn, "ShardId": shard.shard_id}
            if shard.last_sequence is None:
                kwargs["ShardIteratorType"] = "TRIM_HORIZON"
            else:
                kwargs["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
                kwargs["SequenceNumber"] = shard.last_sequence
            shard.iterator = self._streams.get_shard_iterator(**kwargs)["ShardIterator"]
        return shard.iterator

    def _fetch(self, shard: _Shard) -> bool:
        """Read the shard's next page; True if it was full (more may be there already)."""
        try:
            page = self._streams.get_records(ShardIterator=self._iterator(shard), Limit=self._batch_size)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in ("ExpiredIteratorException", "TrimmedDataAccessException"):
                shard.iterator = None  # re-acquired after the last record fetched
                if code == "TrimmedDataAccessException":
                    shard.last_sequence = None
                return False
            if code == "ResourceNotFoundException":
                shard.closed = True
                return False
            raise
        records: list[dict[str, Any]] = page.get("Records", [])
        shard.iterator = page.get("NextShardIterator")
        if shard.iterator is None:
            shard.closed = True
        if records:
            shard.pending.extend(records)
            shard.last_sequence = records[-1]["dynamodb"]["SequenceNumber"]
        return len(records) >= self._batch_size

    def _poll_shard(self, shard: _Shard) -> bool:
        full = False
        if not shard.pending and not shard.closed:
            full = self._fetch(shard)
        if shard.pending:
            self._deliver(shard)
        return full or bool(shard.pending)

    def _passes(self, record: Mapping[str, Any]) -> bool:
        return not self._filters or any(matches(p, record) for p in self._filters)

    def _deliver(self, shard: _Shard) -> None:
        raw = shard.pending[: self._batch_size]
        converted = [lambda_record(r, region=self._region, stream_arn=self._stream_arn) for r in raw]
        #: Position in ``raw`` of each record delivered.
        positions = [i for i, r in enumerate(converted) if self._passes(r)]
        self.filtered += len(raw) - len(positions)
        if not positions:
            del shard.pending[: len(raw)]
            return
        records = [converted[i] for i in positions]
        context = LambdaContext(function_name=self._function_name, region=self._region, timeout_seconds=300.0)
        self.invocations += 1
        try:
            response = self._handler({"Records": records}, context)
        except Exception:
            logger.exception("resolve handler raised on a batch of %d records; re-delivering it", len(records))
            failed_from: int | None = 0
        else:
            failed_from = first_failure(response, records)
        if failed_from is not None:
            failed_from = positions[failed_from]  # the filtered-out records before it are done
        if failed_from is None:
            del shard.pending[: len(raw)]
            shard.attempts = 0
            shard.retry_at = 0.0
            return
        del shard.pending[:failed_from]
        shard.attempts += 1
        if self._max_retries is not None and shard.attempts > self._max_retries:
            dropped = len(raw) - failed_from
            logger.error(
                "dropping %d stream records of shard %s after %d failed attempts",
                dropped,
                shard.shard_id,
                shard.attempts,
            )
            del shard.pending[:dropped]
            shard.attempts = 0
            return
        first, largest = self._backoff
        delay = min(largest, first * 2 ** (shard.attempts - 1))
        shard.retry_at = time.monotonic() + delay
        logger.warning(
            "re-delivering %d records of shard %s from sequence %s in %.2f s (attempt %d)",
            len(raw) - failed_from,
            shard.shard_id,
            raw[failed_from]["dynamodb"]["SequenceNumber"],
            delay,
            shard.attempts + 1,
        )

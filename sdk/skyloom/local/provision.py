"""Create Skyloom's tables, queues and bucket on an AWS endpoint, from the shared definitions.

Reads only :mod:`skyloom.core.resources` and :class:`~skyloom.core.config.Settings`, the same inputs
the CDK stack reads, so local mode cannot drift from what is deployed. Every step checks what exists
first, so provisioning twice (a restarted ``local up``, a test that re-provisions) changes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from skyloom.core import aws
from skyloom.core.config import Settings
from skyloom.core.resources import RESULTS, TABLES, QueueSpec, TableSpec, queue_specs

#: Dead-letter queues keep messages as long as SQS allows, for post-mortems.
DLQ_RETENTION_SECONDS = 14 * 24 * 3600


@dataclass(frozen=True)
class Provisioned:
    """What :func:`provision` created or found."""

    #: Physical table name -> table ARN.
    tables: dict[str, str]
    #: ARN of the results table's stream, which drives ``functions/resolve``.
    results_stream_arn: str
    #: (partition, priority level) -> queue URL.
    queues: dict[tuple[str, int], str] = field(default_factory=dict)
    #: (partition, priority level) -> dead-letter queue URL.
    dead_letter_queues: dict[tuple[str, int], str] = field(default_factory=dict)
    bucket: str = ""


def provision(settings: Settings) -> Provisioned:
    """Create every resource of ``settings`` that does not exist yet, and describe them all.

    Args:
        settings: Names (stack prefix, bucket, partitions), region and endpoint to provision.

    Returns:
        Table ARNs, the results stream ARN, queue URLs and the bucket name.

    Raises:
        botocore.exceptions.ClientError: the endpoint refused a call for another reason than the
            resource already existing.
    """
    ddb = aws.client("dynamodb", settings)
    tables: dict[str, str] = {}
    stream_arn = ""
    for spec in TABLES:
        description = _ensure_table(ddb, settings.table_name(spec), spec)
        tables[description["TableName"]] = description["TableArn"]
        if spec is RESULTS:
            stream_arn = description["LatestStreamArn"]
    sqs = aws.client("sqs", settings)
    queues: dict[tuple[str, int], str] = {}
    dlqs: dict[tuple[str, int], str] = {}
    for queue in queue_specs(settings.partitions, settings.visibility_timeout):
        key = (queue.partition, queue.level)
        dlqs[key], queues[key] = _ensure_queue_pair(sqs, settings, queue)
    _ensure_bucket(aws.client("s3", settings), settings)
    return Provisioned(
        tables=tables, results_stream_arn=stream_arn, queues=queues, dead_letter_queues=dlqs, bucket=settings.bucket
    )


# -- tables ----------------------------------------------------------------------------------------
def _key_schema(hash_key: str, range_key: str | None) -> list[dict[str, str]]:
    schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key is not None:
        schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
    return schema


def _create_table_request(name: str, spec: TableSpec) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": k.name, "AttributeType": k.type} for k in spec.attribute_definitions()
        ],
        "KeySchema": _key_schema(spec.hash_key.name, spec.range_key.name if spec.range_key else None),
    }
    if spec.indexes:
        request["GlobalSecondaryIndexes"] = [
            {
                "IndexName": ix.name,
                "KeySchema": _key_schema(ix.hash_key.name, ix.range_key.name if ix.range_key else None),
                "Projection": {"ProjectionType": ix.projection},
            }
            for ix in spec.indexes
        ]
    if spec.stream is not None:
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": spec.stream}
    return request


def _ensure_table(ddb: Any, name: str, spec: TableSpec) -> dict[str, Any]:
    try:
        ddb.create_table(**_create_table_request(name, spec))
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    description: dict[str, Any] = _wait_active(ddb, name)
    if spec.stream is not None and not description.get("StreamSpecification", {}).get("StreamEnabled"):
        # A table left by an older definition: turn its stream on rather than fail.
        ddb.update_table(TableName=name, StreamSpecification={"StreamEnabled": True, "StreamViewType": spec.stream})
        description = _wait_active(ddb, name)
    if spec.ttl_attribute is not None:
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            ddb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute}
            )
    return description


def _wait_active(ddb: Any, name: str, timeout: float = 60.0) -> dict[str, Any]:
    # The emulator creates tables at once; real DynamoDB (provisioning against an account) does not.
    deadline = time.monotonic() + timeout
    while True:
        table: dict[str, Any] = ddb.describe_table(TableName=name)["Table"]
        if table.get("TableStatus") == "ACTIVE" or time.monotonic() > deadline:
            return table
        time.sleep(0.5)


# -- queues ----------------------------------------------------------------------------------------
def _ensure_queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    """Create the queue, or bring an existing one to ``attributes`` (SQS refuses a create whose
    attributes differ from the existing queue's, e.g. after the visibility timeout changed)."""
    try:
        url: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def _ensure_queue_pair(sqs: Any, settings: Settings, queue: QueueSpec) -> tuple[str, str]:
    dlq_url = _ensure_queue(
        sqs, settings.dlq_name(queue.partition, queue.level), {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)}
    )
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = _ensure_queue(
        sqs,
        settings.queue_name(queue.partition, queue.level),
        {
            "VisibilityTimeout": str(queue.visibility_timeout),
            "MessageRetentionPeriod": str(queue.retention_seconds),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": queue.max_receive_count}),
        },
    )
    return dlq_url, url


# -- bucket ----------------------------------------------------------------------------------------
def _ensure_bucket(s3: Any, settings: Settings) -> None:
    request: dict[str, Any] = {"Bucket": settings.bucket}
    if settings.region != "us-east-1":
        # S3 rejects an explicit us-east-1 location and requires one everywhere else.
        request["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
    try:
        s3.create_bucket(**request)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise

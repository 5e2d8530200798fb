"""The task queues: one standard SQS queue per (partition, priority level), each with a DLQ.

Shapes come from :func:`skyloom.core.resources.queue_specs` and names from :class:`Settings`, as in
local mode. Queues are encrypted (SQS-managed keys, or the customer-managed KMS key) and refuse
plain-HTTP requests (``enforce_ssl``).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from skyloom.core.config import Settings
from skyloom.core.resources import queue_specs

#: Dead-letter queues keep messages as long as SQS allows, for post-mortems (as in local mode).
DLQ_RETENTION = Duration.days(14)


class Queues(Construct):
    """``queues[(partition, level)]`` and ``dead_letter_queues[(partition, level)]``."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, key: kms.IKey | None) -> None:
        super().__init__(scope, construct_id)
        self.queues: dict[tuple[str, int], sqs.Queue] = {}
        self.dead_letter_queues: dict[tuple[str, int], sqs.Queue] = {}
        encryption = sqs.QueueEncryption.KMS if key else sqs.QueueEncryption.SQS_MANAGED
        for spec in queue_specs(settings.partitions, settings.visibility_timeout):
            name = settings.queue_name(spec.partition, spec.level)
            dlq = sqs.Queue(
                self,
                f"{name}-dlq",
                queue_name=settings.dlq_name(spec.partition, spec.level),
                retention_period=DLQ_RETENTION,
                encryption=encryption,
                encryption_master_key=key,
                enforce_ssl=True,
            )
            queue = sqs.Queue(
                self,
                name,
                queue_name=name,
                visibility_timeout=Duration.seconds(spec.visibility_timeout),
                retention_period=Duration.seconds(spec.retention_seconds),
                dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=spec.max_receive_count),
                encryption=encryption,
                encryption_master_key=key,
                enforce_ssl=True,
            )
            self.queues[(spec.partition, spec.level)] = queue
            self.dead_letter_queues[(spec.partition, spec.level)] = dlq

    def of_partition(self, partition: str) -> list[sqs.Queue]:
        return [q for (p, _), q in sorted(self.queues.items()) if p == partition]

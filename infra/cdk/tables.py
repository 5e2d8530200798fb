"""The DynamoDB tables, one per :data:`skyloom.core.resources.TABLES` entry.

On-demand, encrypted (AWS-owned key, or a customer-managed KMS key from context), point-in-time
recovery, TTL on each spec's attribute, and a stream where the spec asks for one (results -> resolve).
Names come from :meth:`Settings.table_name`, so the functions and workers find them by the same rule.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from skyloom.core.config import Settings
from skyloom.core.resources import TABLES, Key, TableSpec

_TYPES = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER, "B": dynamodb.AttributeType.BINARY}
_STREAMS = {
    "NEW_AND_OLD_IMAGES": dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
    "NEW_IMAGE": dynamodb.StreamViewType.NEW_IMAGE,
}
_PROJECTIONS = {"ALL": dynamodb.ProjectionType.ALL, "KEYS_ONLY": dynamodb.ProjectionType.KEYS_ONLY}


def _attribute(key: Key | None) -> dynamodb.Attribute | None:
    return None if key is None else dynamodb.Attribute(name=key.name, type=_TYPES[key.type])


class Tables(Construct):
    """Every Skyloom table, by logical role (``tables.by_logical["results"]``)."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, key: kms.IKey | None) -> None:
        super().__init__(scope, construct_id)
        self.by_logical: dict[str, dynamodb.Table] = {spec.logical: self._table(settings, spec, key) for spec in TABLES}

    @property
    def all(self) -> list[dynamodb.Table]:
        return list(self.by_logical.values())

    def _table(self, settings: Settings, spec: TableSpec, key: kms.IKey | None) -> dynamodb.Table:
        table = dynamodb.Table(
            self,
            spec.logical.capitalize(),
            table_name=settings.table_name(spec),
            partition_key=_attribute(spec.hash_key),  # type: ignore[arg-type]
            sort_key=_attribute(spec.range_key),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED if key else dynamodb.TableEncryption.AWS_MANAGED,
            encryption_key=key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=spec.ttl_attribute,
            stream=_STREAMS[spec.stream] if spec.stream else None,
            # State outlives a mistaken `cdk destroy`; delete the tables by hand when you mean it.
            removal_policy=RemovalPolicy.RETAIN,
        )
        for ix in spec.indexes:
            table.add_global_secondary_index(
                index_name=ix.name,
                partition_key=_attribute(ix.hash_key),  # type: ignore[arg-type]
                sort_key=_attribute(ix.range_key),
                projection_type=_PROJECTIONS[ix.projection],
            )
        return table

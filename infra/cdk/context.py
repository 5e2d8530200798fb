"""The deploy-time choices, read from CDK context (``cdk.json`` or ``-c key=value``).

Partitions are declared in ONE place, the ``skyloom:partitions`` context list, and parsed into
:class:`skyloom.core.resources.PartitionSpec`; nothing in code names a partition.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from constructs import Node

from skyloom.core.config import Settings
from skyloom.core.cost import Prices
from skyloom.core.resources import PartitionSpec

PARTITIONS_KEY = "skyloom:partitions"
STACK_KEY = "skyloom:stackPrefix"
KMS_KEY = "skyloom:kmsKeyArn"
AUTO_DELETE_KEY = "skyloom:autoDeleteData"
ALARM_TOPIC_KEY = "skyloom:alarmTopicArn"
EC2_SPOT_KEY = "skyloom:ec2Spot"
#: Third-party packages of each partition's worker image: ``{"partition": ["numpy==2.1.3", ...]}``.
WORKER_PACKAGES_KEY = "skyloom:workerPackages"
#: An exact pin, ``name[extras]==version``: what the image builds is what cdk.json says, and nothing
#: in it can reach the Dockerfile's shell as anything but one word.
_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")
#: False leaves out the results-stream -> resolve mapping. Only for emulators that cannot run it
#: (moto: see tests/infra/test_deploy_moto.py); a deployment without it resolves nothing.
STREAM_MAPPING_KEY = "skyloom:streamMapping"
#: Price overrides for cost estimates (camelCase keys of :class:`skyloom.core.cost.Prices`), e.g.
#: ``{"fargateSpotVcpuHour": 0.0135, "partitions": {"gpu": {"vcpuHour": 0.2}}}``; see docs/cost.md.
PRICES_KEY = "skyloom:prices"
#: Days a measurement (``skyloom.metrics.record``) is kept before DynamoDB's TTL deletes it.
METRICS_RETENTION_KEY = "skyloom:metricsRetentionDays"

_PARTITION_FIELDS = {
    "name": "name",
    "priorityLevels": "priority_levels",
    "cpu": "cpu",
    "memory": "memory",
    "minWorkers": "min_workers",
    "maxWorkers": "max_workers",
    "spot": "spot",
    # Access rules (see PartitionSpec and docs/security-model.md); shipped to the functions and the
    # workers through SKYLOOM_PARTITION_POLICIES by Settings.to_env.
    "allowedIdentities": "allowed_identities",
    "allowedHandlers": "allowed_handlers",
    "installedHandlersOnly": "installed_handlers_only",
}


class ContextError(ValueError):
    """A context value in cdk.json (or -c) is malformed; the message names the key."""


@dataclass(frozen=True)
class Ec2SpotSpec:
    """An optional EC2 Spot capacity provider (an Auto Scaling group) for big or GPU instances.

    Partitions listed in ``partitions`` run on it instead of Fargate.
    """

    instance_types: tuple[str, ...]
    partitions: tuple[str, ...]
    min_capacity: int = 0
    max_capacity: int = 4
    gpu: bool = False


@dataclass(frozen=True)
class DeployContext:
    """Everything the stack reads from context, validated."""

    settings: Settings
    kms_key_arn: str | None = None
    auto_delete_data: bool = False
    alarm_topic_arn: str | None = None
    ec2_spot: Ec2SpotSpec | None = None
    stream_mapping: bool = True
    #: Pinned third-party packages per partition (absent: the plain Skyloom image).
    worker_packages: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def partitions(self) -> tuple[PartitionSpec, ...]:
        return self.settings.partitions


def _loads(value: Any, key: str) -> Any:
    # `-c key=...` passes a string; cdk.json passes JSON values.
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ContextError(f"{key}: not valid JSON: {exc}") from exc
    return value


def parse_partitions(raw: Any) -> tuple[PartitionSpec, ...]:
    """``skyloom:partitions`` (a list of objects with camelCase keys) -> partition specs.

    Raises:
        ContextError: not a non-empty list of objects, unknown keys, duplicate names, or partitions
            with different priority level counts (the env contract carries one count for all).
    """
    raw = _loads(raw, PARTITIONS_KEY)
    if not isinstance(raw, list) or not raw:
        raise ContextError(f"{PARTITIONS_KEY} must be a non-empty list of partition objects")
    specs: list[PartitionSpec] = []
    for item in raw:
        if not isinstance(item, dict) or "name" not in item:
            raise ContextError(f"{PARTITIONS_KEY}: every partition is an object with a name, got {item!r}")
        unknown = set(item) - set(_PARTITION_FIELDS)
        if unknown:
            allowed = sorted(_PARTITION_FIELDS)
            raise ContextError(f"{PARTITIONS_KEY}: unknown keys {sorted(unknown)} (allowed: {allowed})")
        try:
            spec = PartitionSpec(**{_PARTITION_FIELDS[k]: v for k, v in item.items()})
        except ValueError as exc:  # the access fields' own validation, named for the context key
            raise ContextError(f"{PARTITIONS_KEY}: {exc}") from None
        if spec.min_workers < 0 or spec.max_workers < max(1, spec.min_workers):
            raise ContextError(f"{PARTITIONS_KEY}: {spec.name}: need 0 <= minWorkers <= maxWorkers, maxWorkers >= 1")
        if spec.priority_levels < 1:
            raise ContextError(f"{PARTITIONS_KEY}: {spec.name}: priorityLevels must be at least 1")
        specs.append(spec)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ContextError(f"{PARTITIONS_KEY}: duplicate partition names in {names}")
    if len({s.priority_levels for s in specs}) != 1:
        raise ContextError(
            f"{PARTITIONS_KEY}: every partition must have the same priorityLevels (SKYLOOM_PRIORITY_LEVELS)"
        )
    return tuple(specs)


def _parse_ec2_spot(raw: Any, partitions: tuple[PartitionSpec, ...]) -> Ec2SpotSpec | None:
    raw = _loads(raw, EC2_SPOT_KEY)
    if raw in (None, False, ""):
        return None
    if not isinstance(raw, dict) or not raw.get("instanceTypes") or not raw.get("partitions"):
        raise ContextError(f"{EC2_SPOT_KEY} must be an object with instanceTypes and partitions lists")
    names = {p.name for p in partitions}
    missing = set(raw["partitions"]) - names
    if missing:
        raise ContextError(f"{EC2_SPOT_KEY}: unknown partitions {sorted(missing)}")
    return Ec2SpotSpec(
        instance_types=tuple(raw["instanceTypes"]),
        partitions=tuple(raw["partitions"]),
        min_capacity=int(raw.get("minCapacity", 0)),
        max_capacity=int(raw.get("maxCapacity", 4)),
        gpu=bool(raw.get("gpu", False)),
    )


def parse_worker_packages(raw: Any, partitions: tuple[PartitionSpec, ...]) -> dict[str, tuple[str, ...]]:
    """``skyloom:workerPackages`` -> pinned packages per partition.

    Raises:
        ContextError: not an object of lists, an unknown partition, or a package that is not an
            exact ``name==version`` pin.
    """
    raw = _loads(raw, WORKER_PACKAGES_KEY)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ContextError(f"{WORKER_PACKAGES_KEY} must be an object: partition name -> list of pinned packages")
    names = {p.name for p in partitions}
    found: dict[str, tuple[str, ...]] = {}
    for partition, packages in raw.items():
        if partition not in names:
            raise ContextError(f"{WORKER_PACKAGES_KEY}: unknown partition {partition!r} (partitions: {sorted(names)})")
        if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
            raise ContextError(f"{WORKER_PACKAGES_KEY}.{partition} must be a list of strings, got {packages!r}")
        bad = [p for p in packages if not _PIN.match(p)]
        if bad:
            raise ContextError(
                f"{WORKER_PACKAGES_KEY}.{partition}: {bad} must be exact pins like numpy==2.1.3 "
                "(the image is rebuilt only when the pins change)"
            )
        if packages:
            found[partition] = tuple(packages)
    return found


def _bool(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true", "yes"))


def read(node: Node) -> DeployContext:
    """Read and validate the ``skyloom:*`` context of the app that ``node`` belongs to."""
    partitions = parse_partitions(node.try_get_context(PARTITIONS_KEY) or [{"name": "default"}])
    prefix = node.try_get_context(STACK_KEY) or "skyloom"
    prices = _loads(node.try_get_context(PRICES_KEY), PRICES_KEY)
    retention = node.try_get_context(METRICS_RETENTION_KEY)
    try:
        # The bucket name is left to CloudFormation (globally unique); SKYLOOM_BUCKET is set from it.
        settings = Settings(stack=prefix, partitions=partitions, bucket=f"{prefix}-data",
                            prices=Prices.parse(prices, source=PRICES_KEY).model_dump_json(
                                by_alias=True, exclude_defaults=True) if prices else "",
                            metrics_retention_days=int(retention) if retention is not None else 400)
    except ValueError as exc:
        raise ContextError(str(exc)) from exc
    return DeployContext(
        settings=settings,
        kms_key_arn=node.try_get_context(KMS_KEY) or None,
        auto_delete_data=_bool(node.try_get_context(AUTO_DELETE_KEY)),
        alarm_topic_arn=node.try_get_context(ALARM_TOPIC_KEY) or None,
        ec2_spot=_parse_ec2_spot(node.try_get_context(EC2_SPOT_KEY), partitions),
        worker_packages=parse_worker_packages(node.try_get_context(WORKER_PACKAGES_KEY), partitions),
        stream_mapping=node.try_get_context(STREAM_MAPPING_KEY) not in (False, "false"),
    )

"""Runtime settings of the control plane and the workers, read from the environment.

The CDK stack and local mode set the same variables, so code never guesses a resource name: it asks
:class:`Settings`. Every variable has a default that matches local mode.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Self

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from skyloom.core import limits
from skyloom.core.cost import Prices
from skyloom.core.resources import DUE_SHARDS, PartitionSpec, TableSpec

if TYPE_CHECKING:
    from skyloom.core.machine import Machine

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")

#: Environment variable carrying the access rules of restricted partitions (JSON, see
#: :func:`_policies`); the submit function and every worker read it, so both enforce the same rules.
POLICIES_ENV = "SKYLOOM_PARTITION_POLICIES"
_POLICY_FIELDS = ("allowed_identities", "allowed_handlers", "installed_handlers_only")
#: Environment variable carrying each partition's shape (JSON ``{partition: {"cpu", "memory",
#: "min_workers", "max_workers", "spot"}}``): what cost estimates price and the sweeper publishes.
SHAPES_ENV = "SKYLOOM_PARTITION_SHAPES"
_SHAPE_FIELDS = ("cpu", "memory", "min_workers", "max_workers", "spot")
#: Presigned URLs are bearer tokens for one object: short-lived by default, bounded so a
#: misconfiguration cannot hand out week-long links (S3's own maximum is 7 days).
PRESIGN_DEFAULT_SECONDS = 300
PRESIGN_MAX_SECONDS = 3600


class EnvReader(BaseSettings):
    """Reads environment variables with one rule for the control plane, the agent and local mode.

    A subclass declares one field per variable, named by its ``validation_alias``; ``None`` as a
    default means "unset: the dataclass built from it keeps its own default", so each default is
    written once. The rule: surrounding whitespace is ignored and a blank value is unset; a value that
    does not parse is a ``ValueError`` (or ``error``) naming the variable and the value.
    pydantic-settings does the reading (aliases, types); this class only points it at a given mapping.
    """

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None, error: type[ValueError] = ValueError) -> Self:
        """The variables of ``env`` (``os.environ`` by default) that this class declares.

        Parsed once per distinct set of values: the worker's child checks its partition's rules
        before every task, and parsing costs milliseconds where a lookup costs microseconds.
        """
        source = os.environ if env is None else env
        given = tuple((k, v) for k in _variables(cls) if (v := source.get(k, "").strip()))
        try:
            return _parsed(cls, given)  # type: ignore[return-value]  # _parsed returns an instance of cls
        except ValidationError as exc:
            raise error(_describe(exc.errors(include_url=False))) from None

    def given(self) -> dict[str, Any]:
        """The fields whose variable is set, for ``Dataclass(**reader.given())``."""
        return {k: v for k, v in self if v is not None}


@functools.cache
def _variables(cls: type[EnvReader]) -> tuple[str, ...]:
    """The variable names ``cls`` reads (its fields' aliases)."""
    names: list[str] = []
    for info in cls.model_fields.values():
        alias = info.validation_alias
        names += [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else [str(alias)]
    return tuple(names)


@functools.lru_cache(maxsize=64)
def _parsed(cls: type[EnvReader], given: tuple[tuple[str, str], ...]) -> EnvReader:
    return cls.model_validate(_Environment(cls, dict(given))())


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ`` (callers
    pass a child's environment, tests a dict). Overriding ``_load_env_vars`` is how the library's
    own ``.env`` file source does the same."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return dict(self._env)


#: How a value that does not parse is described, by pydantic error type.
_EXPECTED = {"int_parsing": "an integer", "int_from_float": "an integer", "float_parsing": "a number",
             "bool_parsing": "true or false"}


def _describe(errors: Sequence[Mapping[str, Any]]) -> str:
    first = errors[0]
    key = str(first["loc"][0]) if first.get("loc") else "environment"
    # A union (``auto`` or an integer) reports one error per member: the one with a known wording.
    mine = [e for e in errors if e.get("loc", ())[:1] == (key,)]
    known = next((e for e in mine if e["type"] in _EXPECTED), first)
    expected = _EXPECTED.get(str(known["type"]), str(known["msg"]).lower())
    return f"{key} must be {expected}, got {known.get('input')!r}"


@dataclass(frozen=True)
class Settings:
    """Where the resources are and the tunables that both sides of a queue must agree on."""

    stack: str = "skyloom"
    region: str = "us-east-1"
    #: AWS endpoint override (the embedded emulator, LocalStack); None means real AWS.
    aws_endpoint: str | None = None
    #: SQS's own endpoint, when it is not ``aws_endpoint``: local mode serves the queues from an
    #: emulator process of their own (:mod:`skyloom.local.stack`). None: ``aws_endpoint``.
    sqs_endpoint: str | None = None
    bucket: str = "skyloom-data"
    partitions: tuple[PartitionSpec, ...] = field(default_factory=lambda: (PartitionSpec("default"),))
    #: Values at most this large are stored inline in DynamoDB; larger ones go to S3.
    inline_max_bytes: int = limits.INLINE_DATA_BYTES.value
    #: How long a claim stays valid without a heartbeat; the crash-detection delay.
    lease_seconds: float = 60.0
    #: SQS visibility timeout of the task queues; kept above the heartbeat period.
    visibility_timeout: int = 120
    #: A queued task not claimed after this long may have lost its message: the sweeper re-sends,
    #: then waits as long again as the task has waited before the next copy (see
    #: ``skyloom.core.dispatching.redispatch_interval``).
    redispatch_after_seconds: float = 300.0
    #: A completed parent whose children are not live yet after this long is finalized by the sweeper.
    finalize_after_seconds: float = 30.0
    #: Default retries of a failed task (attempts = retries + 1).
    default_max_retries: int = 2
    #: First retry delay in seconds, doubled at each attempt (SQS DelaySeconds, capped at 900).
    retry_backoff_seconds: float = 1.0
    #: Lifetime of presigned S3 URLs (uploads and downloads); S3 checks it when a transfer starts.
    presign_seconds: int = PRESIGN_DEFAULT_SECONDS
    due_shards: int = DUE_SHARDS
    #: Price overrides for cost estimates, JSON (``skyloom:prices`` in cdk.json; see
    #: :mod:`skyloom.core.cost`); empty: the list prices. Kept as text so that settings stay hashable.
    prices: str = ""
    #: How long a measurement (``skyloom.metrics.record``) is kept, in days (``skyloom:metricsRetentionDays``).
    metrics_retention_days: int = 400
    #: The machine this process runs on: set by a worker agent once at start, stamped on every
    #: attempt record it writes (:mod:`skyloom.core.machine`). None elsewhere; not in the environment.
    machine: Machine | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.stack):
            raise ValueError(f"SKYLOOM_STACK must match {_NAME.pattern}, got {self.stack!r}")
        if not 1 <= self.presign_seconds <= PRESIGN_MAX_SECONDS:
            raise ValueError(
                f"SKYLOOM_PRESIGN_SECONDS must be between 1 and {PRESIGN_MAX_SECONDS}, got {self.presign_seconds}"
            )
        if self.metrics_retention_days < 1:
            raise ValueError(f"SKYLOOM_METRICS_RETENTION_DAYS must be at least 1, got {self.metrics_retention_days}")
        Prices.parse(self.prices)  # a malformed override fails at start, naming the key, not at the first estimate

    def endpoint(self, service: str) -> str | None:
        """The endpoint URL of ``service`` for boto3 (None: AWS's own)."""
        if service == "sqs" and self.sqs_endpoint:
            return self.sqs_endpoint
        return self.aws_endpoint

    # -- names -------------------------------------------------------------------------------
    def table_name(self, spec: TableSpec | str) -> str:
        logical = spec if isinstance(spec, str) else spec.logical
        return f"{self.stack}-{logical}"

    def queue_name(self, partition: str, level: int) -> str:
        return f"{self.stack}-{partition}-p{level}"

    def dlq_name(self, partition: str, level: int) -> str:
        return f"{self.queue_name(partition, level)}-dlq"

    def partition(self, name: str) -> PartitionSpec | None:
        for p in self.partitions:
            if p.name == name:
                return p
        return None

    @property
    def default_partition(self) -> str:
        return self.partitions[0].name

    # -- environment -------------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings of the ``SKYLOOM_*`` variables (and the AWS region) of ``env``, default
        ``os.environ``; what is unset keeps its default.

        Raises:
            ValueError: a variable's value is invalid; the message names it.
        """
        e = _StackEnv.read(env)
        given = e.given()
        names = [n.strip() for n in given.pop("partition_names", "default").split(",") if n.strip()]
        for n in names:
            if not _NAME.match(n):
                raise ValueError(f"SKYLOOM_PARTITIONS: partition name {n!r} must match {_NAME.pattern}")
        levels = {"priority_levels": given.pop("priority_levels")} if "priority_levels" in given else {}
        given.setdefault("bucket", f"{given.get('stack', cls.stack)}-data")
        partitions = tuple(PartitionSpec(n, **levels) for n in names or ["default"])
        partitions = _with_shapes(_with_policies(partitions, given.pop("policies", None)), given.pop("shapes", None))
        return cls(partitions=partitions, **given)

    def to_env(self) -> dict[str, str]:
        """The variables that make :meth:`from_env` rebuild these settings in another process."""
        env = {
            "SKYLOOM_STACK": self.stack,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "SKYLOOM_BUCKET": self.bucket,
            "SKYLOOM_PARTITIONS": ",".join(p.name for p in self.partitions),
            "SKYLOOM_PRIORITY_LEVELS": str(self.partitions[0].priority_levels),
            "SKYLOOM_INLINE_MAX_BYTES": str(self.inline_max_bytes),
            "SKYLOOM_LEASE_SECONDS": str(self.lease_seconds),
            "SKYLOOM_VISIBILITY_TIMEOUT": str(self.visibility_timeout),
            "SKYLOOM_REDISPATCH_AFTER_SECONDS": str(self.redispatch_after_seconds),
            "SKYLOOM_FINALIZE_AFTER_SECONDS": str(self.finalize_after_seconds),
            "SKYLOOM_DEFAULT_MAX_RETRIES": str(self.default_max_retries),
            "SKYLOOM_RETRY_BACKOFF_SECONDS": str(self.retry_backoff_seconds),
            "SKYLOOM_PRESIGN_SECONDS": str(self.presign_seconds),
            "SKYLOOM_METRICS_RETENTION_DAYS": str(self.metrics_retention_days),
        }
        if self.prices:
            env["SKYLOOM_PRICES"] = self.prices
        if self.aws_endpoint:
            env["SKYLOOM_AWS_ENDPOINT"] = self.aws_endpoint
        if self.sqs_endpoint:
            env["SKYLOOM_SQS_ENDPOINT"] = self.sqs_endpoint
        policies = {
            p.name: {f: list(v) if isinstance(v := getattr(p, f), tuple) else v for f in _POLICY_FIELDS}
            for p in self.partitions
            if p.restricted
        }
        if policies:
            env[POLICIES_ENV] = json.dumps(policies, separators=(",", ":"), sort_keys=True)
        shapes = {p.name: {f: getattr(p, f) for f in _SHAPE_FIELDS} for p in self.partitions}
        env[SHAPES_ENV] = json.dumps(shapes, separators=(",", ":"), sort_keys=True)
        return env


class _StackEnv(EnvReader):
    """The variables of :class:`Settings` (the CDK stack and local mode set them alike)."""

    stack: str | None = Field(None, validation_alias="SKYLOOM_STACK")
    region: str | None = Field(None, validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    aws_endpoint: str | None = Field(None, validation_alias="SKYLOOM_AWS_ENDPOINT")
    sqs_endpoint: str | None = Field(None, validation_alias="SKYLOOM_SQS_ENDPOINT")
    bucket: str | None = Field(None, validation_alias="SKYLOOM_BUCKET")
    partition_names: str | None = Field(None, validation_alias="SKYLOOM_PARTITIONS")
    priority_levels: int | None = Field(None, validation_alias="SKYLOOM_PRIORITY_LEVELS")
    policies: str | None = Field(None, validation_alias=POLICIES_ENV)
    inline_max_bytes: int | None = Field(None, validation_alias="SKYLOOM_INLINE_MAX_BYTES")
    lease_seconds: float | None = Field(None, validation_alias="SKYLOOM_LEASE_SECONDS")
    visibility_timeout: int | None = Field(None, validation_alias="SKYLOOM_VISIBILITY_TIMEOUT")
    redispatch_after_seconds: float | None = Field(None, validation_alias="SKYLOOM_REDISPATCH_AFTER_SECONDS")
    finalize_after_seconds: float | None = Field(None, validation_alias="SKYLOOM_FINALIZE_AFTER_SECONDS")
    default_max_retries: int | None = Field(None, validation_alias="SKYLOOM_DEFAULT_MAX_RETRIES")
    retry_backoff_seconds: float | None = Field(None, validation_alias="SKYLOOM_RETRY_BACKOFF_SECONDS")
    presign_seconds: int | None = Field(None, validation_alias="SKYLOOM_PRESIGN_SECONDS")
    shapes: str | None = Field(None, validation_alias=SHAPES_ENV)
    prices: str | None = Field(None, validation_alias="SKYLOOM_PRICES")
    metrics_retention_days: int | None = Field(None, validation_alias="SKYLOOM_METRICS_RETENTION_DAYS")


def _with_policies(partitions: tuple[PartitionSpec, ...], raw: str | None) -> tuple[PartitionSpec, ...]:
    """Apply ``SKYLOOM_PARTITION_POLICIES`` to the named partitions.

    The value is a JSON object ``{partition: {"allowed_identities": [...], "allowed_handlers": [...],
    "installed_handlers_only": bool}}``; absent partitions are unrestricted. A malformed value is an
    error rather than "no restriction", so a typo cannot silently open a shared fleet.
    """
    if raw is None or not raw.strip():
        return partitions
    try:
        policies: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{POLICIES_ENV} is not valid JSON: {exc}") from exc
    if not isinstance(policies, dict):
        raise ValueError(f"{POLICIES_ENV} must be a JSON object keyed by partition name")
    names = {p.name for p in partitions}
    for name, policy in policies.items():
        if name not in names:
            raise ValueError(f"{POLICIES_ENV}: partition {name!r} is not in SKYLOOM_PARTITIONS ({', '.join(names)})")
        if not isinstance(policy, dict) or set(policy) - set(_POLICY_FIELDS):
            raise ValueError(f"{POLICIES_ENV}: {name}: must be an object with keys among {list(_POLICY_FIELDS)}")
    return tuple(replace(p, **policies[p.name]) if p.name in policies else p for p in partitions)


def _with_shapes(partitions: tuple[PartitionSpec, ...], raw: str | None) -> tuple[PartitionSpec, ...]:
    """Apply ``SKYLOOM_PARTITION_SHAPES`` (cpu units, memory MiB, min/max workers, Spot) to the named
    partitions; absent ones keep the defaults. Malformed is an error naming the variable."""
    if raw is None or not raw.strip():
        return partitions
    try:
        shapes: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{SHAPES_ENV} is not valid JSON: {exc}") from exc
    if not isinstance(shapes, dict):
        raise ValueError(f"{SHAPES_ENV} must be a JSON object keyed by partition name")
    for name, shape in shapes.items():
        if not isinstance(shape, dict) or set(shape) - set(_SHAPE_FIELDS):
            raise ValueError(f"{SHAPES_ENV}: {name}: must be an object with keys among {list(_SHAPE_FIELDS)}")
        if any(not isinstance(shape.get(f, 0), int) for f in _SHAPE_FIELDS if f != "spot"):
            raise ValueError(f"{SHAPES_ENV}: {name}: cpu, memory, min_workers and max_workers are integers")
    return tuple(replace(p, **shapes[p.name]) if p.name in shapes else p for p in partitions)

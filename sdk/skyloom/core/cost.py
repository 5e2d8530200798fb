"""A session's estimated cost in dollars, from what the task and result items already record.

Two parts, both shown with their arithmetic (``docs/cost.md`` explains every term):

- **compute**: for each partition, the seconds its workers spent on the session's attempts (every
  attempt, failed ones included: they were paid for), times the price of the share of a worker one
  attempt holds: ``(vCPU x vCPU-hour price + GB x GB-hour price) / 3600 / slots``. A worker runs one
  task per slot, one slot per vCPU by default, so a task of a 1 vCPU / 2 GB worker holds all of it.
- **requests**: the AWS requests the session's tasks and results cause, counted from the items by
  the rules of :func:`request_counts` (the calls the design makes per task, see ``DESIGN.md``'s
  performance model), times list prices. Idle polling and the sweeper's schedule are the fleet's,
  not a session's: they are left out.

Prices default to AWS's public list prices in us-east-1 (Fargate Spot for Spot partitions, Fargate
for on-demand ones); ``skyloom:prices`` in cdk.json overrides any of them, per partition too, and
reaches the API through ``SKYLOOM_PRICES`` (:attr:`skyloom.core.config.Settings.prices`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from skyloom.core.protocol import ResultInfo, TaskInfo
from skyloom.core.resources import PartitionSpec

#: Environment variable carrying the price overrides (a JSON object, ``skyloom:prices``'s value).
PRICES_ENV = "SKYLOOM_PRICES"
#: Lambda invocations caused per API request or stream batch are billed by GB-second: this long.
LAMBDA_SECONDS_PER_INVOCATION = 0.2
#: Memory of the functions (``infra/cdk/functions.py``: submit 1024 MB, resolve 512 MB), averaged.
LAMBDA_GB = 0.75
#: Items per batch of the results stream read by resolve (its event source mapping).
STREAM_BATCH = 100
#: Tasks the SDK sends per submission request, and result ids it waits on per request.
CLIENT_BATCH = 500


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class PartitionPrice(_Camel):
    """A partition's worker price (either field alone overrides the default it names)."""

    vcpu_hour: float | None = Field(default=None, ge=0)
    gb_hour: float | None = Field(default=None, ge=0)


class Prices(_Camel):
    """List prices in dollars (us-east-1, Linux/x86), each overridable in ``skyloom:prices``."""

    fargate_spot_vcpu_hour: float = Field(default=0.01245, ge=0)
    fargate_spot_gb_hour: float = Field(default=0.00137, ge=0)
    fargate_vcpu_hour: float = Field(default=0.04048, ge=0)
    fargate_gb_hour: float = Field(default=0.004445, ge=0)
    api_gateway_per_million: float = Field(default=3.50, ge=0)
    lambda_requests_per_million: float = Field(default=0.20, ge=0)
    lambda_gb_second: float = Field(default=0.0000133334, ge=0)
    dynamodb_write_units_per_million: float = Field(default=0.625, ge=0)
    dynamodb_read_units_per_million: float = Field(default=0.125, ge=0)
    sqs_per_million: float = Field(default=0.40, ge=0)
    s3_put_per_thousand: float = Field(default=0.005, ge=0)
    s3_get_per_thousand: float = Field(default=0.0004, ge=0)
    partitions: dict[str, PartitionPrice] = Field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | Mapping[str, Any] | None, *, source: str = PRICES_ENV) -> Prices:
        """Overrides (JSON text or an object, camelCase keys) over the defaults.

        Raises:
            ValueError: not an object, an unknown key, or a negative price; the message names it.
        """
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return cls()
        try:
            value = json.loads(raw) if isinstance(raw, str) else dict(raw)
            return cls.model_validate(value)
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            if isinstance(exc, ValidationError):
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"{source}: {where}: {first['msg']}") from None
            raise ValueError(f"{source} must be a JSON object of prices: {exc}") from None


class PartitionRate(BaseModel):
    """What one second of one task costs on a partition, and how that was reached."""

    partition: str
    vcpus: float
    memory_gb: float
    slots: int
    vcpu_hour: float
    gb_hour: float
    spot: bool

    @property
    def per_task_second(self) -> float:
        return (self.vcpus * self.vcpu_hour + self.memory_gb * self.gb_hour) / 3600 / self.slots


class Pricing(BaseModel):
    """The stack's price sheet as the API serves it (``GET /pricing``): per-partition rates and the
    request prices, with the inline threshold that says which values went to S3."""

    rates: dict[str, PartitionRate]
    prices: Prices
    inline_max_bytes: int


def partition_rate(spec: PartitionSpec, prices: Prices) -> PartitionRate:
    """A partition's rate: its override, else Fargate Spot (Spot partitions) or Fargate list prices;
    slots as a worker picks them by default, one per vCPU."""
    own = prices.partitions.get(spec.name, PartitionPrice())
    vcpus = spec.cpu / 1024
    vcpu_default = prices.fargate_spot_vcpu_hour if spec.spot else prices.fargate_vcpu_hour
    gb_default = prices.fargate_spot_gb_hour if spec.spot else prices.fargate_gb_hour
    return PartitionRate(
        partition=spec.name, vcpus=vcpus, memory_gb=spec.memory / 1024, slots=max(1, math.floor(vcpus)),
        vcpu_hour=own.vcpu_hour if own.vcpu_hour is not None else vcpu_default,
        gb_hour=own.gb_hour if own.gb_hour is not None else gb_default, spot=spec.spot,
    )


def pricing(partitions: Sequence[PartitionSpec], prices: Prices, inline_max_bytes: int) -> Pricing:
    return Pricing(rates={p.name: partition_rate(p, prices) for p in partitions}, prices=prices,
                   inline_max_bytes=inline_max_bytes)


# ------------------------------------------------------------------------------------- estimate
class Line(BaseModel):
    """One line of the bill: a quantity, its unit price, and their product."""

    item: str
    quantity: float
    unit: str
    unit_price: float
    dollars: float


class CostEstimate(BaseModel):
    """The estimate with its breakdown; ``total`` is the sum of every line."""

    currency: str = "USD"
    total: float
    compute: list[Line]
    requests: list[Line]
    compute_seconds: dict[str, float]


class Usage(BaseModel):
    """What the estimate is computed from, per session (see :func:`request_counts`)."""

    #: partition -> seconds of attempts run there.
    compute_seconds: dict[str, float] = Field(default_factory=dict)
    tasks: int = 0
    client_tasks: int = 0
    attempts: int = 0
    failed_attempts: int = 0
    results: int = 0
    dependencies: int = 0
    outputs_completed: int = 0
    #: Results whose value went to S3 (above the inline threshold), and reads of such values.
    s3_values: int = 0
    s3_reads: int = 0
    #: Kilobytes of values stored inline (DynamoDB bills writes by the KB, reads by 4 KB).
    inline_kb: float = 0.0


def usage_of(tasks: Sequence[TaskInfo], results: Sequence[ResultInfo], *, inline_max_bytes: int,
             default_partition: str) -> Usage:
    """Count a session's usage from its task and result items (every attempt's run time, by the
    partition it ran on; a task without a partition of its own ran on ``default_partition``)."""
    u = Usage(tasks=len(tasks), results=len(results))
    size = {r.result_id: r.size for r in results}
    for t in tasks:
        partition = t.partition or default_partition
        spans = [a.ended_at - a.started_at for a in t.attempts if a.started_at is not None and a.ended_at is not None]
        u.compute_seconds[partition] = u.compute_seconds.get(partition, 0.0) + sum(max(0.0, s) for s in spans)
        u.attempts += len(t.attempts)
        u.failed_attempts += sum(1 for a in t.attempts if a.outcome != "completed")
        u.dependencies += len(t.data_dependencies)
        big_inputs = sum(1 for d in t.data_dependencies if (size.get(d) or 0) > inline_max_bytes)
        u.s3_reads += big_inputs * len(t.attempts)
        if t.parent_task_id is None:
            u.client_tasks += 1
    for r in results:
        if r.owner_task_id is not None and r.status == "Completed":
            u.outputs_completed += 1
        if (r.size or 0) > inline_max_bytes:
            u.s3_values += 1
        elif r.size:
            u.inline_kb += r.size / 1024
    return u


def request_counts(u: Usage) -> dict[str, float]:
    """AWS requests (and DynamoDB capacity units) a session's items imply:

    - API Gateway requests: one submission per :data:`CLIENT_BATCH` client tasks and one wait for
      their results; Lambda invocations: those, plus one resolve batch per :data:`STREAM_BATCH`
      results.
    - DynamoDB write units: each task and result created (1), each dependency edge (1) and its
      release when the input completes (1), each completed attempt's transaction (2 per item: the
      task and its outputs), each failed attempt's record (1), plus the KB of inline values.
    - DynamoDB read units: each attempt reads its task (1) and its inputs (1 each), strongly
      consistent, plus the inline KB read by 4 KB.
    - SQS requests: each attempt's message sent, received and deleted (3).
    - S3: one PUT per value above the inline threshold, one GET per read of such a value.
    """
    api = 2 * math.ceil(u.client_tasks / CLIENT_BATCH)
    return {
        "api_requests": api,
        "lambda_invocations": api + math.ceil(u.results / STREAM_BATCH),
        "dynamodb_write_units": (u.tasks + u.results + 2 * u.dependencies + 2 * (u.attempts - u.failed_attempts)
                                 + 2 * u.outputs_completed + u.failed_attempts + math.ceil(u.inline_kb)),
        "dynamodb_read_units": u.attempts + u.dependencies + math.ceil(u.inline_kb / 4),
        "sqs_requests": 3 * u.attempts,
        "s3_puts": u.s3_values,
        "s3_gets": u.s3_reads,
    }


def estimate(usage: Usage, sheet: Pricing) -> CostEstimate:
    """Price ``usage`` with ``sheet``. A partition without a rate (removed from the stack since)
    is priced as a 1 vCPU / 2 GB Fargate Spot worker."""
    compute: list[Line] = []
    for partition, seconds in sorted(usage.compute_seconds.items()):
        rate = sheet.rates.get(partition) or partition_rate(PartitionSpec(partition), sheet.prices)
        compute.append(Line(item=f"compute {partition} ({rate.vcpus:g} vCPU, {rate.memory_gb:g} GB / {rate.slots} "
                                 f"slot{'s' if rate.slots > 1 else ''}, {'spot' if rate.spot else 'on-demand'})",
                            quantity=round(seconds, 3), unit="task-seconds", unit_price=rate.per_task_second,
                            dollars=seconds * rate.per_task_second))
    p = sheet.prices
    counts = request_counts(usage)
    lambda_gb_s = counts["lambda_invocations"] * LAMBDA_SECONDS_PER_INVOCATION * LAMBDA_GB
    priced = [
        ("API Gateway requests", counts["api_requests"], "requests", p.api_gateway_per_million / 1e6),
        ("Lambda invocations", counts["lambda_invocations"], "requests", p.lambda_requests_per_million / 1e6),
        ("Lambda duration", lambda_gb_s, "GB-seconds", p.lambda_gb_second),
        ("DynamoDB writes", counts["dynamodb_write_units"], "write units", p.dynamodb_write_units_per_million / 1e6),
        ("DynamoDB reads", counts["dynamodb_read_units"], "read units", p.dynamodb_read_units_per_million / 1e6),
        ("SQS requests", counts["sqs_requests"], "requests", p.sqs_per_million / 1e6),
        ("S3 PUT", counts["s3_puts"], "requests", p.s3_put_per_thousand / 1e3),
        ("S3 GET", counts["s3_gets"], "requests", p.s3_get_per_thousand / 1e3),
    ]
    requests = [Line(item=item, quantity=q, unit=unit, unit_price=price, dollars=q * price)
                for item, q, unit, price in priced]
    total = sum(line.dollars for line in (*compute, *requests))
    return CostEstimate(total=total, compute=compute, requests=requests,
                        compute_seconds={k: round(v, 3) for k, v in sorted(usage.compute_seconds.items())})

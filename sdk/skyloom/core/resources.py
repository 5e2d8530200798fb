"""The single definition of Skyloom's AWS resources.

Local mode provisions exactly these tables, queues and bucket on the embedded emulator, and the CDK
stack deploys them: both read this module, so names, keys, indexes and streams cannot drift apart.
Only shapes live here; names are derived from a stack prefix by :mod:`skyloom.core.config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from skyloom.core.states import ResultStatus

KeyType = Literal["S", "N", "B"]


@dataclass(frozen=True)
class Key:
    name: str
    type: KeyType = "S"


@dataclass(frozen=True)
class IndexSpec:
    """A global secondary index; ``projection`` ALL keeps readers to one query."""

    name: str
    hash_key: Key
    range_key: Key | None = None
    projection: Literal["ALL", "KEYS_ONLY"] = "ALL"


@dataclass(frozen=True)
class TableSpec:
    """A DynamoDB table. ``logical`` is the role ("tasks"); the physical name comes from config."""

    logical: str
    hash_key: Key
    range_key: Key | None = None
    indexes: tuple[IndexSpec, ...] = ()
    #: Stream view type, or None for no stream. Resolution consumes the results table's stream.
    stream: Literal["NEW_AND_OLD_IMAGES", "NEW_IMAGE"] | None = None
    ttl_attribute: str | None = None
    purpose: str = ""

    def attribute_definitions(self) -> list[Key]:
        keys: dict[str, Key] = {}
        for k in (self.hash_key, self.range_key):
            if k is not None:
                keys[k.name] = k
        for ix in self.indexes:
            for k in (ix.hash_key, ix.range_key):
                if k is not None:
                    keys[k.name] = k
        return list(keys.values())


#: Number of shards of the timer index. Spreads sweeper-visible writes over several index
#: partitions so that one hot key never throttles the tasks table.
DUE_SHARDS = 16

SESSIONS = TableSpec(
    logical="sessions",
    hash_key=Key("session_id"),
    indexes=(IndexSpec("by_owner", Key("owner"), Key("created_at", "N")),),
    ttl_attribute="expires_at",
    purpose="One item per session: owner, status, default task options, allowed partitions.",
)

TASKS = TableSpec(
    logical="tasks",
    hash_key=Key("task_id"),
    indexes=(
        IndexSpec("by_session", Key("session_id"), Key("task_id")),
        IndexSpec("by_parent", Key("parent_task_id"), Key("task_id")),
        # Sparse: only tasks that something must happen to by a deadline carry due_shard/due_at
        # (a queued task whose message might be lost, a lease that may expire, a parent whose
        # children are not live yet). The dispatch sweeper reads nothing else.
        IndexSpec("by_due", Key("due_shard"), Key("due_at", "N")),
        # The events feed: a session's changes in time order, so a reader pays for what changed.
        IndexSpec("by_change", Key("session_id"), Key("updated_at", "N")),
    ),
    ttl_attribute="expires_at",
    purpose="One item per task: definition, status, remaining dependencies, lease, attempts.",
)

RESULTS = TableSpec(
    logical="results",
    hash_key=Key("result_id"),
    indexes=(
        IndexSpec("by_session", Key("session_id"), Key("result_id")),
        IndexSpec("by_change", Key("session_id"), Key("updated_at", "N")),
    ),
    stream="NEW_AND_OLD_IMAGES",
    ttl_attribute="expires_at",
    purpose="One item per result: owner task, status, inline value or S3 key. Its stream drives resolve.",
)

#: The records of the results stream that resolve acts on, as Lambda event filter patterns (a
#: record passes if any matches): a result that reached Aborted, or Completed unless written with
#: ``has_dependents`` False. Most results have no dependents, so most records stop at the event
#: source mapping: resolve is not invoked for them (on AWS: not billed, no concurrency taken).
#: Local mode's poller applies the same patterns. What passes is still judged record by record
#: (``functions/resolve/resolution.transition``): a pattern sees no old image.
RESOLVE_STREAM_FILTERS: tuple[dict[str, Any], ...] = (
    {"dynamodb": {"NewImage": {"status": {"S": [ResultStatus.ABORTED.value]}}}},
    {"dynamodb": {"NewImage": {"status": {"S": [ResultStatus.COMPLETED.value]},
                               "has_dependents": {"BOOL": [True]}}}},
    {"dynamodb": {"NewImage": {"status": {"S": [ResultStatus.COMPLETED.value]},
                               "has_dependents": {"BOOL": [{"exists": False}]}}}},
)

EDGES = TableSpec(
    logical="edges",
    hash_key=Key("result_id"),
    range_key=Key("task_id"),
    ttl_attribute="expires_at",
    purpose="result -> dependent task, written before the dependent re-checks the result.",
)

MEASUREMENTS = TableSpec(
    logical="measurements",
    # "<owner>#<business key>": every read is one owner's, so tenant isolation is in the key itself.
    hash_key=Key("series"),
    # "latest#<name>" (the last value), "h#<name>#<time>#<id>" (history), "d#<label>#<minute>#<worker>"
    # (a worker's minute of run times of one handler or function, under the reserved key "~durations").
    range_key=Key("entry"),
    ttl_attribute="expires_at",
    purpose="Measurements that outlive sessions (skyloom.metrics), their last values, and run-time "
            "history per handler and function; kept for SKYLOOM_METRICS_RETENTION_DAYS by TTL.",
)

TABLES: tuple[TableSpec, ...] = (SESSIONS, TASKS, RESULTS, EDGES, MEASUREMENTS)


@dataclass(frozen=True)
class QueueSpec:
    """One standard SQS queue per (partition, priority level); MessageGroupId = session id."""

    partition: str
    level: int
    visibility_timeout: int
    max_receive_count: int = 5
    retention_seconds: int = 14 * 24 * 3600


#: The handler that unpickles and runs code shipped by value (``@skyloom.task`` functions).
CODE_BY_VALUE_HANDLER = "skyloom.call"


@dataclass(frozen=True)
class PartitionSpec:
    """A named pool of workers with its own queues, and who and what it agrees to run.

    The three access fields exist because a partition is a fleet that may be shared between teams
    (see ``docs/security-model.md``); all default to "anything", which suits a personal or a
    single-team deployment:

    - ``allowed_identities``: glob patterns (``fnmatch``, case-sensitive) over the caller's principal
      ARN as API Gateway reports it. Empty means every authenticated identity. A pattern naming an
      IAM role (``arn:aws:iam::ACCOUNT:role/NAME``) also matches that role's assumed-role sessions
      (``arn:aws:sts::ACCOUNT:assumed-role/NAME/*``), which is how callers on a role appear.
    - ``allowed_handlers``: glob patterns over handler names. Empty means every handler.
    - ``installed_handlers_only``: refuse ``skyloom.call``, i.e. code shipped by value, which runs
      whatever the client pickled. Only handlers installed in the worker image can run. The
      documented default for shared production partitions.
    """

    name: str
    priority_levels: int = 3
    cpu: int = 1024
    memory: int = 2048
    min_workers: int = 0
    max_workers: int = 10
    spot: bool = True
    allowed_identities: tuple[str, ...] = ()
    allowed_handlers: tuple[str, ...] = ()
    installed_handlers_only: bool = False

    def __post_init__(self) -> None:
        for field_name in ("allowed_identities", "allowed_handlers"):
            value = getattr(self, field_name)
            if isinstance(value, list):  # from JSON (CDK context, env): store the hashable form
                value = tuple(value)
                object.__setattr__(self, field_name, value)
            if not isinstance(value, tuple) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ValueError(
                    f"partition {self.name!r}: {field_name} must be a list of non-empty strings, got {value!r}"
                )
        if not isinstance(self.installed_handlers_only, bool):
            raise ValueError(
                f"partition {self.name!r}: installed_handlers_only must be true or false, "
                f"got {self.installed_handlers_only!r}"
            )

    @property
    def restricted(self) -> bool:
        """True when the partition limits who or what it runs (so its policy must be shipped)."""
        return bool(self.allowed_identities or self.allowed_handlers or self.installed_handlers_only)


@dataclass(frozen=True)
class BucketSpec:
    logical: str = "data"
    purpose: str = "Result blobs larger than the inline threshold, keyed by session and result."


BUCKET = BucketSpec()


def queue_specs(partitions: tuple[PartitionSpec, ...], visibility_timeout: int) -> list[QueueSpec]:
    return [
        QueueSpec(partition=p.name, level=level, visibility_timeout=visibility_timeout)
        for p in partitions
        for level in range(p.priority_levels)
    ]

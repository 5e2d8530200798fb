"""Every named limit of Skyloom, with the reason for its value, in one place.

The protocol models (:mod:`skyloom.core.protocol`, :mod:`skyloom.core.protocol_queries`,
:class:`skyloom.options.TaskOptions`) read their bounds from here, so the API refuses what exceeds a
limit with a 4xx naming the field, and the SDK, which builds requests from the same models, raises
:class:`~skyloom.errors.InvalidRequest` before sending anything. Limits that need state (the depth
of a subtask) are checked by the core with the same objects. ``docs/limits.md`` is generated from
:data:`ALL` (``python -m skyloom.core.limits > docs/limits.md``) and a test keeps it in step.

Most values follow from an AWS quota: a DynamoDB item holds at most 400 KB and a transaction at most
100 items and 4 MB, an SQS queue name at most 80 characters, a synchronous Lambda invocation at most
6 MB of payload (API Gateway allows 10 MB, so Lambda is the binding limit), and API Gateway waits at
most 29 s for an answer.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Limit:
    """One named bound: ``minimum <= x <= value`` (``minimum`` only for ranges)."""

    #: Stable name, used in error details and in the documentation.
    name: str
    #: The largest accepted value (a count, a length, bytes or seconds, see ``unit``).
    value: int
    unit: str
    #: The fields or operations it bounds, as a client names them.
    applies_to: str
    #: Why this value: the quota or the reasoning it comes from.
    why: str
    minimum: int | None = None

    def describe(self) -> str:
        """``"at most 1000 tasks"`` or ``"0 to 9"``, for field descriptions and messages."""
        if self.minimum is not None:
            return f"{self.minimum} to {self.value}" + (f" {self.unit}" if self.unit else "")
        return f"at most {self.value} {self.unit}".rstrip()


# ------------------------------------------------------------------------------------ requests
REQUEST_BODY_BYTES: Final = Limit(
    "request_body_bytes", 6 * 1024 * 1024, "bytes", "every request body (413 `payload_too_large`)",
    "A synchronous Lambda invocation carries at most 6 MB (API Gateway would take 10 MB); the API "
    "enforces it itself so that the local stack refuses exactly what AWS refuses.",
)
INLINE_DATA_BYTES: Final = Limit(
    "inline_data_bytes", 32 * 1024, "bytes",
    "`results[].data`, `tasks[].payload` once decoded (413); the default of `SKYLOOM_INLINE_MAX_BYTES`",
    "Inline values are stored in DynamoDB items (400 KB each) and written in transactions of up to "
    "100 items and 4 MB: 100 x 32 KiB stays under 4 MB. Larger data goes to S3 through presigned URLs.",
)
TASKS_PER_REQUEST: Final = Limit(
    "tasks_per_request", 1000, "tasks", "`tasks` of submitTasks",
    "A submission is validated, then written in transactions of at most 100 items; 1000 tasks keep "
    "that well inside API Gateway's 29 s. The SDK splits larger batches by itself.",
)
RESULTS_PER_REQUEST: Final = Limit(
    "results_per_request", 2000, "results", "`results` of createResults and submitTasks",
    "Twice the tasks per request: a typical task brings one input and one output.",
)
IDS_PER_REQUEST: Final = Limit(
    "ids_per_request", 1000, "ids",
    "`ids` of getResults, completeUploads, getTasks, cancelTasks; `ids` and `also` together of waitResults",
    "Read in BatchGetItem pages of 100 keys: 10 round trips, and an answer that stays far below "
    "Lambda's 6 MB response limit.",
)
DEPENDENCIES_PER_TASK: Final = Limit(
    "dependencies_per_task", 1000, "result ids", "`tasks[].data_dependencies`",
    "The ids are kept twice on the task item (all, and those still awaited): 2 x 1000 x 64 "
    "characters is about 130 KB of the 400 KB DynamoDB item, leaving room for the inline payload.",
)
EXPECTED_OUTPUTS_PER_TASK: Final = Limit(
    "expected_outputs_per_task", 64, "result ids", "`tasks[].expected_outputs` (at least 1)",
    "A task's outputs are completed (or delegated) in the same DynamoDB transaction as the task "
    "itself, and a transaction holds at most 100 items.",
)
PARTITIONS_PER_SESSION: Final = Limit(
    "partitions_per_session", 32, "partitions", "`partitions` of createSession",
    "Each partition is a worker pool with one queue per priority level (10): 32 partitions already "
    "mean 320 queues to watch.",
)

# ------------------------------------------------------------------------------------- strings
ID_LENGTH: Final = Limit(
    "id_length", 64, "characters", "every session, result and task id (`[A-Za-z0-9_-]`, at least 1)",
    "Ids are DynamoDB keys, S3 key segments and URL path segments: a short, escape-free alphabet; 64 "
    "leaves room for a prefix before a 32-character uuid4 hex.",
)
HANDLER_LENGTH: Final = Limit(
    "handler_length", 256, "characters", "`tasks[].handler` (at least 1), the `handler` filter",
    "A handler is a registry key or a dotted Python path; it is stored on every task and message.",
)
LABEL_LENGTH: Final = Limit(
    "label_length", 256, "characters", "`tasks[].label` (at least 1)",
    "What a task runs, for people (`module.qualname`); stored on every task item and event.",
)
NAME_LENGTH: Final = Limit(
    "name_length", 256, "characters", "session `name`, `results[].name`",
    "A label for people and the CLI, not a document.",
)
PARTITION_NAME_LENGTH: Final = Limit(
    "partition_name_length", 40, "characters", "`partitions[]`, `options.partition`, the `partition` filter "
    "(`[a-z][a-z0-9-]*`)",
    "The partition is part of its SQS queue names (`<stack>-<partition>-p<level>-dlq`), which SQS "
    "caps at 80 characters.",
)
APPLICATION_NAME_LENGTH: Final = Limit(
    "application_name_length", 128, "characters", "`options.application_name`",
    "A label copied on every task item.",
)
APPLICATION_VERSION_LENGTH: Final = Limit(
    "application_version_length", 64, "characters", "`options.application_version`",
    "A version string (semver, a git hash) copied on every task item.",
)
OPTION_EXTRAS: Final = Limit(
    "option_extras", 64, "keys", "`options.extra` (free key-value options)",
    "Copied on every task item; together with the two limits below at most about 74 KB of the "
    "400 KB DynamoDB item.",
)
OPTION_KEY_LENGTH: Final = Limit(
    "option_key_length", 128, "characters", "keys of `options.extra` (at least 1)",
    "A key is a name; see `option_extras` for the item budget.",
)
OPTION_VALUE_LENGTH: Final = Limit(
    "option_value_length", 1024, "characters", "values of `options.extra`",
    "Metadata, not data: pass data as a payload or a result. See `option_extras` for the budget.",
)
PAGE_TOKEN_LENGTH: Final = Limit(
    "page_token_length", 2048, "characters", "the `next` and `after` query parameters",
    "Tokens are opaque strings the API itself handed out, all far shorter; URLs must stay well "
    "under API Gateway's 8 KB request line.",
)
STATUS_FILTER_LENGTH: Final = Limit(
    "status_filter_length", 256, "characters", "the `status` query parameter",
    "A comma-separated list of state names; every state named once is under 100 characters.",
)

# --------------------------------------------------------------------------------- option ranges
PRIORITY: Final = Limit(
    "priority", 9, "", "`options.priority`",
    "One SQS queue per (partition, priority level) and agents drain higher levels first: ten levels.",
    minimum=0,
)
MAX_RETRIES: Final = Limit(
    "max_retries", 100, "retries", "`options.max_retries`",
    "Every attempt is recorded on the task item; more than 100 retries of a failing task only burns "
    "capacity.",
    minimum=0,
)
MAX_DURATION: Final = Limit(
    "max_duration", 7 * 24 * 3600, "seconds", "`options.max_duration` (more than 0)",
    "A week bounds a runaway task yet allows long simulations; the lease is renewed by heartbeats, so "
    "SQS's 12 h visibility timeout does not bound it.",
)

# ------------------------------------------------------------------------------------ reading
WAIT_SECONDS: Final = Limit(
    "wait_seconds", 20, "seconds", "`timeout` of waitResults (at least 0)",
    "A long-poll must answer before API Gateway's 29 s integration timeout; the SDK polls again.",
    minimum=0,
)
PAGE_SIZE: Final = Limit(
    "page_size", 1000, "items", "the `limit` query parameter of listSessions, listTasks, listResults",
    "One DynamoDB query page (1 MB) rarely holds more, and the answer stays under 6 MB.",
    minimum=1,
)
EVENTS_PER_PAGE: Final = Limit(
    "events_per_page", 1000, "events", "the `limit` query parameter of sessionEvents",
    "Same reasoning as `page_size`.",
    minimum=1,
)

# ------------------------------------------------------------------------------------ task logs
TASK_LOG_BYTES: Final = Limit(
    "task_log_bytes", 64 * 1024, "bytes", "what one attempt printed (stdout and stderr), as kept by the worker",
    "The worker keeps the last 64 KiB of each attempt in a ring (a task that prints without end costs "
    "the agent no more memory) and says how many bytes it cut before them; the end of a log is where a "
    "failure shows.",
)
TASK_LOG_ATTEMPTS: Final = Limit(
    "task_log_attempts", 32, "attempts", "the attempts answered by getTaskLogs without `attempt`",
    "32 attempts of at most 64 KiB each keep the answer well under Lambda's 6 MB even once escaped in "
    "JSON; the earlier ones are counted in `earlier` and read one by one with `attempt`.",
)

# ------------------------------------------------------------------------------------ the graph
SUBTASK_DEPTH: Final = Limit(
    "subtask_depth", 1000, "levels", "subtasks staged by a running task (a task submitted by a client is level 0)",
    "Delegating to a subtask that delegates again is recursion; like Python's default recursion "
    "limit (1000) it turns a runaway recursion into a clear failure instead of a graph that grows "
    "until the bill stops it.",
)

#: Every limit, in the order of ``docs/limits.md``.
# -------------------------------------------------------------------------------- measurements
METRIC_KEY_LENGTH: Final = Limit(
    "metric_key_length", 200, "characters",
    "the business key of `skyloom.metrics.record`/`latest`, `options.metrics`, `/metrics/{key}`",
    "Part of a DynamoDB partition key with the owner's identity (an ARN of up to ~1 KB): both stay far "
    "below DynamoDB's 2 KB partition key.",
)
METRIC_NAME_LENGTH: Final = Limit(
    "metric_name_length", 100, "characters", "the measurement name of `record`/`latest`, `options.metrics`",
    "Part of a DynamoDB sort key with a timestamp and an id: well under DynamoDB's 1 KB sort key.",
)
METRICS_PER_TASK: Final = Limit(
    "metrics_per_task", 100, "(key, name) pairs", "`options.metrics` (last values a task reads at start)",
    "The worker reads them in one BatchGetItem before the task starts, and a BatchGetItem takes 100 keys.",
)
MEASUREMENTS_PER_ATTEMPT: Final = Limit(
    "measurements_per_attempt", 25, "measurements", "`skyloom.metrics.record` calls in one attempt",
    "Each is written with the attempt's commit: one BatchWriteItem (25 items) for their history, and one "
    "conditional update per distinct (key, name) for its last value; 25 bounds what a commit costs.",
)
METRICS_HISTORY_PAGE: Final = Limit(
    "metrics_history_page", 1000, "values", "`limit` of getMetricHistory",
    "One DynamoDB Query page of small items (1 MB) answers it.",
)

ALL: Final[tuple[Limit, ...]] = (
    REQUEST_BODY_BYTES,
    INLINE_DATA_BYTES,
    TASKS_PER_REQUEST,
    RESULTS_PER_REQUEST,
    IDS_PER_REQUEST,
    DEPENDENCIES_PER_TASK,
    EXPECTED_OUTPUTS_PER_TASK,
    PARTITIONS_PER_SESSION,
    ID_LENGTH,
    HANDLER_LENGTH,
    LABEL_LENGTH,
    NAME_LENGTH,
    PARTITION_NAME_LENGTH,
    APPLICATION_NAME_LENGTH,
    APPLICATION_VERSION_LENGTH,
    OPTION_EXTRAS,
    OPTION_KEY_LENGTH,
    OPTION_VALUE_LENGTH,
    PAGE_TOKEN_LENGTH,
    STATUS_FILTER_LENGTH,
    PRIORITY,
    MAX_RETRIES,
    MAX_DURATION,
    WAIT_SECONDS,
    PAGE_SIZE,
    EVENTS_PER_PAGE,
    SUBTASK_DEPTH,
    TASK_LOG_BYTES,
    TASK_LOG_ATTEMPTS,
    METRIC_KEY_LENGTH,
    METRIC_NAME_LENGTH,
    METRICS_PER_TASK,
    MEASUREMENTS_PER_ATTEMPT,
    METRICS_HISTORY_PAGE,
)


def render_markdown() -> str:
    """``docs/limits.md``: the table of :data:`ALL`, generated so it cannot drift from the code."""
    lines = [
        "# Limits",
        "",
        "<!-- Generated by `python -m skyloom.core.limits > docs/limits.md`; do not edit. -->",
        "",
        "Every request that exceeds a limit is refused as a whole with a 4xx JSON error whose `field`",
        "names the offending input and whose `message` says what the limit is; nothing is written.",
        "The SDK checks the same limits (one definition, `skyloom.core.limits`) and raises",
        "`skyloom.errors.InvalidRequest` (413 limits: `PayloadTooLarge`) before sending.",
        "A subtask staged beyond `subtask_depth` fails its parent's attempt (`OutputContractViolation`).",
        "",
        "| Limit | Value | Applies to | Why |",
        "|---|---|---|---|",
    ]
    for limit in ALL:
        lines.append(f"| `{limit.name}` | {limit.describe()} | {limit.applies_to} | {limit.why} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Print ``docs/limits.md``."""
    sys.stdout.write(render_markdown())


if __name__ == "__main__":
    main()

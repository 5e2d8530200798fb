"""The REST API's request and response bodies, shared by ``functions/submit`` and the client SDK.

One definition serves validation on the server, the OpenAPI document, and (de)serialization in the
SDK, so the two sides cannot disagree on a field. Binary data travels as standard base64 strings.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from skyloom.core import limits
from skyloom.core.machine import Machine
from skyloom.core.validation import invalid_request
from skyloom.errors import InvalidArgument
from skyloom.options import PARTITION_PATTERN, TaskOptions

ID_PATTERN = rf"^[A-Za-z0-9_-]{{1,{limits.ID_LENGTH.value}}}$"

# The limits under the names the SDK and the routes import; values and reasons: skyloom.core.limits.
MAX_TASKS_PER_REQUEST = limits.TASKS_PER_REQUEST.value
MAX_RESULTS_PER_REQUEST = limits.RESULTS_PER_REQUEST.value
MAX_IDS_PER_REQUEST = limits.IDS_PER_REQUEST.value
MAX_DEPENDENCIES_PER_TASK = limits.DEPENDENCIES_PER_TASK.value
MAX_EXPECTED_OUTPUTS_PER_TASK = limits.EXPECTED_OUTPUTS_PER_TASK.value
MAX_HANDLER_LENGTH = limits.HANDLER_LENGTH.value
MAX_LABEL_LENGTH = limits.LABEL_LENGTH.value
MAX_NAME_LENGTH = limits.NAME_LENGTH.value
WAIT_MAX_SECONDS = float(limits.WAIT_SECONDS.value)

#: The handler that runs pickled Python calls (``@skyloom.task`` functions) on the workers.
CALL_HANDLER = "skyloom.call"

PartitionName = Annotated[
    str, StringConstraints(min_length=1, max_length=limits.PARTITION_NAME_LENGTH.value, pattern=PARTITION_PATTERN)
]

def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, field: str) -> bytes:
    """Decode strictly, so a corrupt upload is a 400 naming the field and not silent garbage."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"{field} is not valid base64: {exc}") from exc


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Request(_Body):
    """A request body. Built by the SDK, it raises :class:`InvalidArgument` (an InvalidRequest naming
    the field, like the API's 400, and a ValueError) instead of pydantic's ValidationError, before
    anything is sent.

    Only direct construction is affected: validation (the API's, through Powertools, and a nested
    model inside an outer one) keeps pydantic's errors, with full paths, which ``errors.py`` maps to
    the same 400 with :func:`invalid_request`.
    """

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid_request(exc.errors(include_input=False, include_url=False), cls=InvalidArgument) from None

    # pydantic calls an overridden __init__ for nested models during validation, where raising our
    # error would lose the field path (``tasks.3.handler`` -> ``handler``); marking it as the base
    # init keeps it for direct construction only.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


def _b64_field(value: str | None, name: str) -> str | None:
    if value is not None:
        b64decode(value, name)
    return value


# -------------------------------------------------------------------------------------- sessions
class CreateSessionRequest(_Request):
    options: TaskOptions = Field(default_factory=TaskOptions)
    partitions: list[PartitionName] = Field(
        default_factory=list, max_length=limits.PARTITIONS_PER_SESSION.value, description="Empty: the default."
    )
    name: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)


class WorkerVersions(_Body):
    """What the workers of one partition run, as the last agent to start there recorded it."""

    python: str
    cloudpickle: str
    recorded_at: float


class EnvironmentInfo(_Body):
    """The workers' versions per partition (only partitions where an agent has started), and the
    partition a task without one runs on; the client checks them before shipping functions."""

    partitions: dict[str, WorkerVersions]
    default_partition: str


class SessionInfo(_Body):
    session_id: str
    status: str
    owner: str
    name: str | None = None
    options: TaskOptions
    partitions: list[str]
    created_at: float
    updated_at: float


# --------------------------------------------------------------------------------------- results
class ResultSpec(_Request):
    """A result to create. With ``data`` it is uploaded now (inline) and Completed; with ``upload``
    the answer carries a presigned S3 PUT URL and the result completes on ``/results/complete``;
    with neither it waits for the task that names it as an expected output."""

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    name: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)
    data: str | None = Field(default=None, description="base64; at most the inline limit once decoded")
    upload: bool = Field(default=False, strict=True)

    @field_validator("data")
    @classmethod
    def _data_is_base64(cls, v: str | None) -> str | None:
        return _b64_field(v, "data")


class CreateResultsRequest(_Request):
    results: list[ResultSpec] = Field(min_length=1, max_length=MAX_RESULTS_PER_REQUEST)


class ResultError(_Body):
    """Why a result was aborted: the task that failed at the root, and its last error."""

    task_id: str
    handler: str | None = None
    status: str
    attempts: int = 0
    type: str | None = None
    message: str
    traceback: str | None = None
    #: The exception's args when they are JSON scalars: the client rebuilds the task's own
    #: exception type with them (``except ValueError`` around ``future.result()``).
    args: list[str | int | float | bool | None] | None = None


class ResultInfo(_Body):
    result_id: str
    session_id: str
    status: str
    name: str | None = None
    owner_task_id: str | None = None
    size: int | None = None
    created_at: float
    completed_at: float | None = None
    error: ResultError | None = None
    upload_url: str | None = None


class ResultsResponse(_Body):
    results: list[ResultInfo]


class IdsRequest(_Request):
    ids: list[str] = Field(min_length=1, max_length=MAX_IDS_PER_REQUEST)

    @field_validator("ids")
    @classmethod
    def _ids_valid(cls, v: list[str]) -> list[str]:
        return _check_ids(v)


def _check_ids(ids: list[str]) -> list[str]:
    for i in ids:
        if not re.match(ID_PATTERN, i):
            raise ValueError(f"id {i[:80]!r} does not match {ID_PATTERN}")
    return ids


class ResultData(_Body):
    result_id: str
    size: int
    data: str | None = None
    download_url: str | None = None


#: When a wait ends: every result final (``all``), one of them (``any``), or every result final unless one
#: ends without a value first (``first_failure``: Aborted or Deleted; ``concurrent.futures.FIRST_EXCEPTION``).
WaitMode = Literal["all", "any", "first_failure"]


class WaitRequest(IdsRequest):
    """Wait (long-poll) until results are final, and read many of them in one answer."""

    timeout: float = Field(
        default=10.0, ge=0, le=WAIT_MAX_SECONDS, strict=True,
        description="Seconds the server waits at most; 0 answers at once. The answer comes before API "
        "Gateway's 29 s integration timeout whatever is asked.",
    )
    mode: WaitMode = "all"
    also: list[str] = Field(
        default_factory=list, max_length=MAX_IDS_PER_REQUEST,
        description="Results not waited for but reported, with their values, if they are final when the "
        "answer is made (a client waiting for one result learns about its siblings in the same answer). "
        "Ids unknown in the session are ignored. `ids` and `also` hold at most "
        f"{MAX_IDS_PER_REQUEST} ids together.",
    )
    values: bool = Field(
        default=False, strict=True,
        description="Carry the values of Completed results in `values`: small ones inline (base64), "
        "large ones as presigned S3 URLs.",
    )

    @field_validator("also")
    @classmethod
    def _also_valid(cls, v: list[str], info: ValidationInfo) -> list[str]:
        _check_ids(v)
        waited = info.data.get("ids")
        if waited is not None and len(waited) + len(v) > MAX_IDS_PER_REQUEST:
            raise ValueError(
                f"ids and also hold {len(waited) + len(v)} ids together, more than {MAX_IDS_PER_REQUEST}"
            )
        return v


class WaitResponse(_Body):
    """Each id of ``ids`` in order, then the final results among ``also``.

    Values (when asked) and the errors of Aborted results fill a byte budget per answer, in the order
    of ``results``; the ids whose value or error did not fit are listed in ``incomplete``: ask for them
    again (a wait with timeout 0 answers at once). The first one always fits.
    """

    results: list[ResultInfo]
    done: bool
    values: list[ResultData] = Field(default_factory=list)
    incomplete: list[str] = Field(default_factory=list)


# ----------------------------------------------------------------------------------------- tasks
class TaskSpec(_Request):
    id: str | None = Field(default=None, pattern=ID_PATTERN)
    handler: str = Field(min_length=1, max_length=MAX_HANDLER_LENGTH)
    label: str | None = Field(
        default=None, min_length=1, max_length=MAX_LABEL_LENGTH,
        description="What the task runs, for people: listings, stats and graphs show it (the SDK sets the "
        "function's `module.qualname` on `skyloom.call` tasks). Never used for dispatch or metrics.",
    )
    payload: str | None = Field(default=None, description="base64; at most the inline limit once decoded")
    payload_result: str | None = Field(default=None, pattern=ID_PATTERN, description="A result holding it")
    data_dependencies: list[str] = Field(default_factory=list, max_length=MAX_DEPENDENCIES_PER_TASK)
    optional_dependencies: list[str] = Field(
        default_factory=list, max_length=MAX_DEPENDENCIES_PER_TASK,
        description="Data dependencies of the *optional* kind (each one also in `data_dependencies`): if one "
        "is aborted (its producer failed or was cancelled), the task is not cancelled; it runs, and is told "
        "which inputs were aborted and why. The failure cascade stops there.",
    )
    lazy_dependencies: list[str] = Field(
        default_factory=list, max_length=MAX_DEPENDENCIES_PER_TASK,
        description="Data dependencies of the *lazy* kind (each one also in `data_dependencies`): waited for "
        "like the others, but not downloaded before the task starts; the task fetches the value on demand "
        "(timed and counted like the other transfers). A dependency may be both optional and lazy.",
    )
    expected_outputs: list[str] = Field(min_length=1, max_length=MAX_EXPECTED_OUTPUTS_PER_TASK)
    options: TaskOptions = Field(default_factory=TaskOptions)

    @field_validator("payload")
    @classmethod
    def _payload_is_base64(cls, v: str | None) -> str | None:
        return _b64_field(v, "payload")


class SubmitTasksRequest(_Request):
    """Tasks to submit, and optionally results to create first in the same request."""

    tasks: list[TaskSpec] = Field(min_length=1, max_length=MAX_TASKS_PER_REQUEST)
    results: list[ResultSpec] = Field(default_factory=list, max_length=MAX_RESULTS_PER_REQUEST)


class Attempt(_Body):
    number: int
    worker: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    outcome: str
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None
    #: Bytes the attempt printed on stdout and stderr (its log: getTaskLogs); None if nothing.
    log_bytes: int | None = None
    #: The machine it ran on (None for an attempt whose worker was lost, or older records).
    machine: Machine | None = None


class AttemptLog(_Body):
    """What one attempt printed on stdout and stderr, merged as a terminal shows them."""

    number: int
    worker: str | None = None
    outcome: str
    started_at: float | None = None
    ended_at: float | None = None
    text: str = Field(default="", description="The kept tail; starts with `... N bytes cut ...` when cut")
    bytes: int = Field(default=0, description="Bytes printed in all")
    cut: int = Field(default=0, description="Bytes printed before the kept tail")


class TaskLogs(_Body):
    """The logs of a task's ended attempts, oldest first (a running attempt's log comes when it ends)."""

    task_id: str
    session_id: str
    attempts: list[AttemptLog]
    earlier: int = Field(default=0, description="Earlier attempts left out of this answer (ask with `attempt`)")

    def render(self) -> str:
        """Every attempt's log as one text, each under a line naming the task and the attempt."""
        parts = []
        for a in self.attempts:
            parts.append(f"--- task {self.task_id} attempt {a.number} ({a.outcome}, worker {a.worker or '?'}) ---\n")
            parts.append(a.text if not a.text or a.text.endswith("\n") else a.text + "\n")
        return "".join(parts)


class TaskInfo(_Body):
    task_id: str
    session_id: str
    status: str
    handler: str
    label: str | None = None
    data_dependencies: list[str]
    optional_dependencies: list[str] = Field(default_factory=list)
    lazy_dependencies: list[str] = Field(default_factory=list)
    aborted_inputs: list[str] = Field(
        default_factory=list,
        description="Optional dependencies that were aborted: the failure cascade stopped at this task",
    )
    expected_outputs: list[str]
    remaining: list[str] = Field(default_factory=list)
    options: dict[str, Any]
    #: The partition it runs on (None in answers of servers that predate the field).
    partition: str | None = None
    parent_task_id: str | None = None
    attempt: int = 0
    attempts: list[Attempt] = Field(default_factory=list)
    error: dict[str, Any] | None = None
    created_at: float
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    metrics: dict[str, Any] | None = None


class CheckpointResume(_Body):
    """An attempt that started from a checkpoint of an earlier one."""

    attempt: int = Field(description="The attempt that resumed (a drained one keeps its number)")
    from_attempt: int = Field(description="The attempt that took the checkpoint it resumed from")
    seq: int = Field(description="The checkpoint's sequence number within the task (1 is the first)")
    at: float | None = None


class CheckpointInfo(_Body):
    """A task's checkpoints (`skyloom.checkpoint`): how many were taken, their sizes, who resumed."""

    taken: int = Field(default=0, description="Checkpoints taken by all the task's attempts")
    total_bytes: int = Field(default=0, description="Bytes those checkpoints held, in all")
    latest_size: int | None = Field(default=None, description="Bytes of the latest checkpoint")
    latest_attempt: int | None = Field(default=None, description="The attempt that took the latest checkpoint")
    latest_seq: int | None = None
    saved_at: float | None = None
    in_s3: bool = Field(default=False, description="The latest value is in S3 (too large to sit inline)")
    dropped: bool = Field(default=False, description="The task completed and the value was dropped")
    resumes: list[CheckpointResume] = Field(default_factory=list)


class TasksResponse(_Body):
    tasks: list[TaskInfo]


class SubmitTasksResponse(_Body):
    tasks: list[TaskInfo]
    results: list[ResultInfo] = Field(default_factory=list)


class ErrorBody(_Body):
    error: str
    message: str
    field: str | None = None
    details: dict[str, Any] | None = None

"""The REST API's request and response bodies, shared by ``functions/submit`` and the client SDK.

One definition serves validation on the server, the OpenAPI document, and (de)serialization in the
SDK, so the two sides cannot disagree on a field. Binary data travels as standard base64 strings.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from skyloom.options import TaskOptions

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

# Named limits; the API answers 4xx naming the limit when a request exceeds one.
MAX_TASKS_PER_REQUEST = 1000
MAX_RESULTS_PER_REQUEST = 2000
MAX_IDS_PER_REQUEST = 1000
MAX_DEPENDENCIES_PER_TASK = 1000
#: Outputs are completed in the same DynamoDB transaction as their task (100 items at most).
MAX_EXPECTED_OUTPUTS_PER_TASK = 64
MAX_HANDLER_LENGTH = 256
MAX_NAME_LENGTH = 256
WAIT_MAX_SECONDS = 20.0


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


def _b64_field(value: str | None, name: str) -> str | None:
    if value is not None:
        b64decode(value, name)
    return value


# -------------------------------------------------------------------------------------- sessions
class CreateSessionRequest(_Body):
    options: TaskOptions = Field(default_factory=TaskOptions)
    partitions: list[str] = Field(default_factory=list, max_length=32, description="Empty: the default.")
    name: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)


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
class ResultSpec(_Body):
    """A result to create. With ``data`` it is uploaded now (inline) and Completed; with ``upload``
    the answer carries a presigned S3 PUT URL and the result completes on ``/results/complete``;
    with neither it waits for the task that names it as an expected output."""

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    name: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)
    data: str | None = Field(default=None, description="base64; at most the inline limit once decoded")
    upload: bool = False

    @field_validator("data")
    @classmethod
    def _data_is_base64(cls, v: str | None) -> str | None:
        return _b64_field(v, "data")


class CreateResultsRequest(_Body):
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


class IdsRequest(_Body):
    ids: list[str] = Field(min_length=1, max_length=MAX_IDS_PER_REQUEST)

    @field_validator("ids")
    @classmethod
    def _ids_valid(cls, v: list[str]) -> list[str]:
        import re

        for i in v:
            if not re.match(ID_PATTERN, i):
                raise ValueError(f"id {i[:80]!r} does not match {ID_PATTERN}")
        return v


class WaitRequest(IdsRequest):
    timeout: float = Field(default=10.0, ge=0, le=WAIT_MAX_SECONDS)
    mode: Literal["all", "any"] = "all"


class WaitResponse(_Body):
    results: list[ResultInfo]
    done: bool


class ResultData(_Body):
    result_id: str
    size: int
    data: str | None = None
    download_url: str | None = None


# ----------------------------------------------------------------------------------------- tasks
class TaskSpec(_Body):
    id: str | None = Field(default=None, pattern=ID_PATTERN)
    handler: str = Field(min_length=1, max_length=MAX_HANDLER_LENGTH)
    payload: str | None = Field(default=None, description="base64; at most the inline limit once decoded")
    payload_result: str | None = Field(default=None, pattern=ID_PATTERN, description="A result holding it")
    data_dependencies: list[str] = Field(default_factory=list, max_length=MAX_DEPENDENCIES_PER_TASK)
    expected_outputs: list[str] = Field(min_length=1, max_length=MAX_EXPECTED_OUTPUTS_PER_TASK)
    options: TaskOptions = Field(default_factory=TaskOptions)

    @field_validator("payload")
    @classmethod
    def _payload_is_base64(cls, v: str | None) -> str | None:
        return _b64_field(v, "payload")


class SubmitTasksRequest(_Body):
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


class TaskInfo(_Body):
    task_id: str
    session_id: str
    status: str
    handler: str
    data_dependencies: list[str]
    expected_outputs: list[str]
    remaining: list[str] = Field(default_factory=list)
    options: dict[str, Any]
    parent_task_id: str | None = None
    attempt: int = 0
    attempts: list[Attempt] = Field(default_factory=list)
    error: dict[str, Any] | None = None
    created_at: float
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    metrics: dict[str, Any] | None = None


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

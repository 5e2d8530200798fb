"""Task logs: where what each attempt printed is kept, and how it is read back and purged.

The worker keeps the tail of each attempt's stdout and stderr (``limits.TASK_LOG_BYTES``) and hands
it to the commit or failure of the attempt, which stores it with the attempt record:

- a small log rides inline in the record (``log``): no extra call for the common case of a task
  that prints a few lines;
- a larger one goes to S3 under the session's prefix (``log_key``), because the task item already
  holds every attempt's record with its traceback and DynamoDB caps an item at 400 KB. One PUT, for
  the tasks that print that much only; purging the session deletes it with the other blobs.

Either way the record says how much was printed and cut (``log_bytes``, ``log_cut``), so that the
task's view can say a log exists without reading it.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from skyloom.core import blobs, clock
from skyloom.core.config import Settings
from skyloom.core.ddb import update_if
from skyloom.core.limits import TASK_LOG_ATTEMPTS
from skyloom.core.models import TaskModel
from skyloom.core.protocol import AttemptLog, TaskLogs
from skyloom.core.sessions import load_session
from skyloom.core.states import TaskStatus
from skyloom.core.tasks import load_tasks
from skyloom.core.transitions import task_in
from skyloom.errors import NotFound
from skyloom.runtime.outcome import TaskLog, render_log

#: A log tail up to this many bytes rides inline in its attempt record; 101 attempts (the most
#: ``max_retries`` allows) of 2 KiB stay well inside an item's 400 KB.
INLINE_LOG_BYTES = 2048
#: The fields of an attempt record that hold log text or point at it (what a purge removes).
_TEXT_FIELDS = ("log", "log_key")
#: Purging a task's inline logs is conditioned on the task not having moved; it is read again and
#: retried this many times if it did (an attempt ended meanwhile).
_PURGE_TRIES = 3


class AttemptNotFound(NotFound):
    """The task has no ended attempt with that number."""

    code = "attempt_not_found"


def attempt_fields(settings: Settings, task: TaskModel, log: TaskLog | None) -> dict[str, Any]:
    """The fields that store ``log`` in the attempt record of ``task``'s current attempt, uploading
    it first when it is too large to ride inline; ``{}`` when the attempt printed nothing."""
    if log is None or log.size == 0:
        return {}
    fields: dict[str, Any] = {"log_bytes": log.size, "log_cut": log.cut}
    if len(log.tail) <= INLINE_LOG_BYTES:
        fields["log"] = log.text()
        return fields
    # A writer part per attempt, as for result values: two copies of one attempt (a duplicate
    # delivery) never overwrite each other's object; the record that commits names the one it wrote.
    key = blobs.log_key(task.session_id, task.task_id, f"a{int(task.attempt or 0)}-{clock.new_id()[:12]}")
    blobs.put(settings, key, log.text().encode("utf-8"))
    fields["log_key"] = key
    return fields


def task_logs(settings: Settings, owner: str, session_id: str, task_id: str, attempt: int | None = None) -> TaskLogs:
    """The logs of one task's ended attempts: all of them (the last ``TASK_LOG_ATTEMPTS``), or the
    one numbered ``attempt``.

    Raises:
        SessionNotFound: no such session for ``owner``.
        TaskNotFound: no such task in the session (``field`` is ``task_id``).
        AttemptNotFound: the task has no ended attempt ``attempt`` (``field`` is ``attempt``).
    """
    task = load_tasks(load_session(owner, session_id), [task_id], field="task_id")[task_id]
    records = list(task.attempts or [])
    if attempt is not None:
        records = [r for r in records if int(r.get("number", 0)) == attempt]
        if not records:
            raise AttemptNotFound(f"task {task_id} has no ended attempt {attempt}", field="attempt",
                                  details={"attempts": [int(r.get("number", 0)) for r in task.attempts or []]})
    earlier = max(0, len(records) - TASK_LOG_ATTEMPTS.value)
    records = records[earlier:]
    stored = _read_stored(settings, {i: r["log_key"] for i, r in enumerate(records) if r.get("log_key")})
    return TaskLogs(
        task_id=task.task_id, session_id=task.session_id, earlier=earlier,
        attempts=[_attempt_log(r, stored.get(i)) for i, r in enumerate(records)],
    )


def _attempt_log(record: dict[str, Any], stored: str | None) -> AttemptLog:
    cut = int(record.get("log_cut") or 0)
    text = stored if stored is not None else str(record.get("log") or "")
    return AttemptLog(
        number=int(record.get("number", 0)), worker=record.get("worker"), outcome=str(record.get("outcome", "")),
        started_at=record.get("started_at"), ended_at=record.get("ended_at"),
        text=render_log(text, cut) if text else "", bytes=int(record.get("log_bytes") or 0), cut=cut,
    )


def _read_stored(settings: Settings, keys: dict[int, str]) -> dict[int, str]:
    """The logs kept in S3, by position; one whose object is gone (purged meanwhile) reads as empty."""
    try:
        found = blobs.get_many(settings, {str(i): key for i, key in keys.items()})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
        found = {}
        for i, key in keys.items():
            try:
                found[str(i)] = blobs.get(settings, key)
            except ClientError:
                found[str(i)] = b""
    return {int(i): data.decode("utf-8", errors="replace") for i, data in found.items()}


def has_logs(task: TaskModel) -> bool:
    """Whether any attempt record of ``task`` holds log text or points at it."""
    return any(f in r for r in task.attempts or [] for f in _TEXT_FIELDS)


def forget_logs(task: TaskModel) -> None:
    """Remove the log text and keys from ``task``'s attempt records (a purge; the S3 objects go with
    the session's prefix). The sizes stay: they are metadata, like a result's size after a purge.

    The records are one JSON attribute, rewritten whole: the write is conditioned on the task not
    having moved since it was read, so that an attempt ending meanwhile is not erased."""
    for _ in range(_PURGE_TRIES):
        kept = [{k: v for k, v in r.items() if k not in _TEXT_FIELDS} for r in task.attempts or []]
        # Every write that adds a record changes the status or the attempt number.
        unchanged = task_in(TaskStatus(task.status)) & (TaskModel.attempt == task.attempt)
        if update_if(TaskModel(task.task_id), [TaskModel.attempts.set(kept)], unchanged):
            return
        try:
            task = TaskModel.get(task.task_id, consistent_read=True)
        except TaskModel.DoesNotExist:
            return
        if not has_logs(task):
            return

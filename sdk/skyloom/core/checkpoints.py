"""Task checkpoints: where the latest one of each task is kept, and who may overwrite it.

A long task on Spot calls ``skyloom.checkpoint(state)`` every so often; a later attempt of the same
task (a retry, a task taken back from a dead or reclaimed worker, one drained on SIGTERM) calls
``skyloom.restore()`` and starts from there. What makes that safe:

- one item per task (:class:`~skyloom.core.models.CheckpointModel`), written by one conditional
  update: the new checkpoint carries the task's next sequence number, and the write holds only if
  the stored one is lower *and* was written by an attempt no newer than the writer's. A stale
  attempt (its worker presumed dead, still running) therefore cannot overwrite a newer attempt's
  checkpoint, and replaying a write changes nothing;
- a small value rides inline in the item, a large one goes to S3 first (the same rule and helpers
  as result values, :mod:`skyloom.core.blobs`), under a key of its own per write, so that the item
  never names an object that is not whole; the object it replaces is deleted after the write;
- the value is dropped when the task completes (the counters stay, for ``tasks show``), and the item
  goes with the session's purge.

The writer is the task's child process (a checkpoint must be durable before ``checkpoint()``
returns: the worker may be SIGKILLed the next instant), so this module is imported there lazily,
only by tasks that checkpoint.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from pynamodb.exceptions import UpdateError

from skyloom.core import blobs, clock
from skyloom.core.config import Settings
from skyloom.core.ddb import condition_failed, update_if
from skyloom.core.models import CheckpointModel, TaskModel
from skyloom.core.protocol import CheckpointInfo, CheckpointResume
from skyloom.core.sessions import load_session
from skyloom.core.tasks import load_tasks
from skyloom.errors import Conflict

#: Prefix of the items' keys: '#' never occurs in a session id, so no session can collide.
KEY_PREFIX = "#checkpoint#"
#: Prefix of the items' ``owner``: the owner index then lists a session's checkpoints.
OWNER_PREFIX = "#checkpoints#"
#: Resume records kept per task (the most ``max_retries`` allows, plus drains): the item stays small.
MAX_RESUMES = 128


class CheckpointSuperseded(Conflict):
    """A newer attempt of the task has checkpointed: this attempt is stale and its state is not kept."""

    code = "checkpoint_superseded"


@dataclass(frozen=True)
class Stored:
    """A task's latest checkpoint as read: who wrote it, its sequence number, and its value."""

    attempt: int
    seq: int
    data: bytes | None
    #: The S3 object holding the value, if it is not inline.
    s3_key: str | None


def item_key(task_id: str) -> str:
    return f"{KEY_PREFIX}{task_id}"


def load(settings: Settings, task_id: str) -> tuple[Stored | None, int]:
    """The task's latest checkpoint (consistent read; None if it has none or it was dropped), and
    the sequence number the next one must exceed."""
    try:
        item = CheckpointModel.get(item_key(task_id), consistent_read=True)
    except CheckpointModel.DoesNotExist:
        return None, 0
    if item.dropped_at is not None:
        return None, int(item.seq)
    data = item.inline
    if data is None and item.s3_key:
        data = blobs.get(settings, item.s3_key)
    stored = Stored(attempt=int(item.attempt), seq=int(item.seq), data=data if data is not None else b"",
                    s3_key=item.s3_key)
    return stored, stored.seq


def save(settings: Settings, session_id: str, task_id: str, attempt: int, seq: int, data: bytes,
         replaces: str | None = None) -> str | None:
    """Write ``data`` as the task's checkpoint number ``seq``, taken by ``attempt``.

    Args:
        replaces: the S3 key of the checkpoint this one replaces, deleted once the write holds.

    Returns:
        The S3 key now holding the value, or None if it is inline.

    Raises:
        CheckpointSuperseded: the stored checkpoint is as new or newer (a higher sequence number,
            or a newer attempt), or the task completed: nothing was written.
    """
    now = clock.now()
    key: str | None = None
    if len(data) > settings.inline_max_bytes:
        key = blobs.checkpoint_key(session_id, task_id, f"a{attempt}-s{seq}-{clock.new_id()[:12]}")
        blobs.put(settings, key, data)
    value: list[Any] = (
        [CheckpointModel.s3_key.set(key), CheckpointModel.inline.remove()] if key is not None
        else [CheckpointModel.inline.set(data), CheckpointModel.s3_key.remove()]
    )
    newer = (
        CheckpointModel.session_id.does_not_exist()
        | ((CheckpointModel.attempt <= attempt) & (CheckpointModel.seq < seq)
           & CheckpointModel.dropped_at.does_not_exist())
    )
    try:
        CheckpointModel(item_key(task_id)).update(
            actions=[
                CheckpointModel.task_id.set(task_id),
                CheckpointModel.owner.set(f"{OWNER_PREFIX}{session_id}"),
                CheckpointModel.created_at.set(CheckpointModel.created_at | now),
                CheckpointModel.attempt.set(attempt),
                CheckpointModel.seq.set(seq),
                CheckpointModel.saved_at.set(now),
                CheckpointModel.size.set(len(data)),
                CheckpointModel.taken.add(1),
                CheckpointModel.total_bytes.add(len(data)),
                *value,
            ],
            condition=newer,
        )
    except UpdateError as exc:
        if key is not None:
            _delete_quietly(settings, key)
        if condition_failed(exc):
            raise CheckpointSuperseded(
                f"task {task_id}: a newer checkpoint than number {seq} of attempt {attempt} is stored, "
                "or the task completed; this attempt is stale", field="seq",
            ) from exc
        raise
    if replaces is not None and replaces != key:
        _delete_quietly(settings, replaces)
    return key


def record_resume(task_id: str, attempt: int, stored: Stored) -> None:
    """Note on the item that ``attempt`` resumed from ``stored`` (what ``tasks show`` tells).

    Conditioned on the item still holding that checkpoint: a resume from a value since replaced or
    dropped is not recorded as if it were the latest."""
    record = {"attempt": attempt, "from_attempt": stored.attempt, "seq": stored.seq, "at": clock.now()}
    update_if(CheckpointModel(item_key(task_id)), [CheckpointModel.resumes.set(_appended(task_id, record))],
              (CheckpointModel.seq == stored.seq) & CheckpointModel.dropped_at.does_not_exist())


def _appended(task_id: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The item's resume records with ``record`` added, the oldest beyond :data:`MAX_RESUMES` left out."""
    try:
        item = CheckpointModel.get(item_key(task_id), consistent_read=True, attributes_to_get=["resumes"])
        known = list(item.resumes or [])
    except CheckpointModel.DoesNotExist:
        known = []
    return [*known, record][-MAX_RESUMES:]


def drop(settings: Settings, task_id: str) -> bool:
    """Drop the task's checkpoint value (it completed): its S3 object goes, the counters stay.

    Idempotent: True if this call dropped a value, False if there was none or it was gone."""
    try:
        item = CheckpointModel.get(item_key(task_id), consistent_read=True)
    except CheckpointModel.DoesNotExist:
        return False
    if item.dropped_at is not None:
        return False
    dropped = [CheckpointModel.inline.remove(), CheckpointModel.s3_key.remove(),
               CheckpointModel.dropped_at.set(clock.now())]
    if not update_if(CheckpointModel(item_key(task_id)), dropped,
                     CheckpointModel.dropped_at.does_not_exist() & (CheckpointModel.seq == item.seq)):
        return drop(settings, task_id)  # a last checkpoint landed meanwhile: drop that one
    if item.s3_key:
        _delete_quietly(settings, item.s3_key)
    return True


def purge(session_id: str) -> int:
    """Delete every checkpoint item of the session (their S3 objects go with the session's prefix)."""
    items = list(CheckpointModel.by_session.query(f"{OWNER_PREFIX}{session_id}"))
    with CheckpointModel.batch_write() as batch:
        for item in items:
            batch.delete(item)
    return len(items)


def info(item: CheckpointModel | None) -> CheckpointInfo:
    """The API's view of a task's checkpoints: counters, the latest one, and who resumed from which."""
    if item is None:
        return CheckpointInfo()
    return CheckpointInfo(
        taken=int(item.taken or 0), total_bytes=int(item.total_bytes or 0), latest_size=int(item.size or 0),
        latest_attempt=int(item.attempt), latest_seq=int(item.seq), saved_at=item.saved_at,
        in_s3=bool(item.s3_key), dropped=item.dropped_at is not None,
        resumes=[CheckpointResume(**{k: v for k, v in r.items() if k in CheckpointResume.model_fields})
                 for r in item.resumes or []],
    )


def task_checkpoints(owner: str, session_id: str, task_id: str) -> CheckpointInfo:
    """A task's checkpoints, for its owner.

    Raises:
        SessionNotFound: no such session for ``owner``.
        TaskNotFound: no such task in the session (``field`` is ``task_id``).
    """
    load_tasks(load_session(owner, session_id), [task_id], field="task_id")
    try:
        item = CheckpointModel.get(item_key(task_id), consistent_read=True)
    except CheckpointModel.DoesNotExist:
        item = None
    return info(item)


def may_hold(task: TaskModel) -> bool:
    """Whether a completing task may have a checkpoint value to drop that its last attempt did not
    touch: an earlier attempt ended (only tasks that were retried can have one)."""
    return bool(task.attempts)


def _delete_quietly(settings: Settings, key: str) -> None:
    with contextlib.suppress(ClientError):  # the purge of the session's prefix deletes what is left
        blobs.delete(settings, key)

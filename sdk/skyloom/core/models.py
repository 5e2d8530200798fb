# mypy: disable-error-code="no-untyped-call"
"""The DynamoDB data model (pynamodb) of sessions, tasks, results and dependency edges.

Table names and the endpoint come from :class:`~skyloom.core.config.Settings` at run time, so the
models are bound once per process with :func:`bind` (a Lambda container, a worker agent, the local
stack). Item shapes must match :mod:`skyloom.core.resources`, which a unit test checks.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import pynamodb.settings
from pynamodb.attributes import (
    Attribute,
    BinaryAttribute,
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.connection import Connection
from pynamodb.expressions.operand import Path
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from skyloom.core import wire
from skyloom.core.config import Settings
from skyloom.core.item_model import ItemModel
from skyloom.core.resources import EDGES, MEASUREMENTS, RESULTS, SESSIONS, TASKS

#: How DynamoDB calls are retried: as AWS's SDKs retry DynamoDB, with botocore's own DynamoDB policy
#: ("legacy" mode: 10 attempts, pauses of 50 ms doubling, ~25 s in all). pynamodb's default is
#: botocore's generic "standard" mode: 4 attempts, pauses drawn up to 1 s, 2 s then 4 s, so one
#: 500 among thousands of 10 ms calls cost ~0.5 s, and a network blackout of a few seconds failed
#: the call while its retry quota drained. A deployment's ``PYNAMODB_CONFIG`` file still wins.
DYNAMODB_RETRIES: dict[str, Any] = {"mode": "legacy", "total_max_attempts": 10}
pynamodb.settings.default_settings_dict["retry_configuration"] = DYNAMODB_RETRIES  # type: ignore[assignment]


class Number(NumberAttribute):
    """A number attribute that writes ints and finite floats without ``json.dumps``, which pynamodb
    calls for every number of every item and update (a fourteenth of the submit function's CPU);
    ``repr`` gives the same text for them. Anything else is written by pynamodb's own code."""

    def serialize(self, value: Any) -> Any:
        kind = type(value)
        if kind is int or (kind is float and math.isfinite(value)):
            return repr(value)
        return super().serialize(value)


class _Meta:
    table_name = "unbound"
    region = "us-east-1"
    host: str | None = None


# ---------------------------------------------------------------------------------------- sessions
class SessionsByOwner(GlobalSecondaryIndex["SessionModel"]):
    class Meta:
        index_name = "by_owner"
        projection = AllProjection()

    owner = UnicodeAttribute(hash_key=True)
    created_at = Number(range_key=True)


class SessionModel(ItemModel):
    class Meta(_Meta):
        pass

    session_id = UnicodeAttribute(hash_key=True)
    owner = UnicodeAttribute()
    status = UnicodeAttribute()
    created_at = Number()
    updated_at = Number()
    #: Default task options (a TaskOptions dict) applied to every task of the session.
    options = JSONAttribute(default=dict)
    partitions = ListAttribute[str](default=list)
    name = UnicodeAttribute(null=True)
    expires_at = Number(null=True)

    by_owner = SessionsByOwner()


# ------------------------------------------------------------------------------------------- tasks
class TasksBySession(GlobalSecondaryIndex["TaskModel"]):
    class Meta:
        index_name = "by_session"
        projection = AllProjection()

    session_id = UnicodeAttribute(hash_key=True)
    task_id = UnicodeAttribute(range_key=True)


class TasksByParent(GlobalSecondaryIndex["TaskModel"]):
    class Meta:
        index_name = "by_parent"
        projection = AllProjection()

    parent_task_id = UnicodeAttribute(hash_key=True)
    task_id = UnicodeAttribute(range_key=True)


class TasksByDue(GlobalSecondaryIndex["TaskModel"]):
    class Meta:
        index_name = "by_due"
        projection = AllProjection()

    due_shard = UnicodeAttribute(hash_key=True)
    due_at = Number(range_key=True)


class TasksByChange(GlobalSecondaryIndex["TaskModel"]):
    """A session's tasks in the order they last changed: what the events feed reads."""

    class Meta:
        index_name = "by_change"
        projection = AllProjection()

    session_id = UnicodeAttribute(hash_key=True)
    updated_at = Number(range_key=True)


class TaskModel(ItemModel):
    class Meta(_Meta):
        pass

    task_id = UnicodeAttribute(hash_key=True)
    session_id = UnicodeAttribute()
    owner = UnicodeAttribute()
    status = UnicodeAttribute()
    handler = UnicodeAttribute()
    #: What the task runs, for people (a function's module.qualname); listings and stats only.
    label = UnicodeAttribute(null=True)
    #: Inline payload; None when the payload is the result ``payload_result``.
    payload = BinaryAttribute(null=True, legacy_encoding=False)
    #: A completed result holding the payload, for payloads too large to ride inline.
    payload_result = UnicodeAttribute(null=True)
    payload_size = Number(default=0)
    data_dependencies = ListAttribute[str](default=list)
    #: Dependencies not yet completed. DynamoDB drops an empty set, so "absent" means "none left".
    remaining = UnicodeSetAttribute(null=True)
    #: The data dependencies of the *optional* kind (an abort of one does not cancel the task) and of
    #: the *lazy* kind (not prefetched); absent on tasks with mandatory dependencies only.
    optional_deps = UnicodeSetAttribute(null=True)
    lazy_deps = UnicodeSetAttribute(null=True)
    #: Optional dependencies that were aborted: the cascade stopped here, the task runs without them.
    aborted_inputs = UnicodeSetAttribute(null=True)
    expected_outputs = ListAttribute[str](default=list)
    #: ``{output id: [task ids]}``: the tasks written together with this one that wait on its outputs
    #: (:func:`skyloom.core.readiness.note_releases`). The worker that commits this task releases them
    #: itself, without waiting for the results stream; the stream still does it for every dependent.
    releases = JSONAttribute(null=True)
    #: Effective TaskOptions (session defaults merged with the task's own).
    options = JSONAttribute(default=dict)
    partition = UnicodeAttribute()
    priority = Number(default=0)
    parent_task_id = UnicodeAttribute(null=True)
    parent_attempt = Number(null=True)
    #: Subtask nesting level: 0 for a task a client submitted, parent's + 1 for a staged subtask;
    #: bounded by ``limits.SUBTASK_DEPTH``. Absent on items written before it existed (read as 0).
    depth = Number(null=True)
    created_at = Number()
    updated_at = Number()
    submitted_at = Number(null=True)
    started_at = Number(null=True)
    ended_at = Number(null=True)
    #: Number of the last attempt written, 1-based; 0 before the first. A short task runs on its
    #: message's receipt and writes its attempt number only at its commit (see ``claims.take``).
    attempt = Number(default=0)
    #: A retry waits for its backoff until then: an earlier (duplicate) message must not start it.
    not_before = Number(null=True)
    lease_owner = UnicodeAttribute(null=True)
    lease_expires = Number(null=True)
    #: Timer index: set while something must happen to this task by ``due_at``.
    due_shard = UnicodeAttribute(null=True)
    due_at = Number(null=True)
    #: One JSON object per finished attempt: number, worker, start, end, outcome, error, traceback.
    attempts = JSONAttribute(default=list)
    #: The final error, when the task ended in Error/Timeout/Cancelled.
    error = JSONAttribute(null=True)
    #: Set at commit while the children staged by the winning attempt are not live yet.
    finalize_pending = Number(null=True)
    #: Timing breakdown and bytes moved of the winning attempt.
    metrics = JSONAttribute(null=True)
    request_id = UnicodeAttribute(null=True)
    expires_at = Number(null=True)

    by_session = TasksBySession()
    by_parent = TasksByParent()
    by_due = TasksByDue()
    by_change = TasksByChange()


# ----------------------------------------------------------------------------------------- results
class ResultsBySession(GlobalSecondaryIndex["ResultModel"]):
    class Meta:
        index_name = "by_session"
        projection = AllProjection()

    session_id = UnicodeAttribute(hash_key=True)
    result_id = UnicodeAttribute(range_key=True)


class ResultsByChange(GlobalSecondaryIndex["ResultModel"]):
    """A session's results in the order they last changed: what the events feed reads."""

    class Meta:
        index_name = "by_change"
        projection = AllProjection()

    session_id = UnicodeAttribute(hash_key=True)
    updated_at = Number(range_key=True)


class ResultModel(ItemModel):
    class Meta(_Meta):
        pass

    result_id = UnicodeAttribute(hash_key=True)
    session_id = UnicodeAttribute()
    owner = UnicodeAttribute()
    status = UnicodeAttribute()
    #: The task that must produce this result; None for a result the client uploads.
    owner_task_id = UnicodeAttribute(null=True)
    name = UnicodeAttribute(null=True)
    created_at = Number()
    completed_at = Number(null=True)
    #: Set by every write that changes the result (status, owner, value), for the events feed.
    updated_at = Number()
    size = Number(null=True)
    #: Inline value (small results) or the S3 key of the value; exactly one is set once Completed.
    inline = BinaryAttribute(null=True, legacy_encoding=False)
    s3_key = UnicodeAttribute(null=True)
    #: Why the result was aborted: the root failed task and its error.
    error = JSONAttribute(null=True)
    #: The staging parent and attempt when a running task created this result.
    parent_task_id = UnicodeAttribute(null=True)
    request_id = UnicodeAttribute(null=True)
    expires_at = Number(null=True)
    #: Whether a task may wait on this result (an edge names it). Written False at creation and True
    #: before the first edge, so that resolve skips the edge lookup of every result nobody depends
    #: on (most results: a task's final value). Absent on items older than the flag: look them up.
    has_dependents = BooleanAttribute(null=True)
    #: The tasks waiting on it, carried on the item up to ``readiness.DEPENDENTS_ON_ITEM`` of them, so
    #: that resolve reads them from the stream record instead of querying the edges; absent (with
    #: ``has_dependents``) when there are more, or on items older than it: the edges say then.
    dependents = UnicodeSetAttribute(null=True)

    by_session = ResultsBySession()
    by_change = ResultsByChange()


# ------------------------------------------------------------------------------------------- edges
class EdgeModel(ItemModel):
    class Meta(_Meta):
        pass

    result_id = UnicodeAttribute(hash_key=True)
    task_id = UnicodeAttribute(range_key=True)
    session_id = UnicodeAttribute()
    expires_at = Number(null=True)


# ------------------------------------------------------------------------- worker environments
class WorkerEnvironmentModel(ItemModel):
    """The Python and cloudpickle versions a partition's workers run (:mod:`skyloom.core.environment`).

    One item per partition in the sessions table, under a key no session id can take (``#`` is not
    an id character), without the owner and creation time the owner index needs: no listing,
    query or sweep of sessions ever meets it.
    """

    class Meta(_Meta):
        pass

    session_id = UnicodeAttribute(hash_key=True)
    partition = UnicodeAttribute()
    python = UnicodeAttribute()
    cloudpickle = UnicodeAttribute()
    recorded_at = Number()


# ----------------------------------------------------------------------------------- checkpoints
class CheckpointsBySession(GlobalSecondaryIndex["CheckpointModel"]):
    """The sessions table's owner index, read for checkpoints: their ``owner`` is
    ``#checkpoints#<session id>``, which no caller identity can be, so a purge finds a session's
    checkpoints in one query and no listing of sessions ever meets them."""

    class Meta:
        index_name = "by_owner"
        projection = AllProjection()

    owner = UnicodeAttribute(hash_key=True)
    created_at = Number(range_key=True)


class CheckpointModel(ItemModel):
    """The latest checkpoint of one task (:mod:`skyloom.core.checkpoints`), with its counters.

    One item per task in the sessions table, under a key no session id can take (``#`` is not an
    id character), as :class:`WorkerEnvironmentModel`: no new table to deploy, and the workers can
    already write there. The value rides inline up to ``Settings.inline_max_bytes``, else in S3
    under the session's prefix (``s3_key``). Once the task completes the value goes and the counters
    stay, for ``tasks show``; a purge deletes the item.
    """

    class Meta(_Meta):
        pass

    session_id = UnicodeAttribute(hash_key=True)
    task_id = UnicodeAttribute()
    #: ``#checkpoints#<session id>``: the owner index then lists a session's checkpoints.
    owner = UnicodeAttribute()
    created_at = Number()
    #: The attempt that wrote the latest checkpoint, and the task's checkpoint sequence number: a
    #: write must carry a higher one, from an attempt no older (a stale attempt cannot overwrite).
    attempt = Number()
    seq = Number()
    saved_at = Number()
    #: Size of the latest value; how many were taken and how many bytes they held, in all.
    size = Number()
    taken = Number(default=0)
    total_bytes = Number(default=0)
    inline = BinaryAttribute(null=True, legacy_encoding=False)
    s3_key = UnicodeAttribute(null=True)
    #: One object per attempt that resumed: its number, and the attempt and sequence it resumed from.
    resumes = JSONAttribute(null=True)
    #: Set when the task completed and the value was dropped.
    dropped_at = Number(null=True)
    expires_at = Number(null=True)

    by_session = CheckpointsBySession()


# ------------------------------------------------------------------------------- measurements
class MeasurementModel(ItemModel):
    """A measurement, its series' last value, or a window of run times (:mod:`skyloom.core.measurements`)."""

    class Meta(_Meta):
        pass

    series = UnicodeAttribute(hash_key=True)
    entry = UnicodeAttribute(range_key=True)
    key = UnicodeAttribute(null=True)
    name = UnicodeAttribute(null=True)
    value = Number(null=True)
    recorded_at = Number(null=True)
    session_id = UnicodeAttribute(null=True)
    task_id = UnicodeAttribute(null=True)
    #: Run-time windows: the handler or function, the window's start, and its histogram.
    label = UnicodeAttribute(null=True)
    window = Number(null=True)
    samples = Number(null=True)
    total = Number(null=True)
    buckets = JSONAttribute(null=True)
    expires_at = Number(null=True)


_BINDINGS = (
    (MeasurementModel, MEASUREMENTS),
    (SessionModel, SESSIONS),
    (WorkerEnvironmentModel, SESSIONS),
    (CheckpointModel, SESSIONS),
    (TaskModel, TASKS),
    (ResultModel, RESULTS),
    (EdgeModel, EDGES),
)
_bind_lock = threading.Lock()
_bound: Settings | None = None
_connection: Connection | None = None


def bind(settings: Settings) -> None:
    """Point every model at the tables of ``settings``; idempotent, once per process.

    pynamodb keeps table names on the model classes, so one process serves one stack. Rebinding to
    other settings (tests that start a second stack) resets the cached connections.
    """
    global _bound, _connection
    with _bind_lock:
        if _bound == settings:
            return
        for model, spec in _BINDINGS:
            model.Meta.table_name = settings.table_name(spec)
            model.Meta.region = settings.region
            model.Meta.host = settings.aws_endpoint
            model._connection = None
        _connection = None
        _bound = settings
        _share_connection()


def reset_connections() -> None:
    """Forget the cached connections (and their botocore clients): the next call builds new ones.

    For hooks on client creation installed after this process made its first DynamoDB call
    (:func:`skyloom.core.aws.on_every_client`): pynamodb's clients are not reachable otherwise.
    """
    global _connection
    with _bind_lock:
        for model, _spec in _BINDINGS:
            model._connection = None
        _connection = None
        if _bound is not None:
            _share_connection()


#: Connections kept open to DynamoDB by the one client every model shares: threads of an agent, the
#: resolver's and readiness's pools run concurrently (botocore's default, 10, would drop sockets).
POOL_CONNECTIONS = 50


def _share_connection() -> None:
    """Give every model a connection that uses the process's one botocore client; under ``_bind_lock``.

    pynamodb builds a Connection, hence a botocore client, per model class; each client loads and
    parses DynamoDB's service model again, tens of milliseconds of CPU apiece, in every process
    (each Lambda cold start, each agent) for eight models. One client serves them all (botocore
    clients are thread-safe); each model keeps a connection of its own, which knows its schema.
    The client is still built on first use, so hooks on client creation installed before then
    (:func:`skyloom.core.aws.on_every_client`) see it.
    """
    for model, _spec in _BINDINGS:
        table = model._get_connection()  # the model's schema, and a connection that built no client
        own = table.connection
        shared = _SharedClientConnection(region=own.region, host=own.host)
        shared.add_meta_table(own.get_meta_table(table.table_name))
        table.connection = shared


class _SharedClientConnection(Connection):
    """A model's connection whose botocore client is the process's one (:func:`connection`'s)."""

    @property
    def client(self) -> Any:
        return connection().client


def bound_settings() -> Settings:
    if _bound is None:
        raise RuntimeError("skyloom.core.models.bind(settings) was not called in this process")
    return _bound


def connection() -> Connection:
    """The process's connection for transactions (pynamodb needs one explicitly).

    One per binding, and its botocore client is the one every model uses (:func:`_share_connection`):
    each new Connection builds a client on first use, which costs more CPU than the transaction
    itself (measured: a sixth of a worker's CPU when every completion made one).
    """
    global _connection
    found = _connection  # every model's every call comes here: no lock once it exists
    if found is not None:
        return found
    with _bind_lock:
        if _connection is None:
            s = bound_settings()
            _connection = _ProcessConnection(region=s.region, host=s.aws_endpoint,
                                             max_pool_connections=POOL_CONNECTIONS)
        return _connection


class _ProcessConnection(Connection):
    """The process's connection: its botocore client takes items in one pass (:mod:`skyloom.core.wire`)."""

    _wired: Any = None

    @property
    def client(self) -> Any:
        found = super().client  # pynamodb builds it on first use, and again if its credentials went
        if found is not self._wired:
            wire.install_on(found)
            self._wired = found
        return found


_paths: dict[int, Path] = {}


def path(attribute: Attribute[Any]) -> Path:
    """``attribute``'s document path, built once: pynamodb builds a new one for every ``.set()``,
    ``.remove()`` or comparison (a third of the time a commit takes to build its actions). A path
    is only read when its expression is serialized, so one serves every write."""
    found = _paths.get(id(attribute))
    if found is None:
        found = _paths[id(attribute)] = Path(attribute)
    return found


def item_from_stream_image(model: type[Model], image: dict[str, Any]) -> Any:
    """Rebuild a model instance from a DynamoDB stream image (``{"attr": {"S": ...}}``)."""
    return model.from_raw_data(image)

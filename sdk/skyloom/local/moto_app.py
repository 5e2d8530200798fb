"""The WSGI application the embedded emulator serves: moto's domain dispatcher, and our patches to moto.

Gunicorn imports this module in its single worker (``skyloom.local.moto_app:app``). moto keeps all
state in that process's memory, which is why :mod:`skyloom.local.emulator` never runs more than one
worker (a local stack runs two emulators instead: SQS apart from the rest).

Every change this process makes to moto is listed here; EMULATORS.md (at the repository root) lists
every one with the test that pins it. They are about running for hours, under load, the way
AWS behaves:

* moto stores every DynamoDB Streams shard iterator it ever hands out, and a stream consumer asks for
  a new one on every poll (20 a second when idle). Only the most recent ones can still be in use, so
  the store is trimmed to the newest :data:`MAX_SHARD_ITERATORS`.
* moto holds nothing durable, so draining in-flight requests at shutdown protects nothing, while
  gunicorn's gthread worker sometimes outlives its graceful timeout on SIGQUIT/SIGTERM. The worker
  exits at once on those signals instead (gunicorn installs its handlers before loading this module).
* moto's DynamoDB is not thread-safe (a cancelled transaction could undo writes that other request
  threads made meanwhile, seen as results left Created under completed tasks). DynamoDB and DynamoDB
  Streams requests are therefore served one at a time (:func:`_serialize_dynamodb`); moto holds the
  GIL for nearly all of a request anyway, so this costs little throughput.
* moto makes ``TransactWriteItems`` undoable by deep-copying every table it touches and, when the
  transaction is cancelled, putting the copies in place of the tables. That costs a copy of the
  whole table (and its stream) per transaction, and, worse, the copy carries a new stream shard
  object: every shard iterator handed out before keeps reading the discarded one, so a stream
  consumer sees nothing after the first cancelled transaction (on AWS a cancelled transaction
  writes nothing and emits no stream record, and iterators are unaffected). It also parses and
  evaluates each item's condition twice (its check, then the write's own). Transactions here keep
  the items they name (by reference: no write changes a stored item in place) and the stream's
  length, put those back when cancelled, and check each condition once (:func:`_transact_write_items`).
* moto's SQS queues are plain lists that concurrent requests change without a lock (a send or a
  delete could be undone by another delete under a deep backlog), and it walks the whole queue to
  find one message by its receipt handle or to read one queue attribute:
  :mod:`skyloom.local.moto_queues` serves each queue's requests one at a time and finds messages by
  handle.
* moto builds each item it writes with a size check per attribute that sums the whole item so far,
  and turns each answer into wire shape by a generic walk; :mod:`skyloom.local.moto_items` checks
  the size once and converts by the values' exact types.
* moto parses every condition expression again for each item it writes (three times per item of a
  transaction); :mod:`skyloom.local.moto_conditions` keeps the parsed ones.
* moto evaluates every UpdateExpression through a deep syntax tree walked once per rule;
  :mod:`skyloom.local.moto_updates` applies the plain ones (``SET #a = :v``, ``REMOVE #a``) itself.
* moto's Query walks every item of the table; :mod:`skyloom.local.moto_indexes` hands it only the
  items filed under the hash key asked for.
* moto serializes every DynamoDB and DynamoDB Streams answer by walking botocore's shape model
  attribute by attribute, which cost half of the emulator's time in a throughput run. The answers
  of the data operations are already in wire shape (``dynamo_to_dict``), so they are written with
  ``json.dumps`` instead, binary values base64-encoded and datetimes as epoch seconds as the shape
  walk does (:func:`_serialized_quickly`). ``SKYLOOM_MOTO_VERIFY_SERIALIZER=1`` serializes each
  answer both ways and fails the request when they differ; the end-to-end suite runs that way
  (tests/e2e/conftest.py), and ``test_dynamodb_answers_written_quickly_are_the_ones_moto_writes``.
* moto keeps every item, message and stream record it ever built (for its dashboard), copies
  included: the process grew with every write. It keeps none here (:func:`_stop_tracking`).
* moto parses each JSON request by walking botocore's shape model over every attribute value, and
  lists a handler class's methods on every request: :mod:`skyloom.local.moto_requests` reads items
  in one pass and keeps the method names.
* Python's collector walks everything moto keeps, again each time it grows by a quarter: here it
  makes young collections only, and sets the survivors aside (:func:`_collector_round`).
* If the process that started the emulator dies without stopping it (SIGKILL of a test run), nothing
  else would ever end it. A watchdog thread checks that parent (``SKYLOOM_LOCAL_PARENT_PID``) and
  asks the gunicorn master to shut down when it is gone.
"""

from __future__ import annotations

import base64
import functools
import gc
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from moto.core.responses import ActionResult
from moto.core.serialize import TimestampSerializer
from moto.core.utils import get_service_model
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import StreamRecord, Table
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.models import DynamoDBStreamsBackend
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.moto_server.werkzeug_app import create_backend_app
from moto.sqs.models import Message

from skyloom.local import moto_conditions, moto_indexes, moto_items, moto_queues, moto_requests, moto_updates
from skyloom.local.moto_dispatch import CachedDispatcher
from skyloom.runtime import lifeline

#: Shard iterators kept per streams backend; far more than one consumer can have in flight.
MAX_SHARD_ITERATORS = 2048

_original_get_records = DynamoDBStreamsBackend.get_records


def _get_records_bounded(self: DynamoDBStreamsBackend, iterator_arn: str, limit: int) -> dict[str, Any]:
    result = _original_get_records(self, iterator_arn, limit)
    excess = len(self.shard_iterators) - MAX_SHARD_ITERATORS
    if excess > 0:
        # dicts keep insertion order: the first keys are the oldest iterators.
        for stale in list(self.shard_iterators)[:excess]:
            self.shard_iterators.pop(stale, None)
    return result


DynamoDBStreamsBackend.get_records = _get_records_bounded  # type: ignore[method-assign]


_Slot = tuple[Table, DynamoType, DynamoType | None]


def _slot(backend: DynamoDBBackend, op_type: str, op: dict[str, Any]) -> _Slot | None:
    table = backend.tables.get(op.get("TableName", ""))
    if table is None:
        return None  # moto reports the missing table itself
    key = op.get("Item") if op_type == "Put" else op.get("Key")
    if not isinstance(key, dict) or table.hash_key_attr not in key:
        return None
    if table.range_key_attr is None:
        return table, DynamoType(key[table.hash_key_attr]), None
    if table.range_key_attr not in key:
        return None  # moto refuses the key itself
    return table, DynamoType(key[table.hash_key_attr]), DynamoType(key[table.range_key_attr])


_TRANSACT_OPERATIONS = frozenset({"ConditionCheck", "Put", "Delete", "Update"})


def _transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """moto's ``transact_write_items``, answering as it does, that puts back only what it wrote.

    Each item's condition is parsed and evaluated once, against the item as the transaction found
    it (moto evaluated it, then wrote with the same condition, which evaluated it again). The items
    named are kept by reference before anything is written (no write changes a stored item in place:
    puts and deletes replace or drop it, updates store a new one, :mod:`skyloom.local.moto_updates`),
    and put back, with the stream cut to its length before, if the transaction is cancelled.
    """
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    saved: list[tuple[_Slot, Item | None]] = []
    streams: dict[int, tuple[Any, int]] = {}
    for entry in transact_items:
        for op_type, op in entry.items():
            slot = _slot(self, op_type, op) if isinstance(op, dict) else None
            if slot is None:
                continue
            table, hash_key, range_key = slot
            saved.append((slot, table.get_item(hash_key, range_key)))
            if table.stream_shard is not None:
                streams.setdefault(id(table.stream_shard), (table.stream_shard, len(table.stream_shard.items)))
    try:
        _write_all(self, transact_items)
    except BaseException:
        for (table, hash_key, range_key), item in reversed(saved):
            if range_key is not None:
                if item is None:
                    table.items[hash_key].pop(range_key, None)
                else:
                    table.items[hash_key][range_key] = item
            elif item is None:
                table.items.pop(hash_key, None)
            else:
                table.items[hash_key] = item  # type: ignore[assignment]  # moto types it for range tables
            moto_indexes.refile(table, hash_key, range_key)
        for shard, length in streams.values():
            del shard.items[length:]  # records of writes that, on AWS, never happened
        raise


def _write_all(backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """The writes of a transaction, in order; raises moto's errors as moto's own loop does."""
    targets: set[tuple[str, str]] = set()
    errors: list[tuple[str | None, str | None, dict[str, Any] | None]] = []
    for entry in transact_items:
        original: dict[str, Any] | None = None
        if len(entry) > 1:
            raise TransactWriteSingleOpException
        try:
            op_type, op = next(iter(entry.items()))
            if op_type not in _TRANSACT_OPERATIONS:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            if op_type == "Put":
                table = backend.get_table(table_name)
                key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = op["Item"][table.range_key_attr]
            else:
                key = op["Key"]
            target = (str(table_name), str(dict(sorted(key.items()))))
            if target in targets:
                raise MultipleTransactionsException()
            targets.add(target)
            current = backend.get_item(table_name, key)
            condition = op.get("ConditionExpression")
            if condition is not None and not moto_conditions.new_parser(condition, names, values).parse().expr(current):
                if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                    original = current.to_json()["Attributes"]
                raise ConditionalCheckFailed(item=original)
            # The condition held just now, on this very item: the write itself checks nothing more.
            if op_type == "Put":
                backend.put_item(table_name, op["Item"], overwrite=True)
            elif op_type == "Delete":
                backend.delete_item(table_name, key)
            elif op_type == "Update":
                backend.update_item(table_name, key, update_expression=op["UpdateExpression"],
                                    expression_attribute_names=names, expression_attribute_values=values)
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            raise
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original))
        except Exception as e:
            errors.append((type(e).__name__, str(e), original))
    if any(code is not None for code, _, _ in errors):
        raise TransactionCanceledException(errors)


DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]


#: Operations whose answers are plain wire-shaped data; the others (table descriptions, errors) keep
#: moto's serializer.
QUICK_OPERATIONS = frozenset({
    "GetItem", "BatchGetItem", "Query", "Scan", "PutItem", "UpdateItem", "DeleteItem",
    "BatchWriteItem", "TransactWriteItems", "TransactGetItems", "GetRecords", "GetShardIterator",
})
VERIFY_SERIALIZER_ENV = "SKYLOOM_MOTO_VERIFY_SERIALIZER"
_JSON_CONTENT_TYPE = "application/x-amz-json-1.0"


def _json_default(value: Any) -> Any:
    """bytes and datetimes inside an answer, as the shape walk writes them."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return TimestampSerializer._timestamp_unixtimestamp(value)
    raise TypeError(f"{type(value).__name__} in a DynamoDB answer")


def _record_wire(record: dict[str, Any]) -> dict[str, Any]:
    """A stream record as the shape walk writes it: without the None members, which stand only at
    its top and in its ``dynamodb`` member (an absent image), never inside an item; bytes and
    datetimes are left to :func:`_json_default`. Not a walk of the images: they are most of an
    answer's size, and walking them was a tenth of the emulator's time."""
    out = {k: v for k, v in record.items() if v is not None}
    change = out.get("dynamodb")
    if isinstance(change, dict):
        out["dynamodb"] = {k: v for k, v in change.items() if v is not None}
    return out


@functools.cache
def _output_members(service: str, operation: str) -> frozenset[str]:
    """The members of the operation's answer: the shape walk leaves out what moto adds beyond them
    (``ConsumedCapacityUnits`` on a DeleteItem, for one)."""
    shape = get_service_model(service).operation_model(operation).output_shape
    return frozenset(shape.members) if shape is not None else frozenset()


def _quick_serializer(original: Callable[[Any, ActionResult], Any]) -> Callable[[Any, ActionResult], Any]:
    verify = os.environ.get(VERIFY_SERIALIZER_ENV, "") == "1"

    def serialized(self: Any, action_result: ActionResult) -> Any:
        result = action_result.result
        if not isinstance(result, dict) or self._get_action() not in QUICK_OPERATIONS:
            return original(self, action_result)
        members = _output_members(self.boto3_service_name, self._get_action())
        answer = {k: v for k, v in result.items() if k in members and v is not None}
        # Item answers hold no None below the top; stream records may, at their top and in their
        # ``dynamodb`` member (an absent image), never inside an image.
        if "Records" in answer:
            answer["Records"] = [_record_wire(r) for r in answer["Records"]]
        body = json.dumps(answer, default=_json_default)
        if verify:
            _, _, expected = original(self, action_result)
            if json.loads(expected) != json.loads(body):
                raise AssertionError(f"quick serializer differs for {self._get_action()}: {body} != {expected}")
        headers = {"Content-Type": _JSON_CONTENT_TYPE}
        headers.update(self.response_headers)
        return 200, headers, body

    return serialized


for _handler in (DynamoHandler, DynamoDBStreamsHandler):
    _handler.serialized = _quick_serializer(_handler.serialized)  # type: ignore[method-assign,assignment]


def _stop_gunicorn() -> None:
    # The gunicorn master is our parent; SIGTERM makes it stop its worker (us) and exit.
    master = os.getppid()
    if master > 1:
        os.kill(master, signal.SIGTERM)


def _exit_now(signum: int, frame: object) -> None:
    os._exit(0)


class _Untracked(list[Any]):
    """Stands in for the list in which moto keeps every instance of a model it ever made (for its
    dashboard's data page): it keeps none."""

    def append(self, instance: Any) -> None:
        pass


def _stop_tracking(*models: type) -> None:
    """moto keeps every item, message and stream record it ever built, the copies it makes of them
    included, until the process ends: the emulator's memory grew with every write, and Python's
    collector walked all of it. Nothing here reads moto's dashboard."""
    for model in models:
        model.instances_tracked = _Untracked()  # type: ignore[attr-defined]


#: How often the objects that outlived the young collections are set aside from later walks.
SET_ASIDE_EVERY_SECONDS = 5.0
#: Full collections the collector would start on its own: none (a count it never reaches).
NO_FULL_COLLECTIONS = 1 << 30
#: How often everything set aside is walked again, so that cycles among old objects are collected.
WALK_ALL_EVERY_SECONDS = 600.0


def _collector_round(walk_all: bool) -> None:
    """Set aside (``gc.freeze``) every object the young collections left; with ``walk_all``,
    first put back what was set aside and collect it all.

    Python's collector walks every object it tracks in a full collection, and runs one each time
    the tracked objects grow by a quarter, besides its young collections every 700 allocations: in
    an emulator that keeps every item, stream record and message, that is a walk of the whole store,
    again and again as it grows (6.1 s of the emulator's CPU in a 10,000-task run, 12 % of it, 4.7 s
    in 16 full walks). What moto keeps is not garbage, and what it drops is freed by reference
    counting (items, records and messages hold no cycles). So in the emulator the collector makes
    young collections only, as usual (a request's own cycles go there), and every few seconds what
    outlived them is set aside, unwalked; every ten minutes, all of it is walked once (a cycle that
    became garbage late is collected then).
    """
    if walk_all:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


def _start_collector() -> None:
    """Young collections as Python makes them, the rest on a timer (see :func:`_collector_round`)."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NO_FULL_COLLECTIONS)

    def loop() -> None:
        walked = time.monotonic()
        while True:
            time.sleep(SET_ASIDE_EVERY_SECONDS)
            walk_all = time.monotonic() - walked >= WALK_ALL_EVERY_SECONDS
            if walk_all:
                walked = time.monotonic()
            _collector_round(walk_all)

    threading.Thread(target=loop, name="skyloom-collector", daemon=True).start()


def _install_fast_exit() -> None:
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
            signal.signal(signum, _exit_now)


_dynamodb_lock = threading.Lock()
WsgiApp = Any


def _serialize_dynamodb(inner: WsgiApp) -> WsgiApp:
    """Run DynamoDB (and Streams) requests one at a time, response body included."""

    def serve(environ: dict[str, Any], start_response: Any) -> Any:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB"):
            return inner(environ, start_response)
        with _dynamodb_lock:
            body = inner(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()

    return serve


_stop_tracking(Item, StreamRecord, Message)
moto_conditions.install()
moto_items.install()
moto_updates.install()
moto_indexes.install()
moto_queues.install()
moto_requests.install()
app = _serialize_dynamodb(CachedDispatcher(create_backend_app))
_install_fast_exit()
_start_collector()
lifeline.watch_parent_from_env(_stop_gunicorn)


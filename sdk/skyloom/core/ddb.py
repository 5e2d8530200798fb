"""Small helpers around pynamodb for conditional writes and transactions.

Two outcomes of a conditional write are normal, not errors: it was applied, or its condition
refused it (a lost race, a replay). :func:`update_if` says which. A transaction has a third
normal outcome on a busy table: DynamoDB cancels it although every condition held
(``TransactionConflict``: another transaction was writing one of its items; ``ThrottlingError``:
the table's capacity ran out). Nothing was written, botocore does not retry it, and the same
transaction succeeds a moment later, so :func:`transact` retries it itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from pynamodb.connection.base import BOTOCORE_EXCEPTIONS
from pynamodb.constants import (
    TRANSACT_CONDITION_CHECK,
    TRANSACT_DELETE,
    TRANSACT_ITEMS,
    TRANSACT_PUT,
    TRANSACT_UPDATE,
    TRANSACT_WRITE_ITEMS,
)
from pynamodb.exceptions import PynamoDBException, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from skyloom.core import aws, clock
from skyloom.core.models import connection

T = TypeVar("T")

#: DynamoDB's limit of items in one TransactWriteItems call.
TRANSACTION_MAX_ITEMS = 100
#: DynamoDB's limit of keys in one BatchGetItem call, and the first and largest pause before keys
#: it left unprocessed (throttling) are asked for again.
BATCH_GET_MAX_KEYS = 100
UNPROCESSED_BACKOFF_SECONDS = (0.02, 1.0)

CONDITIONAL_FAILED = "ConditionalCheckFailedException"
#: The cancellation reason of an item whose own condition refused the transaction.
CONDITION_REFUSED = "ConditionalCheckFailed"
#: Cancellation reasons that say nothing about the items, only about the moment: retried as is.
TRANSIENT_CANCELLATIONS = aws.TRANSIENT_CANCELLATIONS
#: Attempts of one transaction cancelled for a transient reason, and the first and largest pause
#: between two (doubling, jittered). A conflict lasts as long as the other transaction (a few ms
#: on DynamoDB), so the first retry comes soon; seven retries ride out ~5 s of a hot item.
TRANSACTION_ATTEMPTS = 8
TRANSACTION_BACKOFF_SECONDS = (0.02, 2.0)


def condition_failed(exc: BaseException) -> bool:
    """True when a write was refused by its condition (the expected, benign outcome of a race)."""
    return isinstance(exc, PynamoDBException) and exc.cause_response_code == CONDITIONAL_FAILED


def failed_indexes(exc: TransactWriteError) -> list[int]:
    """Positions of the items whose condition cancelled a transaction (empty if it failed otherwise)."""
    return [
        i for i, reason in enumerate(exc.cancellation_reasons)
        if reason is not None and reason.code == CONDITION_REFUSED
    ]


def transiently_cancelled(exc: TransactWriteError) -> bool:
    """True when DynamoDB cancelled the transaction for the moment only (a conflict with another
    transaction, throttling) and no item's condition refused it: the same transaction may succeed."""
    codes = {reason.code for reason in exc.cancellation_reasons if reason is not None}
    return bool(codes & TRANSIENT_CANCELLATIONS) and CONDITION_REFUSED not in codes


def update_if(item: Model, actions: Sequence[Action], condition: Condition | None) -> bool:
    """Apply one conditional update; False if its condition refused it, any other failure raises.

    The one way Skyloom writes "move this item if it is still in the state I saw": losing the race
    is an answer (someone else did it, or this is a replay), never an error.
    """
    try:
        item.update(actions=list(actions), condition=condition)
    except UpdateError as exc:
        if condition_failed(exc):
            return False
        raise
    return True


def batch_get(requests: Sequence[tuple[type[Model], Sequence[Any]]]) -> list[list[Any]]:
    """Strongly consistent reads, by hash key, of items of several tables at once: for each
    ``(model, keys)`` of ``requests``, the items found (missing keys are left out).

    One BatchGetItem holds keys of every table named, 100 keys in all: a route that needs its
    session and the results a request names reads both in one call instead of one call each (a
    round trip saved on every submit and wait). Keys DynamoDB leaves unprocessed (throttling) are
    asked for again after a pause. Each model must have a hash key only and a table of its own in
    the request.
    """
    tables = [cast(Any, model).Meta.table_name for model, _ in requests]
    if len(set(tables)) != len(tables):
        raise ValueError("batch_get: each model of a request needs a table of its own")
    wanted: list[tuple[int, dict[str, Any]]] = []
    for i, (model, keys) in enumerate(requests):
        attr = cast(Any, model)._hash_key_attribute()
        wanted += [(i, {attr.attr_name: {attr.attr_type: attr.serialize(k)}}) for k in dict.fromkeys(keys)]
    found: list[list[Any]] = [[] for _ in requests]
    by_table = {table: i for i, table in enumerate(tables)}
    client: Any = connection().client
    for start in range(0, len(wanted), BATCH_GET_MAX_KEYS):
        pending: dict[str, Any] = {}
        for i, key in wanted[start:start + BATCH_GET_MAX_KEYS]:
            pending.setdefault(tables[i], {"Keys": [], "ConsistentRead": True})["Keys"].append(key)
        attempt = 1
        while pending:
            answer = client.batch_get_item(RequestItems=pending)
            for table, items in answer.get("Responses", {}).items():
                model = requests[by_table[table]][0]
                found[by_table[table]] += [model.from_raw_data(item) for item in items]
            pending = answer.get("UnprocessedKeys") or {}
            if pending:
                time.sleep(clock.backoff(attempt, UNPROCESSED_BACKOFF_SECONDS))
                attempt += 1
    return found


Op = Callable[[TransactWrite], None]


def put_new(item: Model) -> Op:
    """The transaction item that writes ``item``, which must not exist yet (a fresh id; a replayed
    request finds it written and is told so by the cancellation reason).

    What ``tx.save(item, condition=<hash key>.does_not_exist())`` adds, built directly: pynamodb
    makes its condition and key objects anew for every item, a fifth of the submit route's CPU for
    what is the same expression each time. ``tests/unit/test_item_model.py`` holds the two equal on
    generated items of every model.
    """
    model = type(item)

    def op(tx: TransactWrite) -> None:
        tx._put_items.append({  # pynamodb's own list of the transaction's puts (noted in order: _Noted)
            "TableName": model.Meta.table_name,
            "Item": item.serialize(null_check=True),
            "ConditionExpression": "attribute_not_exists (#0)",
            "ExpressionAttributeNames": {"#0": model._hash_keyname},
        })

    return op


class _Noted(list[dict[str, Any]]):
    """A list of one kind of transaction item that also notes each item, with its kind, in the
    transaction's shared order."""

    def __init__(self, kind: str, order: list[tuple[str, dict[str, Any]]]) -> None:
        super().__init__()
        self._kind, self._order = kind, order

    def append(self, item: dict[str, Any]) -> None:
        super().append(item)
        self._order.append((self._kind, item))


class _InOrder(TransactWrite):
    """A pynamodb transaction that sends its items in the order they were added.

    pynamodb sends them grouped by kind (condition checks, deletes, puts, then updates), so the
    position of a cancellation reason was not the position of the op that added its item: a refused
    update in a transaction that also held puts (a submission claiming an existing output, a commit
    writing its subtasks) was charged to another op. :func:`failed_indexes` relies on this order.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._in_order: list[tuple[str, dict[str, Any]]] = []
        # pynamodb appends each item to the list of its kind: these lists also note the order.
        self._condition_check_items = _Noted(TRANSACT_CONDITION_CHECK, self._in_order)
        self._delete_items = _Noted(TRANSACT_DELETE, self._in_order)
        self._put_items = _Noted(TRANSACT_PUT, self._in_order)
        self._update_items = _Noted(TRANSACT_UPDATE, self._in_order)

    def _commit(self) -> Any:
        kwargs = self._connection._get_transact_operation_kwargs(
            client_request_token=self._client_request_token,
            return_consumed_capacity=self._return_consumed_capacity,
            return_item_collection_metrics=self._return_item_collection_metrics,
        )
        kwargs[TRANSACT_ITEMS] = [{kind: item} for kind, item in self._in_order]
        try:
            response = self._connection.dispatch(TRANSACT_WRITE_ITEMS, kwargs)
        except BOTOCORE_EXCEPTIONS as e:  # as pynamodb's own transact_write_items
            raise TransactWriteError("Failed to write transaction items", e) from e
        for model in self._models_for_version_attribute_update:
            model.update_local_version_attribute()
        return response


def _transact_once(ops: Sequence[Op], token: str | None) -> None:
    kwargs: dict[str, Any] = {"connection": connection()}
    if token:
        kwargs["client_request_token"] = token
    with _InOrder(**kwargs) as tx:
        for op in ops:
            op(tx)


def transact(ops: Sequence[Op], *, token: str | None = None) -> None:
    """Run up to 100 write operations atomically.

    A cancellation for a transient reason (see :func:`transiently_cancelled`) is retried with
    backoff, up to :data:`TRANSACTION_ATTEMPTS` in all; each op is called again to build the retry.
    A cancellation by conditions, or any other failure, raises ``TransactWriteError`` at once.
    (A hand-written loop: botocore's retry handlers cannot be told to retry one cancellation
    reason, and the condition is on the answer's reasons, not on an exception type.)
    """
    if len(ops) > TRANSACTION_MAX_ITEMS:
        raise ValueError(f"{len(ops)} items exceed the {TRANSACTION_MAX_ITEMS}-item transaction limit")
    attempt = 1
    while True:
        try:
            _transact_once(ops, token)
            return
        except TransactWriteError as exc:
            if attempt >= TRANSACTION_ATTEMPTS or not transiently_cancelled(exc):
                raise
        time.sleep(clock.backoff(attempt, TRANSACTION_BACKOFF_SECONDS))
        attempt += 1


def transact_idempotent(
    ops: Sequence[Op],
    already_done: Callable[[int], bool],
    *,
    first_chunk: int = TRANSACTION_MAX_ITEMS,
    on_written: Callable[[int], None] | None = None,
) -> None:
    """Write ``ops`` in atomic chunks, in order, tolerating items a previous identical request already
    wrote.

    When a chunk is cancelled by conditions, ``already_done(i)`` (index into ``ops``) says whether the
    refused item is the same write replayed (skip it) or a genuine conflict (it must raise).

    Args:
        first_chunk: items in the first transaction (then up to 100 each): a writer that acts on
            what is written as it goes (``on_written``) gets its first items sooner.
        on_written: called after each chunk with the number of ``ops`` now written (every op
            before that index is stored), before the next chunk is sent.
    """
    pending = list(range(len(ops)))
    size = max(1, min(first_chunk, TRANSACTION_MAX_ITEMS))
    while pending:
        chunk, pending = pending[:size], pending[size:]
        size = TRANSACTION_MAX_ITEMS
        end = chunk[-1] + 1
        while chunk:
            try:
                transact([ops[i] for i in chunk])
                break
            except TransactWriteError as exc:
                refused = [chunk[j] for j in failed_indexes(exc)]
                if not refused:
                    raise
                for i in refused:
                    if not already_done(i):
                        raise
                chunk = [i for i in chunk if i not in set(refused)]
        if on_written is not None:
            on_written(end)

"""Small helpers around pynamodb for conditional writes and chunked transactions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pynamodb.exceptions import PynamoDBException, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from skyloom.core.models import connection

T = TypeVar("T")

#: DynamoDB's limit of items in one TransactWriteItems call.
TRANSACTION_MAX_ITEMS = 100

CONDITIONAL_FAILED = "ConditionalCheckFailedException"


def condition_failed(exc: BaseException) -> bool:
    """True when a write was refused by its condition (the expected, benign outcome of a race)."""
    return isinstance(exc, PynamoDBException) and exc.cause_response_code == CONDITIONAL_FAILED


def failed_indexes(exc: TransactWriteError) -> list[int]:
    """Positions of the items whose condition cancelled a transaction (empty if it failed otherwise)."""
    return [
        i for i, reason in enumerate(exc.cancellation_reasons)
        if reason is not None and reason.code == "ConditionalCheckFailed"
    ]


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


Op = Callable[[TransactWrite], None]


def transact(ops: Sequence[Op], *, token: str | None = None) -> None:
    """Run up to 100 write operations atomically."""
    if len(ops) > TRANSACTION_MAX_ITEMS:
        raise ValueError(f"{len(ops)} items exceed the {TRANSACTION_MAX_ITEMS}-item transaction limit")
    kwargs: dict[str, Any] = {"connection": connection()}
    if token:
        kwargs["client_request_token"] = token
    with TransactWrite(**kwargs) as tx:
        for op in ops:
            op(tx)


def transact_idempotent(
    ops: Sequence[Op],
    already_done: Callable[[int], bool],
) -> None:
    """Write ``ops`` in atomic chunks, tolerating items a previous identical request already wrote.

    When a chunk is cancelled by conditions, ``already_done(i)`` (index into ``ops``) says whether the
    refused item is the same write replayed (skip it) or a genuine conflict (it must raise).
    """
    pending = list(range(len(ops)))
    while pending:
        chunk, pending = pending[:TRANSACTION_MAX_ITEMS], pending[TRANSACTION_MAX_ITEMS:]
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

"""A transaction's items go to DynamoDB in the order its ops added them, so that a cancellation
reason names the op that was refused (pynamodb groups them by kind: puts before updates)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from skyloom.core import ddb
from skyloom.core.models import EdgeModel, ResultModel

if TYPE_CHECKING:
    from skyloom.core.config import Settings


def _put_edge(result_id: str) -> ddb.Op:
    def op(tx: TransactWrite) -> None:
        tx.save(EdgeModel(result_id, "t", session_id="s"), condition=EdgeModel.result_id.does_not_exist())

    return op


def _update_missing_result(result_id: str) -> ddb.Op:
    def op(tx: TransactWrite) -> None:
        tx.update(ResultModel(result_id), actions=[ResultModel.size.set(1)],
                  condition=ResultModel.result_id.exists())

    return op


def test_a_refused_update_among_puts_is_named_by_its_own_position(aws_stack: Settings) -> None:
    # GIVEN a transaction of an update whose condition fails, then two puts that would succeed
    ops = [_update_missing_result("nope"), _put_edge("a"), _put_edge("b")]
    with pytest.raises(TransactWriteError) as caught:
        ddb.transact(ops)
    # THEN the refusal is the first op's (pynamodb would have sent the puts first: position 2)
    assert ddb.failed_indexes(caught.value) == [0]
    # AND nothing was written
    assert list(EdgeModel.scan()) == []


def test_a_replayed_submission_chunk_skips_exactly_the_ops_already_written(aws_stack: Settings) -> None:
    # GIVEN an edge already written, and a chunk that writes it again between two new ones
    ddb.transact([_put_edge("a")])
    asked: list[int] = []

    def already_done(i: int) -> bool:
        asked.append(i)
        return True

    ddb.transact_idempotent([_put_edge("z"), _put_edge("a"), _put_edge("b")], already_done)
    # THEN only the op that was refused (the second) is asked about, and the others are written
    assert asked == [1]
    assert sorted(e.result_id for e in EdgeModel.scan()) == ["a", "b", "z"]

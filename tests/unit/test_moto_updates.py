"""The emulator's plain-update path gives moto's answers: same items, same stream, same errors."""

from __future__ import annotations

from typing import Any

import pytest
from moto.dynamodb.models import DynamoDBBackend

from skyloom.local import moto_updates

ITEM = {"pk": {"S": "t1"}, "status": {"S": "Submitted"}, "due_shard": {"S": "3"}, "n": {"N": "1"},
        "attempts": {"L": [{"M": {"a": {"N": "1"}}}]}, "blob": {"B": "AAE="}}


def _backend() -> DynamoDBBackend:
    backend = DynamoDBBackend("us-east-1", "123456789012")
    backend.create_table(
        "t", schema=[{"AttributeName": "pk", "KeyType": "HASH"}], throughput=None,
        attr=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "due_shard", "AttributeType": "S"}],
        global_indexes=[{"IndexName": "due", "KeySchema": [{"AttributeName": "due_shard", "KeyType": "HASH"}],
                         "Projection": {"ProjectionType": "ALL"}}],
        indexes=None, streams={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        billing_mode="PAY_PER_REQUEST", sse_specification=None, tags=[], deletion_protection_enabled=False,
        warm_throughput=None)
    backend.put_item("t", dict(ITEM))
    return backend


def _apply(update: Any, **call: Any) -> tuple[Any, Any, list[Any]]:
    backend = _backend()
    try:
        update(backend, "t", call.pop("key", {"pk": {"S": "t1"}}), call.pop("expr"), call.pop("names", {}),
               call.pop("values", {}), None, None, call.pop("condition", None), None)
        outcome: Any = None
    except Exception as exc:
        outcome = (type(exc), str(exc))
    table = backend.get_table("t")
    items = sorted((i.to_json() for i in table.all_items()), key=str)
    stream = [(r.record["eventName"], r.record["dynamodb"].get("NewImage"), r.record["dynamodb"].get("OldImage"))
              for r in table.stream_shard.items]
    return outcome, items, stream


CASES = [
    {"expr": "SET #0 = :0, #1 = :1 REMOVE #2", "names": {"#0": "status", "#1": "m", "#2": "due_shard"},
     "values": {":0": {"S": "Completed"}, ":1": {"M": {"x": {"L": [{"N": "2"}]}}}}},
    {"expr": "REMOVE #0 SET #1 = :1", "names": {"#0": "n", "#1": "blob"}, "values": {":1": {"B": "AgM="}}},
    {"expr": "SET #0 = :0", "names": {"#0": "status"}, "values": {":0": {"S": "Completed"}},
     "condition": "#0 = :c", "_extra_values": {":c": {"S": "Submitted"}}},
    {"expr": "SET #0 = :0", "names": {"#0": "status"}, "values": {":0": {"S": "Completed"}},
     "condition": "#0 = :c", "_extra_values": {":c": {"S": "Pending"}}},  # condition fails
    {"expr": "SET #0 = :0", "names": {"#0": "pk"}, "values": {":0": {"S": "other"}}},  # key attribute
    {"expr": "SET #0 = :0", "names": {"#0": "due_shard"}, "values": {":0": {"N": "4"}}},  # index key type
    {"expr": "SET #0 = :0 REMOVE #0", "names": {"#0": "status"}, "values": {":0": {"S": "x"}}},  # overlap
    {"expr": "SET #0 = :1", "names": {"#0": "status"}, "values": {":0": {"S": "x"}}},  # undefined value
    {"expr": "SET #0 = :0", "names": {"#0": "status"}, "values": {":0": {"S": "x"}},
     "key": {"pk": {"S": "absent"}}},  # the update creates the item
    {"expr": "SET #0 = :0", "names": {"#0": "big"}, "values": {":0": {"S": "x" * 410_000}}},  # too large
    {"expr": "SET #0 = #0 + :0", "names": {"#0": "n"}, "values": {":0": {"N": "1"}}},  # not plain
]


@pytest.mark.parametrize("case", CASES, ids=[c["expr"] + str(i) for i, c in enumerate(CASES)])
def test_plain_updates_answer_as_moto_does(case: dict[str, Any]) -> None:
    call = {k: v for k, v in case.items() if not k.startswith("_")}
    call["values"] = {**call.get("values", {}), **case.get("_extra_values", {})}
    fast = _apply(moto_updates.update_item, **dict(call))
    slow = _apply(moto_updates._original_update_item, **dict(call))
    assert fast == slow


def test_plain_actions_reads_only_plain_set_and_remove() -> None:
    assert moto_updates.plain_actions("SET #0 = :0, #1=:1 REMOVE #2, #3") == (
        [("#0", ":0"), ("#1", ":1")], ["#2", "#3"])
    assert moto_updates.plain_actions("remove #2 set #0 = :0") == ([("#0", ":0")], ["#2"])
    for other in ("SET #0 = list_append(#0, :0)", "SET #0.a = :0", "ADD #0 :0", "SET #0 = :0 SET #1 = :1",
                  "SET #0 = :0 DELETE #1 :1", "", "SET", "#0 = :0"):
        assert moto_updates.plain_actions(other) is None, other

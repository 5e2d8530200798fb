"""The results stream's filter criteria: resolve is invoked for what it acts on, and only that.

The patterns (``RESOLVE_STREAM_FILTERS``) are deployed on the event source mapping and applied by
local mode's poller; a record they drop never reaches resolve, so they must pass every record that
``resolution.transition`` acts on.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer
from moto.events.models import EventPattern

from skyloom.core.resources import RESOLVE_STREAM_FILTERS
from skyloom.core.states import ResultStatus
from skyloom.local.streams import StreamPoller, check_pattern, matches
from skyloom_server.functions.resolve.resolution import transition

PATTERNS = [EventPattern.load(json.dumps(p)) for p in RESOLVE_STREAM_FILTERS]
STATUSES = [None, *[s.value for s in ResultStatus]]
DEPENDENTS: list[dict[str, Any] | None] = [None, {"BOOL": True}, {"BOOL": False}, {"NULL": True}]


def image(rid: str, status: str | None, has_dependents: dict[str, Any] | None) -> dict[str, Any]:
    item: dict[str, Any] = {"result_id": {"S": rid}, "session_id": {"S": "s1"}}
    if status is not None:
        item["status"] = {"S": status}
    if has_dependents is not None:
        item["has_dependents"] = has_dependents
    return item


def lambda_record(old: dict[str, Any] | None, new: dict[str, Any] | None, seq: int = 1) -> dict[str, Any]:
    change: dict[str, Any] = {"Keys": {"result_id": (new or old or {}).get("result_id", {"S": "r"})},
                              "SequenceNumber": str(seq), "SizeBytes": 10, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    if new is not None:
        change["NewImage"] = new
    if old is not None:
        change["OldImage"] = old
    name = "REMOVE" if new is None else ("INSERT" if old is None else "MODIFY")
    return {"eventID": str(seq), "eventName": name, "eventSource": "aws:dynamodb", "dynamodb": change}


def passes(record: dict[str, Any]) -> bool:
    """What Lambda's filtering (moto's implementation of its syntax) says; the poller must agree."""
    expected = any(p.matches_event(record) for p in PATTERNS)
    assert any(matches(p, record) for p in RESOLVE_STREAM_FILTERS) is expected, record
    return expected


def plain(img: dict[str, Any] | None) -> dict[str, Any] | None:
    d = TypeDeserializer()
    return None if img is None else {k: d.deserialize(v) for k, v in img.items()}


def test_every_record_resolve_acts_on_passes_the_filters() -> None:
    acted = dropped = 0
    for old_status, new_status, old_deps, new_deps in itertools.product(STATUSES, STATUSES, DEPENDENTS, DEPENDENTS):
        for old_present, new_present in ((False, True), (True, True), (True, False)):
            old = image("r", old_status, old_deps) if old_present else None
            new = image("r", new_status, new_deps) if new_present else None
            record = lambda_record(old, new)
            if transition(plain(old), plain(new)) is not None:
                acted += 1
                assert passes(record), record
            elif not passes(record):
                dropped += 1
    assert acted and dropped


@pytest.mark.parametrize(
    ("status", "has_dependents", "expected"),
    [
        ("Completed", {"BOOL": False}, False),  # the common case: nothing depends on it
        ("Completed", {"BOOL": True}, True),
        ("Completed", None, True),  # unknown: looked up
        ("Completed", {"NULL": True}, True),
        ("Aborted", {"BOOL": False}, True),  # aborts are always looked up
        ("Created", {"BOOL": True}, False),
        (None, None, False),
    ],
)
def test_what_the_filters_pass(status: str | None, has_dependents: dict[str, Any] | None, expected: bool) -> None:
    assert passes(lambda_record(image("r", "Created", {"BOOL": False}), image("r", status, has_dependents))) is expected


@pytest.mark.parametrize("pattern", [
    {"a": {"S": [{"prefix": "x"}]}},
    {"a": {"S": [{"exists": "yes"}]}},
    {"a": []},
    {"a": "x"},
])
def test_the_poller_refuses_rules_it_does_not_implement(pattern: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="filter pattern"):
        check_pattern(pattern)


# ------------------------------------------------------------------------------- the local poller
class FakeStreams:
    """A one-shard stream holding ``records`` (boto3's GetRecords shape); unit tests only."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def describe_stream(self, **_: Any) -> dict[str, Any]:
        return {"StreamDescription": {"Shards": [{"ShardId": "shard-1"}]}}

    def get_shard_iterator(self, **_: Any) -> dict[str, Any]:
        return {"ShardIterator": "it-0"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        start = int(ShardIterator.split("-")[1])
        page = self.records[start:start + Limit]
        return {"Records": page, "NextShardIterator": f"it-{start + len(page)}"}


def boto3_record(rid: str, status: str, has_dependents: bool, seq: int) -> dict[str, Any]:
    new = image(rid, status, {"BOOL": has_dependents})
    return {"eventID": str(seq), "eventName": "MODIFY",
            "dynamodb": {"Keys": {"result_id": {"S": rid}}, "NewImage": new,
                         "OldImage": image(rid, "Created", {"BOOL": has_dependents}),
                         "SequenceNumber": str(seq), "SizeBytes": 10, "StreamViewType": "NEW_AND_OLD_IMAGES"}}


def test_the_poller_drops_filtered_records_and_redelivers_from_a_failed_one() -> None:
    # GIVEN completions without dependents around two that resolve acts on, the second failing once
    stream = FakeStreams([
        boto3_record("plain-1", "Completed", False, 1),
        boto3_record("deps-1", "Completed", True, 2),
        boto3_record("plain-2", "Completed", False, 3),
        boto3_record("abort-1", "Aborted", False, 4),
        boto3_record("plain-3", "Completed", False, 5),
    ])
    delivered: list[list[str]] = []
    failed: set[str] = set()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        ids = [r["dynamodb"]["Keys"]["result_id"]["S"] for r in event["Records"]]
        delivered.append(ids)
        if "abort-1" in ids and "abort-1" not in failed:
            failed.add("abort-1")
            seq = next(r["dynamodb"]["SequenceNumber"] for r in event["Records"]
                       if r["dynamodb"]["Keys"]["result_id"]["S"] == "abort-1")
            return {"batchItemFailures": [{"itemIdentifier": seq}]}
        return {"batchItemFailures": []}

    poller = StreamPoller(stream, "arn:stream", handler, region="us-east-1", filters=RESOLVE_STREAM_FILTERS,
                          backoff=(0.0, 0.0))

    # WHEN it polls until nothing is left
    for _ in range(5):
        poller.poll_once()

    # THEN only the two records resolve acts on were delivered, and the failed one again alone
    assert delivered == [["deps-1", "abort-1"], ["abort-1"]]
    assert poller.filtered == 3 + 1  # plain-3 was dropped twice: with the batch, then alone after it
    # AND a batch the filters empty invokes nothing
    stream.records.append(boto3_record("plain-4", "Completed", False, 6))
    poller.poll_once()
    assert len(delivered) == 2 and poller.invocations == 2


def test_records_as_sent_become_the_same_lambda_records_as_parsed_ones() -> None:
    import base64
    import json as json_module

    import boto3
    from botocore.parsers import JSONParser

    from skyloom.local.streams import RecordsAsSent, lambda_record

    client = boto3.session.Session().client("dynamodbstreams", region_name="us-east-1",
                                            endpoint_url="http://127.0.0.1:9", aws_access_key_id="x",
                                            aws_secret_access_key="x")
    shape = client.meta.service_model.operation_model("GetRecords").output_shape
    image = {"result_id": {"S": "r1"}, "inline": {"B": base64.b64encode(b"\x00\x01").decode()},
             "size": {"N": "2"}, "tags": {"L": [{"S": "a"}, {"M": {"b": {"BOOL": True}}}]}}
    body = json_module.dumps({"Records": [{"eventID": "1", "eventName": "MODIFY", "dynamodb": {
        "Keys": {"result_id": {"S": "r1"}}, "NewImage": image, "OldImage": image, "SequenceNumber": "7",
        "SizeBytes": 40, "StreamViewType": "NEW_AND_OLD_IMAGES", "ApproximateCreationDateTime": 1796591967.0}}],
        "NextShardIterator": "it"}).encode()
    response = {"status_code": 200, "headers": {}, "body": body}
    as_sent = RecordsAsSent().parse(dict(response), shape)["Records"]
    parsed = JSONParser().parse(dict(response), shape)["Records"]
    assert isinstance(parsed[0]["dynamodb"]["NewImage"]["inline"]["B"], bytes)  # botocore's walk
    assert [lambda_record(r, region="r", stream_arn="a") for r in as_sent] == \
        [lambda_record(r, region="r", stream_arn="a") for r in parsed]
    # images read as sent are handed over as they came, not walked again
    assert lambda_record(as_sent[0], region="r", stream_arn="a")["dynamodb"]["NewImage"] is \
        as_sent[0]["dynamodb"]["NewImage"]

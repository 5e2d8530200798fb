"""Local mode's plumbing, with stand-in functions: the events each function receives are the shapes
AWS delivers, identities come from SigV4, stream failures are re-delivered like Lambda does, and the
stack starts, provisions idempotently and stops cleanly.

Real boto3 over HTTP against the moto subprocess; the functions are small recorders defined here,
so these tests exercise local mode alone and take seconds.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from typer.testing import CliRunner

from skyloom.core.config import Settings
from skyloom.local import (
    LOCAL_ACCESS_KEY_ID,
    LOCAL_SECRET_ACCESS_KEY,
    LocalStack,
    discover,
    discovery,
    local_user_arn,
    moto_indexes,
)
from skyloom.local.credentials import IDENTITIES_FILE
from skyloom.local.provision import provision
from skyloom.local.streams import first_failure
from skyloom.runtime.lifeline import PARENT_PID_ENV

REGION = "us-east-1"

#: Calls of this module's ``reset_settings``: local mode's cold-start hook for the stand-ins below.
cold_starts: list[float] = []


def reset_settings() -> None:
    cold_starts.append(time.monotonic())


# ------------------------------------------------------------------------------- stand-in functions
@dataclass
class Recorder:
    """The three stand-in functions, and what they were called with."""

    api_events: list[dict[str, Any]] = field(default_factory=list)
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    sweeps: list[dict[str, Any]] = field(default_factory=list)
    contexts: dict[str, Any] = field(default_factory=dict)
    #: Result ids whose first delivery is reported as a batch item failure.
    fail_once: set[str] = field(default_factory=set)
    #: Result ids whose first delivery makes the handler raise.
    raise_once: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.api_events.append(event)
        self.contexts["submit"] = context
        if event["path"] == "/boom":
            raise RuntimeError("stand-in submit failure")
        if event["path"] == "/binary":
            return {"statusCode": 200, "body": base64.b64encode(b"\x00\xffraw").decode(), "isBase64Encoded": True}
        identity = event["requestContext"]["identity"]
        return {
            "statusCode": 201,
            "headers": {"Content-Type": "application/json", "X-Single": "one"},
            "multiValueHeaders": {"X-Multi": ["a", "b"]},
            "body": json.dumps({"path": event["path"], "caller": identity["userArn"], "body": event["body"]}),
        }

    def resolve(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event["Records"]
        self.contexts["resolve"] = context
        with self.lock:
            self.batches.append(records)
        for record in records:
            rid = record["dynamodb"]["Keys"]["result_id"]["S"]
            if rid in self.raise_once:
                self.raise_once.discard(rid)
                raise RuntimeError("stand-in resolve failure")
        failures = []
        for record in records:
            rid = record["dynamodb"]["Keys"]["result_id"]["S"]
            if rid in self.fail_once:
                self.fail_once.discard(rid)
                failures.append({"itemIdentifier": record["dynamodb"]["SequenceNumber"]})
        return {"batchItemFailures": failures}

    def dispatch(self, event: dict[str, Any], context: Any) -> None:
        self.sweeps.append(event)
        self.contexts["dispatch"] = context
        if len(self.sweeps) % 2 == 0:
            raise RuntimeError("every other sweep fails; the schedule must go on")

    def deliveries(self, rid: str) -> list[list[str]]:
        """Each batch that contained ``rid``, as its list of result ids."""
        with self.lock:
            batches = list(self.batches)
        ids = [[r["dynamodb"]["Keys"]["result_id"]["S"] for r in batch] for batch in batches]
        return [b for b in ids if rid in b]


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def stack(recorder: Recorder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # export_environment=False: the stand-ins read no environment, and a session-wide stack may be up.
    run_dir = tmp_path_factory.mktemp("local-stub")
    # The gateway verifies signatures: the extra callers of these tests are minted identities.
    minted = {k: _secret(k) for k in ("AKIDALICE", "AKIDBOB")}
    (run_dir / IDENTITIES_FILE).write_text(json.dumps({"identities": minted}))
    # Every indexed Query of this emulator is also answered by a full scan; a difference fails it.
    checking = os.environ.get(moto_indexes.CHECK_ENV)
    os.environ[moto_indexes.CHECK_ENV] = "1"
    with LocalStack(
        workers=0,
        settings=Settings(stack="loctest"),
        sweep_interval=0.2,
        run_dir=run_dir,
        submit_handler=recorder.submit,
        resolve_handler=recorder.resolve,
        dispatch_handler=recorder.dispatch,
        export_environment=False,
        resolve_filters=(),  # every record reaches the stand-in: these tests are about delivery
    ) as started:
        if checking is None:
            os.environ.pop(moto_indexes.CHECK_ENV)
        else:
            os.environ[moto_indexes.CHECK_ENV] = checking
        yield started


def ddb(stack: LocalStack) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=stack.aws_endpoint,
        region_name=REGION,
        aws_access_key_id=LOCAL_ACCESS_KEY_ID,
        aws_secret_access_key=LOCAL_SECRET_ACCESS_KEY,
    )


def put_result(stack: LocalStack, rid: str, **extra: Any) -> None:
    item = {"result_id": {"S": rid}, "session_id": {"S": "s1"}, **extra}
    ddb(stack).put_item(TableName=stack.settings.table_name("results"), Item=item)


# ------------------------------------------------------------------------------------------ http
@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def _secret(key: str) -> str:
    return LOCAL_SECRET_ACCESS_KEY if key == LOCAL_ACCESS_KEY_ID else "secret-" + key


def send(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    sign_as: str | None = LOCAL_ACCESS_KEY_ID,
    service: str = "execute-api",
    region: str = REGION,
) -> Reply:
    """One HTTP request, SigV4-signed as the SDK signs it unless ``sign_as`` is None."""
    request = AWSRequest(method=method, url=url, data=body or b"", headers=dict(headers or {}))
    if sign_as is not None:
        SigV4Auth(Credentials(sign_as, _secret(sign_as)), service, region).add_auth(request)
    prepared = request.prepare()
    raw = urllib.request.Request(prepared.url, data=body, method=method, headers=dict(prepared.headers.items()))
    try:
        with urllib.request.urlopen(raw, timeout=10) as response:
            return Reply(response.status, list(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, list(error.headers.items()), error.read())


# ------------------------------------------------------------------------------------- gateway
def test_signed_request_becomes_a_rest_api_proxy_event(stack: LocalStack, recorder: Recorder) -> None:
    # GIVEN a SigV4-signed POST with a repeated header and a repeated query parameter
    url = f"{stack.endpoint}/sessions/abc/tasks?mode=all&tag=x&tag=y"
    body = json.dumps({"hello": "wörld"}).encode()

    # WHEN it reaches the gateway
    reply = send("POST", url, body, {"Content-Type": "application/json", "X-Trace": "t1"}, sign_as="AKIDALICE")

    # THEN the function got API Gateway's proxy event with the caller's IAM identity
    assert reply.status == 201, reply.body
    event = recorder.api_events[-1]
    assert event["httpMethod"] == "POST"
    assert event["path"] == "/sessions/abc/tasks"
    assert event["resource"] == "/{proxy+}"
    assert event["pathParameters"] == {"proxy": "sessions/abc/tasks"}
    assert event["queryStringParameters"] == {"mode": "all", "tag": "y"}
    assert event["multiValueQueryStringParameters"] == {"mode": ["all"], "tag": ["x", "y"]}
    assert event["headers"]["X-Trace"] == "t1"
    assert event["multiValueHeaders"]["X-Trace"] == ["t1"]
    assert event["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDALICE/")
    assert json.loads(event["body"]) == {"hello": "wörld"}
    assert event["isBase64Encoded"] is False
    assert event["stageVariables"] is None
    ctx = event["requestContext"]
    assert ctx["stage"] == "local"
    assert ctx["httpMethod"] == "POST"
    assert ctx["resourcePath"] == "/{proxy+}"
    assert ctx["path"] == "/local/sessions/abc/tasks"
    assert ctx["requestId"]
    identity = ctx["identity"]
    assert identity["accessKey"] == "AKIDALICE"
    assert identity["userArn"] == identity["caller"] == "arn:aws:iam::000000000000:user/AKIDALICE"
    assert identity["userArn"] == local_user_arn("AKIDALICE")
    assert identity["user"] == "AKIDALICE"
    assert identity["sourceIp"] == "127.0.0.1"
    # ... and a Lambda context naming the function, with a deadline
    context = recorder.contexts["submit"]
    assert context.function_name == "loctest-submit"
    assert context.aws_request_id == ctx["requestId"]
    assert context.invoked_function_arn == "arn:aws:lambda:us-east-1:000000000000:function:loctest-submit"
    assert 0 < context.get_remaining_time_in_millis() <= 29_000
    assert isinstance(context.memory_limit_in_mb, int)
    # ... and the proxy response became the HTTP response
    assert json.loads(reply.body) == {
        "path": "/sessions/abc/tasks",
        "caller": local_user_arn("AKIDALICE"),
        "body": body.decode(),
    }
    assert reply.header_values("X-Multi") == ["a", "b"]
    assert reply.header_values("X-Single") == ["one"]
    assert reply.header_values("Content-Type") == ["application/json"]


def test_two_callers_get_two_identities(stack: LocalStack, recorder: Recorder) -> None:
    # A local stack has no real region: a client signing for another one is still served.
    for key, region in (("AKIDALICE", REGION), ("AKIDBOB", "eu-west-3")):
        reply = send("GET", f"{stack.endpoint}/sessions", sign_as=key, region=region)
        assert json.loads(reply.body)["caller"] == local_user_arn(key)
    assert recorder.api_events[-1]["queryStringParameters"] is None
    assert recorder.api_events[-1]["body"] is None
    assert recorder.api_events[-1]["httpMethod"] == "GET"


def test_unsigned_request_is_refused_before_the_function(stack: LocalStack, recorder: Recorder) -> None:
    before = len(recorder.api_events)
    reply = send("GET", f"{stack.endpoint}/sessions", sign_as=None)
    assert reply.status == 403
    assert json.loads(reply.body) == {"message": "Missing Authentication Token"}
    assert reply.header_values("x-amzn-ErrorType") == ["MissingAuthenticationTokenException"]
    assert len(recorder.api_events) == before


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer abc"},
        {"Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/execute-api/aws4_request"},
    ],
)
def test_malformed_authorization_is_refused(stack: LocalStack, recorder: Recorder, headers: dict[str, str]) -> None:
    before = len(recorder.api_events)
    reply = send("GET", f"{stack.endpoint}/sessions", headers=headers, sign_as=None)
    assert reply.status == 403
    assert "message" in json.loads(reply.body)
    assert len(recorder.api_events) == before


def test_signature_for_another_service_is_refused(stack: LocalStack, recorder: Recorder) -> None:
    before = len(recorder.api_events)
    reply = send("GET", f"{stack.endpoint}/sessions", service="s3")
    assert reply.status == 403
    assert "execute-api" in json.loads(reply.body)["message"]
    assert len(recorder.api_events) == before


def test_function_error_is_a_502_like_api_gateway(stack: LocalStack) -> None:
    reply = send("GET", f"{stack.endpoint}/boom")
    assert reply.status == 502
    assert json.loads(reply.body) == {"message": "Internal server error"}


def test_base64_response_is_decoded(stack: LocalStack) -> None:
    reply = send("GET", f"{stack.endpoint}/binary")
    assert reply.status == 200
    assert reply.body == b"\x00\xffraw"


def test_non_utf8_request_body_arrives_base64(stack: LocalStack, recorder: Recorder) -> None:
    send("PUT", f"{stack.endpoint}/blob", b"\xff\xfe\x00", {"Content-Type": "application/octet-stream"})
    event = recorder.api_events[-1]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xfe\x00"


# ------------------------------------------------------------------------------------- streams
def test_results_stream_reaches_resolve_in_lambda_shape(stack: LocalStack, recorder: Recorder) -> None:
    # GIVEN a result written, then updated, through the real DynamoDB API
    put_result(stack, "shape-1", status={"S": "Created"}, inline={"B": b"\x00\x01bin"}, size={"N": "3"})
    ddb(stack).update_item(
        TableName=stack.settings.table_name("results"),
        Key={"result_id": {"S": "shape-1"}},
        UpdateExpression="SET #s = :c",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":c": {"S": "Completed"}},
    )

    # THEN resolve receives both changes as Lambda's DynamoDB stream event records
    deliveries = wait_for(lambda: recorder.deliveries("shape-1") if len(_records("shape-1", recorder)) >= 2 else None)
    assert deliveries
    insert, modify = _records("shape-1", recorder)[:2]
    assert set(insert) == {
        "eventID",
        "eventName",
        "eventVersion",
        "eventSource",
        "awsRegion",
        "dynamodb",
        "eventSourceARN",
    }
    assert insert["eventName"] == "INSERT"
    assert insert["eventSource"] == "aws:dynamodb"
    assert insert["eventVersion"] == "1.1"
    assert insert["awsRegion"] == REGION
    assert insert["eventSourceARN"] == stack.provisioned.results_stream_arn
    change = insert["dynamodb"]
    assert change["Keys"] == {"result_id": {"S": "shape-1"}}
    assert change["NewImage"]["inline"] == {"B": base64.b64encode(b"\x00\x01bin").decode()}
    assert change["NewImage"]["size"] == {"N": "3"}
    assert "OldImage" not in change
    assert change["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert isinstance(change["ApproximateCreationDateTime"], int)
    assert abs(change["ApproximateCreationDateTime"] - time.time()) < 600
    assert isinstance(change["SizeBytes"], int)
    assert change["SequenceNumber"].isdigit()
    assert modify["eventName"] == "MODIFY"
    assert modify["dynamodb"]["OldImage"]["status"] == {"S": "Created"}
    assert modify["dynamodb"]["NewImage"]["status"] == {"S": "Completed"}
    assert int(modify["dynamodb"]["SequenceNumber"]) > int(change["SequenceNumber"])
    # The whole event must survive JSON, as Lambda's does.
    json.dumps({"Records": [insert, modify]})
    assert recorder.contexts["resolve"].function_name == "loctest-resolve"


def _records(rid: str, recorder: Recorder) -> list[dict[str, Any]]:
    with recorder.lock:
        batches = list(recorder.batches)
    return [r for b in batches for r in b if r["dynamodb"]["Keys"]["result_id"]["S"] == rid]


def test_partial_batch_failure_redelivers_from_the_failed_record(stack: LocalStack, recorder: Recorder) -> None:
    # GIVEN a resolve function that reports "pb-2" as failed the first time it sees it
    recorder.fail_once.add("pb-2")

    # WHEN three results are written in order
    for rid in ("pb-1", "pb-2", "pb-3"):
        put_result(stack, rid)

    # THEN pb-2 is delivered again, followed by everything after it, and pb-1 is not
    wait_for(lambda: len(recorder.deliveries("pb-2")) >= 2 and len(recorder.deliveries("pb-3")) >= 1, what="redelivery")
    time.sleep(0.3)  # nothing else may arrive
    assert len(recorder.deliveries("pb-1")) == 1
    assert len(recorder.deliveries("pb-2")) == 2
    retry = recorder.deliveries("pb-2")[1]
    assert retry[0] == "pb-2"
    first = recorder.deliveries("pb-2")[0]
    if "pb-3" in first:  # pb-3 came in the failed batch: it is re-delivered with pb-2
        assert retry[:2] == ["pb-2", "pb-3"]
    assert "pb-1" not in retry


def test_handler_exception_redelivers_the_whole_batch(stack: LocalStack, recorder: Recorder) -> None:
    recorder.raise_once.add("ex-1")
    put_result(stack, "ex-1")
    deliveries = wait_for(lambda: recorder.deliveries("ex-1") if len(recorder.deliveries("ex-1")) >= 2 else None)
    assert deliveries[0] == deliveries[1]  # the same records, in the same order


def test_stream_order_is_kept_per_shard(stack: LocalStack, recorder: Recorder) -> None:
    ids = [f"ord-{i:02d}" for i in range(15)]
    for rid in ids:
        put_result(stack, rid)
    wait_for(lambda: recorder.deliveries(ids[-1]), what="last record")
    seen = [r for b in _batches(recorder) for r in b if r.startswith("ord-")]
    assert seen == ids


def _batches(recorder: Recorder) -> list[list[str]]:
    with recorder.lock:
        return [[r["dynamodb"]["Keys"]["result_id"]["S"] for r in b] for b in recorder.batches]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (None, None),
        ({"batchItemFailures": []}, None),
        ({"batchItemFailures": [{"itemIdentifier": "3"}, {"itemIdentifier": "2"}]}, 1),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, 0),
        ({"batchItemFailures": [{"itemIdentifier": "99"}]}, 0),
        ({"batchItemFailures": [{}]}, 0),
    ],
)
def test_partial_batch_response_is_read_like_lambda(response: Any, expected: int | None) -> None:
    batch = [{"dynamodb": {"SequenceNumber": str(n)}} for n in (1, 2, 3)]
    assert first_failure(response, batch) == expected


# ----------------------------------------------------------------------------------- scheduler
def test_dispatch_is_called_on_schedule_with_eventbridge_events(stack: LocalStack, recorder: Recorder) -> None:
    # Every other sweep raises (see Recorder.dispatch): the schedule must keep going regardless.
    start = len(recorder.sweeps)
    wait_for(lambda: len(recorder.sweeps) >= start + 3, what="three sweeps")
    event = recorder.sweeps[-1]
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["version"] == "0"
    assert event["account"] == "000000000000"
    assert event["region"] == REGION
    assert event["resources"] == ["arn:aws:events:us-east-1:000000000000:rule/loctest-sweep"]
    assert event["detail"] == {}
    assert event["time"].endswith("Z")
    assert stack.scheduler.failures >= 1
    assert recorder.contexts["dispatch"].function_name == "loctest-dispatch"


# ------------------------------------------------------------------------------ emulator fidelity
def test_a_cancelled_transaction_writes_nothing_and_leaves_stream_readers_reading(stack: LocalStack) -> None:
    """AWS: a cancelled TransactWriteItems changes no item and emits no stream record, and shard
    iterators are unaffected. moto's own undo swapped in a copy of the table, whose stream no
    iterator handed out before could see: the resolve poller went deaf after the first conflict."""
    client = ddb(stack)
    streams = boto3.client("dynamodbstreams", endpoint_url=stack.aws_endpoint, region_name=REGION,
                           aws_access_key_id=LOCAL_ACCESS_KEY_ID, aws_secret_access_key=LOCAL_SECRET_ACCESS_KEY)
    name = "fidelity-transactions"
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    arn = client.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard,
                                          ShardIteratorType="LATEST")["ShardIterator"]
    client.put_item(TableName=name, Item={"k": {"S": "a"}, "v": {"N": "1"}})

    cancelled = [
        {"Update": {"TableName": name, "Key": {"k": {"S": "a"}}, "UpdateExpression": "SET v = :two",
                    "ExpressionAttributeValues": {":two": {"N": "2"}}}},
        {"Put": {"TableName": name, "Item": {"k": {"S": "b"}}}},
        {"ConditionCheck": {"TableName": name, "Key": {"k": {"S": "z"}},  # fails: no such item
                            "ConditionExpression": "attribute_exists(k)"}},
    ]
    with pytest.raises(client.exceptions.TransactionCanceledException):
        client.transact_write_items(TransactItems=cancelled)
    client.put_item(TableName=name, Item={"k": {"S": "c"}})

    assert client.get_item(TableName=name, Key={"k": {"S": "a"}}, ConsistentRead=True)["Item"]["v"] == {"N": "1"}
    assert "Item" not in client.get_item(TableName=name, Key={"k": {"S": "b"}}, ConsistentRead=True)
    records = streams.get_records(ShardIterator=iterator)["Records"]
    assert [(r["eventName"], r["dynamodb"]["Keys"]["k"]["S"]) for r in records] == [("INSERT", "a"),
                                                                                     ("INSERT", "c")]
    client.delete_table(TableName=name)


def test_indexed_queries_answer_what_a_scan_would_through_every_kind_of_write(stack: LocalStack) -> None:
    """The emulator answers a Query from per-hash-key indexes (skyloom.local.moto_indexes); this
    emulator runs in check mode, where each such Query is also answered by moto's full scan and a
    difference is a server error. Random writes of every kind, cancelled transactions included,
    each followed by queries; then every answer is compared with a scan client-side too."""
    client = ddb(stack)
    rng = random.Random(20261202)
    name = "fidelity-indexes"
    n = {"AttributeType": "N"}
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, **t} for a, t in
                              (("k", {"AttributeType": "S"}), ("r", n), ("s", {"AttributeType": "S"}), ("d", n))],
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}, {"AttributeName": "r", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {"IndexName": "by_s", "KeySchema": [{"AttributeName": "s", "KeyType": "HASH"},
                                                {"AttributeName": "r", "KeyType": "RANGE"}],
             "Projection": {"ProjectionType": "ALL"}},
            {"IndexName": "by_d", "KeySchema": [{"AttributeName": "d", "KeyType": "HASH"}],
             "Projection": {"ProjectionType": "KEYS_ONLY"}},
        ],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    keys, ss, ds = ["a", "b", "c", "d"], ["s1", "s2", "s3"], ["1", "2", "2.0", "3"]

    def key() -> dict[str, Any]:
        return {"k": {"S": rng.choice(keys)}, "r": {"N": str(rng.randrange(4))}}

    def item() -> dict[str, Any]:
        it = key()
        if rng.random() < 0.7:
            it["s"] = {"S": rng.choice(ss)}
        if rng.random() < 0.7:
            it["d"] = {"N": rng.choice(ds)}
        return it

    def update() -> dict[str, Any]:
        if rng.random() < 0.5:
            return {"Key": key(), "UpdateExpression": "SET s = :s, d = :d",
                    "ExpressionAttributeValues": {":s": {"S": rng.choice(ss)}, ":d": {"N": rng.choice(ds)}}}
        return {"Key": key(), "UpdateExpression": rng.choice(["REMOVE s", "REMOVE d", "REMOVE s, d"])}

    def write() -> None:
        kind = rng.choice(["put", "update", "delete", "failed", "transact", "cancelled", "batch"])
        if kind == "put":
            client.put_item(TableName=name, Item=item())
        elif kind == "update":
            client.update_item(TableName=name, **update())
        elif kind == "delete":
            client.delete_item(TableName=name, Key=key())
        elif kind == "failed":
            with pytest.raises(client.exceptions.ConditionalCheckFailedException):
                client.update_item(TableName=name, ConditionExpression="attribute_exists(nothing)", **update())
        elif kind == "batch":
            chosen = {json.dumps(it["k"]) + json.dumps(it["r"]): it for it in (item() for _ in range(4))}
            client.batch_write_item(RequestItems={name: [{"PutRequest": {"Item": it}} for it in chosen.values()]})
        else:
            ops: dict[str, dict[str, Any]] = {}
            for _ in range(3):
                op = rng.choice(["Put", "Update", "Delete"])
                body = {"Item": item()} if op == "Put" else update() if op == "Update" else {"Key": key()}
                k = body.get("Item", body.get("Key"))
                ops[json.dumps(k["k"]) + json.dumps(k["r"])] = {op: {"TableName": name, **body}}
            items = list(ops.values())
            if kind == "cancelled":
                items.append({"ConditionCheck": {"TableName": name, "Key": {"k": {"S": "zz"}, "r": {"N": "9"}},
                                                 "ConditionExpression": "attribute_exists(k)"}})
                with pytest.raises(client.exceptions.TransactionCanceledException):
                    client.transact_write_items(TransactItems=items)
            else:
                client.transact_write_items(TransactItems=items)

    def query_all(**kw: Any) -> list[dict[str, Any]]:
        pages = client.get_paginator("query").paginate(TableName=name, **kw)
        return [it for page in pages for it in page["Items"]]

    def queries() -> dict[str, list[dict[str, Any]]]:
        out = {f"k={k}": query_all(KeyConditionExpression="k = :v", ExpressionAttributeValues={":v": {"S": k}})
               for k in keys}
        for k in keys:
            out[f"k={k},r"] = query_all(KeyConditionExpression="k = :v AND r BETWEEN :a AND :b", Limit=1,
                                        ExpressionAttributeValues={":v": {"S": k}, ":a": {"N": "1"}, ":b": {"N": "2"}})
        for s in ss:
            out[f"s={s}"] = query_all(IndexName="by_s", KeyConditionExpression="s = :v AND r >= :one",
                                      ExpressionAttributeValues={":v": {"S": s}, ":one": {"N": "1"}}, Limit=2)
        for d in ("1", "2", "3"):
            out[f"d={d}"] = query_all(IndexName="by_d", KeyConditionExpression="d = :v",
                                      ExpressionAttributeValues={":v": {"N": d}})
        return out

    for _ in range(300):
        write()
        if rng.random() < 0.3:
            queries()  # a mismatch is a 500 from the emulator, raised here by boto3
    table = client.scan(TableName=name, ConsistentRead=True)["Items"]

    def key_of(it: dict[str, Any]) -> tuple[str, int]:
        return it["k"]["S"], int(it["r"]["N"])

    answers = queries()
    for k in keys:
        assert sorted(map(key_of, answers[f"k={k}"])) == sorted(key_of(it) for it in table if it["k"]["S"] == k)
        assert sorted(map(key_of, answers[f"k={k},r"])) == sorted(
            key_of(it) for it in table if it["k"]["S"] == k and 1 <= int(it["r"]["N"]) <= 2)
    for s in ss:
        want = [it for it in table if it.get("s", {}).get("S") == s and int(it["r"]["N"]) >= 1]
        assert sorted(map(key_of, answers[f"s={s}"])) == sorted(map(key_of, want))
    for d in ("1", "2", "3"):
        want = [it for it in table if "d" in it and float(it["d"]["N"]) == float(d)]
        assert sorted(map(key_of, answers[f"d={d}"])) == sorted(map(key_of, want))
    assert any(answers.values())
    client.delete_table(TableName=name)


# -------------------------------------------------------------------------------- provisioning
def test_provisioning_created_everything_and_is_idempotent(stack: LocalStack) -> None:
    first = stack.provisioned
    again = provision(stack.settings)
    assert again == first

    client = ddb(stack)
    results = client.describe_table(TableName="loctest-results")["Table"]
    assert results["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert results["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert sorted(ix["IndexName"] for ix in results["GlobalSecondaryIndexes"]) == ["by_change", "by_session"]
    tasks = client.describe_table(TableName="loctest-tasks")["Table"]
    indexes = sorted(ix["IndexName"] for ix in tasks["GlobalSecondaryIndexes"])
    assert indexes == ["by_change", "by_due", "by_parent", "by_session"]
    ttl = client.describe_time_to_live(TableName="loctest-tasks")["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}

    sqs = boto3.client("sqs", endpoint_url=stack.sqs_endpoint, region_name=REGION)
    assert sorted(first.queues) == [("default", 0), ("default", 1), ("default", 2)]
    attrs = sqs.get_queue_attributes(QueueUrl=first.queues[("default", 1)], AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == str(stack.settings.visibility_timeout)
    redrive = json.loads(attrs["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == 5
    assert redrive["deadLetterTargetArn"].endswith(":loctest-default-p1-dlq")
    assert "FifoQueue" not in attrs

    s3 = boto3.client("s3", endpoint_url=stack.aws_endpoint, region_name=REGION)
    assert stack.settings.bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_provisioning_converges_when_settings_change(stack: LocalStack) -> None:
    changed = replace(stack.settings, visibility_timeout=45)
    provisioned = provision(changed)
    sqs = boto3.client("sqs", endpoint_url=stack.sqs_endpoint, region_name=REGION)
    url = provisioned.queues[("default", 0)]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "45"
    provision(stack.settings)  # and back


# ------------------------------------------------------------------------------ lifecycle, workers
WORKER_SCRIPT = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: (print('draining', flush=True), sys.exit(0)))\n"
    "print(os.environ['SKYLOOM_WORKER_ID'], os.environ['SKYLOOM_AWS_ENDPOINT'], os.environ['SKYLOOM_STACK'],\n"
    "      os.environ['AWS_ACCESS_KEY_ID'], os.environ.get('EXTRA'), flush=True)\n"
    "time.sleep(120)\n"
)


def _port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def test_workers_are_supervised_and_stop_is_clean(tmp_path: Path, recorder: Recorder) -> None:
    saved = dict(os.environ)
    stack = LocalStack(
        workers=2,
        settings=Settings(stack="lifecycle"),
        run_dir=tmp_path,
        submit_handler=recorder.submit,
        resolve_handler=recorder.resolve,
        dispatch_handler=recorder.dispatch,
        worker_env={"EXTRA": "yes"},
        worker_command=[sys.executable, "-c", WORKER_SCRIPT],
        export_environment=False,
    )
    stack.start()
    try:
        pool = stack.workers
        endpoint, aws_endpoint, sqs_endpoint = stack.endpoint, stack.aws_endpoint, stack.sqs_endpoint
        emulator_pids = [e.pid for e in (stack._emulator, stack._queue_emulator) if e is not None]
        assert sqs_endpoint != aws_endpoint  # the queues have an emulator of their own
        # Workers see the stack's settings, dummy credentials and extra env.
        log = wait_for(lambda: pool.log_path(0).read_text().strip(), what="worker output")
        assert log.split() == ["local-0-0", aws_endpoint, "lifecycle", LOCAL_ACCESS_KEY_ID, "yes"]

        # SIGKILL: gone at once, without running its handler
        pool.kill(0)
        assert pool.wait(0, 5) == -signal.SIGKILL
        assert not pool.alive(0)
        new_pid = pool.restart(0)
        assert pool.alive(0) and pool.pid(0) == new_pid
        wait_for(lambda: "local-0-1" in pool.log_path(0).read_text(), what="restarted worker output")

        # SIGTERM: its drain handler runs (installed before it prints: wait for the output first)
        wait_for(lambda: pool.log_path(1).read_text().strip(), what="second worker output")
        pool.terminate(1)
        assert pool.wait(1, 5) == 0
        assert "draining" in pool.log_path(1).read_text()
        pool.restart(1)
    finally:
        started = time.monotonic()
        stack.stop()
        elapsed = time.monotonic() - started
    assert elapsed < 10
    assert not _port_open(endpoint)
    assert not _port_open(aws_endpoint)
    assert not _port_open(sqs_endpoint)
    assert len(emulator_pids) == 2
    for pid in emulator_pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert all(pid is None for pid in pool.pids)
    assert dict(os.environ) == saved
    stack.stop()  # twice is harmless


def test_exported_environment_is_restored(tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default mode: settings and credentials in os.environ while up, the old values after."""
    monkeypatch.setenv("AWS_PROFILE", "someone-real")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREAL")
    monkeypatch.delenv("SKYLOOM_ENDPOINT", raising=False)
    saved = dict(os.environ)
    stack = LocalStack(
        workers=0,
        settings=Settings(stack="exported"),
        run_dir=tmp_path,
        submit_handler=recorder.submit,
        resolve_handler=recorder.resolve,
        dispatch_handler=recorder.dispatch,
    )
    from skyloom.local import stack as stack_module

    if stack_module._exporting is not None:
        pytest.skip("another local stack exports its environment in this process")
    before = len(cold_starts)
    with stack:
        # Each of the three stand-ins lives in this module, whose cold-start hook ran for each.
        assert len(cold_starts) == before + 3
        assert Settings.from_env() == stack.settings
        assert os.environ["SKYLOOM_AWS_ENDPOINT"] == stack.aws_endpoint
        assert os.environ["SKYLOOM_SQS_ENDPOINT"] == stack.sqs_endpoint != stack.aws_endpoint
        assert os.environ["SKYLOOM_ENDPOINT"] == stack.endpoint
        assert os.environ["AWS_ACCESS_KEY_ID"] == LOCAL_ACCESS_KEY_ID
        assert "AWS_PROFILE" not in os.environ
        with pytest.raises(RuntimeError, match="another LocalStack"):
            LocalStack(
                workers=0,
                run_dir=tmp_path / "second",
                submit_handler=recorder.submit,
                resolve_handler=recorder.resolve,
                dispatch_handler=recorder.dispatch,
            ).start()
    assert dict(os.environ) == saved


def test_failed_start_tears_down(tmp_path: Path) -> None:
    stack = LocalStack(
        workers=0,
        run_dir=tmp_path,
        submit_handler="skyloom_no_such_module.handler:handler",
        export_environment=False,
    )
    with pytest.raises(ImportError):
        stack.start()
    with pytest.raises(RuntimeError):
        _ = stack.aws_endpoint  # the emulator was stopped again


# ------------------------------------------------------------------------------------ discovery
def test_discover_finds_a_live_published_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYLOOM_HOME", str(tmp_path))
    assert discover() is None
    state = discovery.LocalState(
        endpoint="http://127.0.0.1:1234",
        aws_endpoint="http://127.0.0.1:5678",
        region=REGION,
        stack="skyloom",
        pid=os.getpid(),
        run_dir=str(tmp_path),
    )
    discovery.publish(state)
    assert discover() == "http://127.0.0.1:1234"
    discovery.unpublish(pid=os.getpid() + 1)  # not ours: kept
    assert discover() == "http://127.0.0.1:1234"
    discovery.unpublish()
    assert discover() is None
    # A stack whose process is gone is not discovered.
    discovery.publish(discovery.LocalState(**{**state.__dict__, "pid": 2**22 + 12345}))
    assert discover() is None


# ------------------------------------------------------------------------------------------ cli
def test_cli_run_runs_the_command_against_the_stack(
    tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skyloom.cli import app
    from skyloom.cli import local as cli_local

    def stub_stack(**kwargs: Any) -> LocalStack:
        return LocalStack(
            **kwargs,
            submit_handler=recorder.submit,
            resolve_handler=recorder.resolve,
            dispatch_handler=recorder.dispatch,
            export_environment=False,
        )

    monkeypatch.setattr(cli_local, "LocalStack", stub_stack)
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")  # restored by monkeypatch after `run` sets defaults
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    script = (
        "import os, sys, urllib.request\n"
        "ep = os.environ['SKYLOOM_ENDPOINT']\n"
        "assert os.environ['AWS_ACCESS_KEY_ID'] == 'skyloom-local', os.environ['AWS_ACCESS_KEY_ID']\n"
        "assert os.environ['AWS_SECRET_ACCESS_KEY'] == 'skyloom-local-secret'\n"
        "assert os.environ['AWS_REGION'] == 'us-east-1'\n"
        "try:\n"
        "    urllib.request.urlopen(ep + '/sessions')\n"
        "except urllib.error.HTTPError as e:\n"
        "    sys.exit(e.code // 100)\n"  # 403 unsigned -> 4
    )
    result = CliRunner().invoke(
        app, ["local", "run", "--workers", "0", "--run-dir", str(tmp_path), "--", sys.executable, "-c", script]
    )
    assert result.exit_code == 4, result.output


def test_cli_run_reports_a_missing_command(tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    from skyloom.cli import app
    from skyloom.cli import local as cli_local

    monkeypatch.setattr(
        cli_local,
        "LocalStack",
        lambda **kw: LocalStack(
            **kw,
            submit_handler=recorder.submit,
            resolve_handler=recorder.resolve,
            dispatch_handler=recorder.dispatch,
            export_environment=False,
        ),
    )
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    result = CliRunner().invoke(
        app, ["local", "run", "--workers", "0", "--run-dir", str(tmp_path), "--", "skyloom-no-such-command-xyz"]
    )
    assert result.exit_code == 127


def _started_by(pid: int) -> list[int]:
    """Processes whose environment names ``pid`` as the stack that started them (Linux /proc)."""
    marker = f"{PARENT_PID_ENV}={pid}".encode() + b"\0"
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue  # gone meanwhile, or not ours
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whoever adopted it, maybe never)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_emulator_and_agents_stop_when_their_stack_is_killed(tmp_path: Path) -> None:
    """SIGKILL of ``skyloom local up``: nothing of it may keep running (each watches its PID)."""
    env = {**os.environ, "SKYLOOM_HOME": str(tmp_path / "home")}
    env.pop("SKYLOOM_ENDPOINT", None)
    cli = Path(sys.executable).with_name("skyloom")
    up = subprocess.Popen([str(cli), "local", "up", "--workers", "2", "--run-dir", str(tmp_path / "run")],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(_started_by(up.pid)) >= 3 or up.poll() is not None, timeout=60,
                 what="the emulator and two agents")
        orphans = _started_by(up.pid)
        assert up.poll() is None and len(orphans) >= 3
    finally:
        up.kill()
        up.wait()
    wait_for(lambda: not any(_running(p) for p in orphans), timeout=60, what="every process to stop")


def test_cli_up_publishes_serves_and_stops_on_sigterm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``skyloom local up`` as a user runs it, with the real functions and no workers."""
    env = {**os.environ, "SKYLOOM_HOME": str(tmp_path / "home")}
    env.pop("SKYLOOM_ENDPOINT", None)
    monkeypatch.setenv("SKYLOOM_HOME", env["SKYLOOM_HOME"])
    cli = Path(sys.executable).with_name("skyloom")
    command = [str(cli), "local", "up", "--workers", "0", "--run-dir", str(tmp_path / "run"), "--sweep-interval", "0.2"]
    up = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    functions_log = tmp_path / "run" / "functions.log"
    try:
        state_file = tmp_path / "home" / "local.json"
        starting_file = tmp_path / "home" / "starting.json"
        # While it starts, it says so; a client asking then waits for this stack instead of starting one.
        wait_for(lambda: starting_file.exists() or state_file.exists() or up.poll() is not None, timeout=60,
                 what="starting marker")
        found = discover(wait=60)
        assert up.poll() is None, up.stderr.read() if up.stderr else ""
        state = json.loads(state_file.read_text())
        assert state["pid"] == up.pid and found == state["endpoint"] and state["kind"] == "cli"
        assert not starting_file.exists()
        # The published endpoint serves the real submit function to a signed caller.
        reply = send("GET", f"{state['endpoint']}/sessions/does-not-exist")
        assert reply.status == 404, reply.body
        assert send("GET", f"{state['endpoint']}/sessions", sign_as=None).status == 403
        # The sweeper's metrics (EMF JSON) go to the run directory, not the console.
        wait_for(lambda: '"SweeperRuns"' in functions_log.read_text(), timeout=30, what="a sweep's metrics")
    finally:
        up.send_signal(signal.SIGTERM)
        out, err = up.communicate(timeout=30)
    assert up.returncode == 0, err
    assert f"export SKYLOOM_ENDPOINT={state['endpoint']}" in out
    # The console is for people: no JSON, no library chatter, no warnings.
    assert not [line for line in out.splitlines() + err.splitlines() if line.lstrip().startswith("{")], out + err
    assert "botocore" not in err and "Warning" not in err, err
    assert "Found credentials" in (tmp_path / "run" / "stack.log").read_text()
    assert not state_file.exists()
    assert not _port_open(state["endpoint"])
    assert not _port_open(state["aws_endpoint"])
    assert not _port_open(state["sqs_endpoint"])

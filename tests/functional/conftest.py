"""Functional-test fixtures: the submit Lambda in-process, on moto, fed real API Gateway events.

- ``aws_stack``: moto (``mock_aws``) running, every table, queue and bucket of
  :mod:`skyloom.core.resources` created by :func:`skyloom.local.provision.provision` (what local
  mode runs), the pynamodb models bound; yields the ``Settings``.
- ``api``: an :class:`ApiClient` whose ``call(method, path, body, identity=...)`` builds an API
  Gateway REST proxy event (IAM identity in ``requestContext.identity.userArn``), invokes
  ``skyloom_server.functions.submit.handler.handler`` and returns an :class:`ApiResponse`.
- ``db``: counts items per table, to prove that a refused request wrote nothing.
- ``submit_logs``: the submit Lambda's structured log lines, parsed.

The settings come from the environment exactly as in Lambda (``Settings.from_env``), with a small
inline limit so payload-limit tests stay cheap, and two partitions so "unknown partition" differs
from "partition not in this session".
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber

from skyloom.core import models
from skyloom.core.config import Settings
from skyloom.core.resources import RESULTS, TABLES, TASKS, queue_specs
from skyloom.core.states import ResultStatus, TaskStatus, can_result, can_task
from skyloom.local import moto_queues
from skyloom.local.provision import provision

ACCOUNT = "123456789012"
IDENTITY_A = f"arn:aws:iam::{ACCOUNT}:user/alice"
IDENTITY_B = f"arn:aws:iam::{ACCOUNT}:user/bob"
#: Sentinel for "no principal in the request context" (an unauthenticated event).
ANONYMOUS = ""

TEST_ENV = {
    "SKYLOOM_STACK": "ftest",
    "SKYLOOM_PARTITIONS": "default,gpu",
    "SKYLOOM_INLINE_MAX_BYTES": "1024",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "Skyloom",
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _serialize_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """One in-process moto DynamoDB request at a time, as local mode's server serializes DynamoDB.

    Real services make each request atomic; moto's backends are plain dicts, so two test threads
    racing writers (which is the point of some tests) would otherwise break moto itself
    ("dictionary changed size during iteration") rather than exercise our conditional writes.
    Other services pass through: an SQS long poll (an agent's upper-level poller) would otherwise
    hold the lock for its whole wait. SQS gets the emulator's own patch instead (one request at a
    time per queue, a long poll's wait excepted: :mod:`skyloom.local.moto_queues`).
    """
    moto_queues.install()
    lock = threading.Lock()
    process = BotocoreStubber.process_request

    def serialized(self: BotocoreStubber, request: Any) -> Any:
        if "dynamodb" not in str(getattr(request, "url", "")):
            return process(self, request)
        with lock:
            return process(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", serialized)


def _audit_transitions(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> list[str]:
    """Record every status change that moto applies to an existing task or result and is not an
    edge of :mod:`skyloom.core.states`: the state table is the one source of truth, and a write that takes
    an edge it lacks fails the test that made it (see :func:`aws_stack`)."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    audited = {settings.table_name(TASKS): ("tasks", TaskStatus, can_task),
               settings.table_name(RESULTS): ("results", ResultStatus, can_result)}
    violations: list[str] = []

    def status(table: Table, hash_key: Any) -> str | None:
        item = table.get_item(DynamoType(hash_key), None) if not table.has_range_key else None
        value = item.attrs.get("status") if item is not None else None
        return None if value is None else str(value.value)

    def check(table: Table, hash_key: Any, before: str | None) -> None:
        kind, enum, can = audited[table.name]
        after = status(table, hash_key)
        if before is None or after is None or after == before:
            return  # a new item (tests seed items in any state), a deletion, or no change
        if not can(enum(before), enum(after)):
            violations.append(f"{kind} {hash_key}: {before} -> {after}")

    update, put = DynamoDBBackend.update_item, Table.put_item

    def update_item(self: DynamoDBBackend, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        table = self.tables.get(table_name)
        if table is None or table_name not in audited:
            return update(self, table_name, key, *args, **kwargs)
        hash_key = key[table.hash_key_attr]
        before = status(table, hash_key)
        result = update(self, table_name, key, *args, **kwargs)
        check(table, hash_key, before)
        return result

    def put_item(self: Table, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if self.name not in audited:
            return put(self, item_attrs, *args, **kwargs)
        hash_key = item_attrs[self.hash_key_attr]
        before = status(self, hash_key)
        result = put(self, item_attrs, *args, **kwargs)
        check(self, hash_key, before)
        return result

    monkeypatch.setattr(DynamoDBBackend, "update_item", update_item)
    monkeypatch.setattr(Table, "put_item", put_item)
    return violations


@pytest.fixture
def aws_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """moto with the whole stack provisioned; the submit Lambda reads these settings from env.

    Every status change of a task or a result is checked against the state table; one the table
    lacks fails the test at teardown."""
    from skyloom.core import results, sessions
    from skyloom_server.functions.dispatch import handler as dispatch_handler
    from skyloom_server.functions.resolve import handler as resolve_handler
    from skyloom_server.functions.submit import shared

    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    _serialize_moto(monkeypatch)
    monkeypatch.delenv("SKYLOOM_AWS_ENDPOINT", raising=False)
    monkeypatch.delenv("SKYLOOM_SQS_ENDPOINT", raising=False)
    # Each function reads its settings once per container: a stack an earlier test ran (an
    # end-to-end one, on another endpoint) must not be the one these handlers talk to.
    shared.reset_settings()
    resolve_handler.settings.cache_clear()
    dispatch_handler.settings.cache_clear()
    sessions._status_cache.clear()
    sessions._partitions_cache.clear()
    results._values_read.clear()  # ids repeat from test to test: a value is only ever one stack's
    with mock_aws():
        settings = Settings.from_env()
        provision(settings)
        models.bind(settings)
        violations = _audit_transitions(monkeypatch, settings)
        yield settings
    shared.reset_settings()
    assert not violations, f"status changes the state table lacks: {violations}"


# ------------------------------------------------------------------------------------ db counts
@dataclass
class Db:
    """Item counts and contents per table, to assert that a refused request changed nothing."""

    settings: Settings

    def snapshot(self) -> dict[str, list[str]]:
        """Every item of every table (canonical JSON, sorted): catches updates, not just inserts."""
        ddb = boto3.client("dynamodb", region_name=self.settings.region)
        out: dict[str, list[str]] = {}
        for spec in TABLES:
            items: list[str] = []
            for page in ddb.get_paginator("scan").paginate(TableName=self.settings.table_name(spec)):
                items.extend(json.dumps(item, sort_keys=True, default=str) for item in page["Items"])
            out[spec.logical] = sorted(items)
        return out

    def counts(self) -> dict[str, int]:
        ddb = boto3.client("dynamodb", region_name=self.settings.region)
        return {
            spec.logical: int(ddb.scan(TableName=self.settings.table_name(spec), Select="COUNT")["Count"])
            for spec in TABLES
        }

    def queued_messages(self) -> int:
        sqs = boto3.client("sqs", region_name=self.settings.region)
        total = 0
        for q in queue_specs(self.settings.partitions, self.settings.visibility_timeout):
            url = sqs.get_queue_url(QueueName=self.settings.queue_name(q.partition, q.level))["QueueUrl"]
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
            total += int(attrs["Attributes"]["ApproximateNumberOfMessages"])
        return total


@pytest.fixture
def db(aws_stack: Settings) -> Db:
    return Db(aws_stack)


# ----------------------------------------------------------------------------------- api client
@dataclass
class FakeLambdaContext:
    """What Powertools reads from the Lambda context (logger, metrics, our long-poll cap)."""

    function_name: str = "skyloom-submit"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_ms: int = 30_000

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class ApiResponse:
    status: int
    headers: dict[str, str]
    raw_body: str

    @property
    def json(self) -> Any:
        return json.loads(self.raw_body)

    @property
    def error(self) -> str | None:
        body = self.json
        return body.get("error") if isinstance(body, dict) else None

    @property
    def field(self) -> str | None:
        body = self.json
        return body.get("field") if isinstance(body, dict) else None


def api_gateway_event(
    method: str,
    path: str,
    *,
    body: str | None,
    identity: str,
    headers: Mapping[str, str] | None = None,
    base64_body: bool = False,
) -> dict[str, Any]:
    """An API Gateway REST API proxy event (``/{proxy+}`` resource, IAM authorization)."""
    request_id = str(uuid.uuid4())
    all_headers = {"Content-Type": "application/json", "Host": "api.example.com", "User-Agent": "skyloom-tests"}
    all_headers.update(headers or {})
    principal = (
        {
            "accountId": ACCOUNT,
            "caller": "AIDAEXAMPLE" + identity.rsplit("/", 1)[-1].upper(),
            "accessKey": "AKIAEXAMPLE",
            "userArn": identity,
            "user": "AIDAEXAMPLE",
        }
        if identity
        else {"accountId": None, "caller": None, "accessKey": None, "userArn": None, "user": None}
    )
    if base64_body and body is not None:
        body = b64(body.encode("utf-8"))
    path, _, query_string = path.partition("?")
    query = parse_qs(query_string)
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "extendedRequestId": request_id[:16],
            "requestTime": "09/Apr/2015:12:34:56 +0000",
            "path": f"/prod{path}",
            "accountId": ACCOUNT,
            "protocol": "HTTP/1.1",
            "stage": "prod",
            "domainPrefix": "api",
            "requestTimeEpoch": 1428582896000,
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "cognitoIdentityId": None,
                "sourceIp": "203.0.113.7",
                "principalOrgId": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userAgent": "skyloom-tests",
                **principal,
            },
            "domainName": "api.example.com",
            "apiId": "a1b2c3",
        },
        "body": body,
        "isBase64Encoded": base64_body,
    }


@dataclass
class ApiClient:
    """Calls the submit Lambda's handler in-process with real API Gateway proxy events."""

    settings: Settings
    events: list[dict[str, Any]] = field(default_factory=list)

    #: The two identities of the tests, and "no principal at all".
    A = IDENTITY_A
    B = IDENTITY_B
    ANONYMOUS = ANONYMOUS

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        identity: str = IDENTITY_A,
        raw_body: str | None = None,
        headers: Mapping[str, str] | None = None,
        base64_body: bool = False,
        context: FakeLambdaContext | None = None,
    ) -> ApiResponse:
        from skyloom_server.functions.submit.handler import handler

        text = raw_body if raw_body is not None else (None if body is None else json.dumps(body))
        event = api_gateway_event(
            method, path, body=text, identity=identity, headers=headers, base64_body=base64_body
        )
        self.events.append(event)
        out = handler(event, context or FakeLambdaContext())
        headers_out = {k.lower(): v for k, v in (out.get("headers") or {}).items()}
        for k, values in (out.get("multiValueHeaders") or {}).items():
            headers_out.setdefault(k.lower(), values[0])
        raw = out.get("body") or ""
        if out.get("isBase64Encoded"):
            raw = base64.b64decode(raw).decode("utf-8")
        return ApiResponse(status=int(out["statusCode"]), headers=headers_out, raw_body=raw)

    def event(self, method: str, path: str, body: Any = None, *, identity: str = IDENTITY_A) -> dict[str, Any]:
        """A proxy event without invoking anything, for tests that tamper with its shape."""
        return api_gateway_event(method, path, body=None if body is None else json.dumps(body), identity=identity)

    @staticmethod
    def context(**overrides: Any) -> FakeLambdaContext:
        return FakeLambdaContext(**overrides)

    # Shortcuts for the setup steps most tests share.
    def session(self, *, identity: str = IDENTITY_A, **body: Any) -> str:
        r = self.call("POST", "/sessions", body, identity=identity)
        assert r.status == 201, r.raw_body
        return str(r.json["session_id"])

    def results(self, session_id: str, specs: list[dict[str, Any]], *, identity: str = IDENTITY_A) -> list[str]:
        r = self.call("POST", f"/sessions/{session_id}/results", {"results": specs}, identity=identity)
        assert r.status == 201, r.raw_body
        return [str(x["result_id"]) for x in r.json["results"]]


@pytest.fixture
def api(aws_stack: Settings) -> ApiClient:
    return ApiClient(aws_stack)


# ------------------------------------------------------------------------------------------ logs
@dataclass
class LogCapture:
    """The JSON lines the submit Lambda's Powertools logger wrote since the fixture started."""

    stream: io.StringIO

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.startswith("{")]


@pytest.fixture
def submit_logs() -> Iterator[LogCapture]:
    """Point the Powertools handler at a buffer: it holds the ``sys.stdout`` of import time, which
    ``capsys`` cannot see."""
    from skyloom_server.functions.submit.shared import logger

    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        yield LogCapture(buffer)
    finally:
        handler.setStream(previous)

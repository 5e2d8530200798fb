"""Property-based fuzzing of the REST API against its contract, ``docs/openapi.json``.

schemathesis generates requests for every operation of the document, both valid ones (positive
mode) and ones that break the schema on purpose (negative mode), and sends them as real HTTP to
the local API Gateway stand-in (:class:`skyloom.local.gateway.Gateway`) in front of the real submit
handler, with moto as AWS. Every request is SigV4-signed exactly as the SDK signs it
(:func:`skyloom.client.http.sigv4_headers`), with the local credentials, so the gateway derives the
caller's identity from the signature as API Gateway does.

For every answer:

- no 5xx (the API never fails on input, whatever the input);
- the status code, content type and body conform to the document;
- schema-violating input is refused with a 4xx;
- a 4xx changed nothing: every DynamoDB item, every S3 object and every queue depth is the same
  before and after (the same snapshot the hand-written bad-input tests use).

Half of the examples run against a real session (with a completed result, an awaited
result and a pending task in it) instead of the generated ids, so that the fuzzer reaches the code
behind the ownership checks instead of stopping at "session not found".

Bounded: ``SKYLOOM_FUZZ_EXAMPLES`` examples per operation (default 10), a 30 s timeout per request
and no per-example deadline: about 70 s for the module on two idle cores (hence ``slow``); raise the
count for a longer hunt (60 takes a few minutes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import schemathesis
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto.core import DEFAULT_ACCOUNT_ID as ACCOUNT_ID
from moto.sqs.models import sqs_backends
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from skyloom.client.http import sigv4_headers
from skyloom.core.config import Settings
from skyloom.local import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY
from skyloom.local.gateway import Gateway
from tests.functional.conftest import Db

pytestmark = pytest.mark.slow

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
EXAMPLES = int(os.environ.get("SKYLOOM_FUZZ_EXAMPLES", "10"))
#: Seconds a request may take: a hung request fails the example instead of the whole suite.
REQUEST_TIMEOUT = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def _contract() -> dict[str, Any]:
    """The document without its security requirement: :class:`SigV4` signs every request, so
    schemathesis must not also "generate" (or, in negative mode, drop) the Authorization header."""
    doc: dict[str, Any] = json.loads(OPENAPI.read_text())
    doc.pop("security", None)
    return doc


SCHEMA = schemathesis.openapi.from_dict(_contract())
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}


#: Operations after which a session (or its task) is no longer what the next example expects.
LIFECYCLE_WORDS = ("DELETE ", "/cancel", "/close", "/pause", "/resume", "/purge")


class SigV4(requests.auth.AuthBase):
    """A requests auth that signs the prepared request (final URL and body bytes) like the SDK."""

    def __init__(self, region: str) -> None:
        self._credentials = Credentials(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY)
        self._region = region

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body.encode("utf-8") if isinstance(r.body, str) else r.body
        assert body is None or isinstance(body, bytes), "streamed bodies are not signed"
        content_type = r.headers.get("Content-Type")
        r.headers.update(sigv4_headers(self._credentials, self._region, r.method or "GET", r.url or "", body,
                                       content_type))
        return r


class Fuzzer:
    """The gateway under test, a signed HTTP session to it, and the state snapshot."""

    def __init__(self, settings_: Settings, gateway: Gateway) -> None:
        self.settings = settings_
        self.url = gateway.url
        self.http = requests.Session()
        self.http.auth = SigV4(settings_.region)
        self.db = Db(settings_)
        self._s3 = boto3.client("s3", region_name=settings_.region)
        self._shared: dict[str, str] | None = None

    def post(self, path: str, body: Any) -> dict[str, Any]:
        r = self.http.post(self.url + path, json=body, timeout=30)
        assert r.status_code in (200, 201), r.text
        out: dict[str, Any] = r.json()
        return out

    def fresh_session(self) -> dict[str, str]:
        """A session with a completed result ``in0``, an awaited result ``out0`` and a task ``t0``."""
        sid = str(self.post("/sessions", {"name": "fuzz"})["session_id"])
        self.post(f"/sessions/{sid}/tasks", {
            "results": [{"id": f"in0{sid[:8]}", "data": "aGk="}, {"id": f"out0{sid[:8]}"}],
            "tasks": [{"id": f"t0{sid[:8]}", "handler": "fuzz.echo", "expected_outputs": [f"out0{sid[:8]}"],
                       "data_dependencies": [f"in0{sid[:8]}"]}],
        })
        return {"session_id": sid, "result_id": f"in0{sid[:8]}", "task_id": f"t0{sid[:8]}"}

    def session_for(self, label: str) -> dict[str, str]:
        """A fresh session for operations that change a session's or a task's lifecycle, else one
        shared session (creating a session costs two requests; most operations only read it)."""
        if any(word in label for word in LIFECYCLE_WORDS):
            return self.fresh_session()
        if self._shared is None:
            self._shared = self.fresh_session()
        return self._shared

    def state(self) -> tuple[Any, ...]:
        """Every DynamoDB item (:meth:`Db.snapshot`), every S3 object (key and ETag) and the number of
        messages, visible or not, in every queue and dead-letter queue."""
        objects = sorted(
            (o["Key"], o["ETag"])
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.settings.bucket)
            for o in page.get("Contents", [])
        )
        # Read from moto's backend (in this process) rather than with GetQueueAttributes: 40 queues
        # and DLQs would cost 40 calls per snapshot, and the fuzzer takes two per example.
        queues = sqs_backends[ACCOUNT_ID][self.settings.region].queues
        depths = sorted((name, len(q._messages)) for name, q in queues.items())
        return self.db.snapshot(), objects, depths


@pytest.fixture
def fuzzer(aws_stack: Settings) -> Iterator[Fuzzer]:
    """A fresh moto stack per operation (``aws_stack``) behind the gateway: the snapshots scan every
    item, so a stack shared by all operations would make each one slower than the last."""
    from skyloom_server.functions.submit.handler import handler

    gateway = Gateway(handler, region=aws_stack.region)
    gateway.start()
    try:
        yield Fuzzer(aws_stack, gateway)
    finally:
        gateway.stop()


def _strategy(label: str) -> st.SearchStrategy[Any]:
    op = OPERATIONS[label]
    modes = [op.as_strategy(generation_mode=GenerationMode.POSITIVE)]
    if op.path_parameters or op.query or op.body:
        modes.append(op.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    return st.one_of(modes)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_operation_survives_generated_requests(fuzzer: Fuzzer, label: str) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                               HealthCheck.function_scoped_fixture],
    )
    @given(case=_strategy(label), real=st.booleans())
    def run(case: Any, real: bool) -> None:
        negative = {loc for loc, info in case.meta.components.items() if info.mode == GenerationMode.NEGATIVE}
        # Real ids only replace valid generated ones: a negative path must stay negative.
        if real and case.path_parameters and ParameterLocation.PATH not in negative:
            ids = fuzzer.session_for(label)
            for name in case.path_parameters:
                if name in ids:
                    case.path_parameters[name] = ids[name]
        before = fuzzer.state()
        response = case.call(base_url=fuzzer.url, session=fuzzer.http, timeout=REQUEST_TIMEOUT)
        after = fuzzer.state()
        assert response.status_code < 500, f"{label} -> {response.status_code}: {response.text[:500]}"
        # The API ignores query parameters it does not know (API Gateway forwards whatever the caller
        # adds), which schemathesis counts as accepting negative data; bad values of the known ones
        # are refused, and pinned by test_limits.py and test_queries.py.
        checks = [c for c in CHECKS if c is not negative_data_rejection or ParameterLocation.QUERY not in negative]
        case.validate_response(response, checks=checks)
        if 400 <= response.status_code < 500:
            assert after == before, f"{label} answered {response.status_code} but changed state: {response.text}"

    run()

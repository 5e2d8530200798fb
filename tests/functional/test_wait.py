"""The wait route on moto: long polls, values in the answer, ``also``, modes, the answer budget, and
what a wait costs in DynamoDB calls (counted, never timed)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import boto3
import pytest
from pynamodb.connection.base import Connection

from skyloom.core import results
from skyloom.core.models import ResultModel
from skyloom.core.protocol import MAX_IDS_PER_REQUEST, b64encode

if TYPE_CHECKING:
    from skyloom.core.config import Settings
    from tests.functional.conftest import ApiClient


def wait(api: ApiClient, sid: str, **body: Any) -> dict[str, Any]:
    r = api.call("POST", f"/sessions/{sid}/results/wait", body)
    assert r.status == 200, r.raw_body
    out: dict[str, Any] = r.json
    return out


def abort(rid: str, message: str = "boom") -> None:
    ResultModel.get(rid).update(actions=[
        ResultModel.status.set("Aborted"),
        ResultModel.error.set({"task_id": "t-root", "handler": "h", "status": "Error", "attempts": 1,
                               "type": "ValueError", "message": message, "traceback": "Traceback: " + message}),
    ])


def complete(rid: str, data: bytes) -> None:
    ResultModel.get(rid).update(actions=[ResultModel.status.set("Completed"), ResultModel.inline.set(data),
                                         ResultModel.size.set(len(data))])


@pytest.fixture
def ddb_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """DynamoDB operations made by this process, by name."""
    counts: Counter[str] = Counter()
    original = Connection._make_api_call

    def counting(self: Connection, operation_name: str, operation_kwargs: dict[str, Any]) -> dict[str, Any]:
        counts[operation_name] += 1
        return original(self, operation_name, operation_kwargs)

    monkeypatch.setattr(Connection, "_make_api_call", counting)
    yield counts


def test_values_come_inline_or_as_presigned_urls(api: ApiClient, aws_stack: Settings) -> None:
    # GIVEN a small inline result, an empty one and one uploaded through S3
    sid = api.session()
    created = api.call("POST", f"/sessions/{sid}/results", {"results": [
        {"id": "small", "data": b64encode(b"tiny")}, {"id": "empty", "data": ""}, {"id": "large", "upload": True},
    ]}).json["results"]
    url = urlparse(next(r["upload_url"] for r in created if r["result_id"] == "large"))
    path = unquote(url.path).lstrip("/")
    key = path if url.hostname and url.hostname.startswith(aws_stack.bucket) else path.split("/", 1)[1]
    boto3.client("s3", region_name="us-east-1").put_object(Bucket=aws_stack.bucket, Key=key, Body=b"L" * 5000)
    assert api.call("POST", f"/sessions/{sid}/results/complete", {"ids": ["large"]}).status == 200
    # WHEN they are waited for with values
    answer = wait(api, sid, ids=["small", "empty", "large"], timeout=1, values=True)
    # THEN the answer carries every value: inline when small, a download URL when large
    assert answer["done"] is True and answer["incomplete"] == []
    values = {v["result_id"]: v for v in answer["values"]}
    assert values["small"] == {"result_id": "small", "size": 4, "data": b64encode(b"tiny"), "download_url": None}
    assert values["empty"]["data"] == "" and values["large"]["size"] == 5000
    assert values["large"]["data"] is None and values["large"]["download_url"]
    # AND without values the answer stays small
    assert wait(api, sid, ids=["small"], timeout=0)["values"] == []


def test_also_reports_final_siblings_of_the_session_only(api: ApiClient) -> None:
    sid, other = api.session(), api.session(identity=api.B)
    api.results(sid, [{"id": "waited", "data": b64encode(b"w")}, {"id": "sib", "data": b64encode(b"s")},
                      {"id": "pending"}])
    api.results(other, [{"id": "foreign", "data": b64encode(b"f")}], identity=api.B)
    answer = wait(api, sid, ids=["waited"], also=["sib", "pending", "foreign", "unknown", "waited"], values=True)
    # the final sibling is reported with its value; pending, foreign and unknown ids say nothing
    assert [r["result_id"] for r in answer["results"]] == ["waited", "sib"]
    assert [v["result_id"] for v in answer["values"]] == ["waited", "sib"]


def test_first_failure_ends_at_an_aborted_result(api: ApiClient) -> None:
    sid = api.session()
    api.results(sid, [{"id": "pending"}, {"id": "failed"}])
    abort("failed")
    answer = wait(api, sid, ids=["pending", "failed"], mode="first_failure", timeout=10)
    assert answer["done"] is True
    assert [r["status"] for r in answer["results"]] == ["Created", "Aborted"]
    assert answer["results"][1]["error"]["message"] == "boom"
    assert wait(api, sid, ids=["pending", "failed"], mode="all", timeout=0)["done"] is False


def test_a_long_poll_sees_a_result_completed_while_it_waits(api: ApiClient) -> None:
    sid = api.session()
    api.results(sid, [{"id": "later"}])
    timer = threading.Timer(0.3, complete, args=("later", b"done"))
    timer.start()
    answer = wait(api, sid, ids=["later"], timeout=10, values=True)
    timer.join()
    assert answer["done"] is True and answer["values"][0]["data"] == b64encode(b"done")


def test_values_and_errors_beyond_the_budget_are_listed_incomplete(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an answer budget that holds about three values, and a failure with a long error
    monkeypatch.setattr(results, "WAIT_ANSWER_BUDGET_BYTES", 3 * 1500)
    sid = api.session()
    ids = [f"r{i}" for i in range(6)]
    api.results(sid, [{"id": i, "data": b64encode(b"v" * 1000)} for i in ids] + [{"id": "bad"}])
    abort("bad", "x" * 5000)
    # WHEN all are read at once
    answer = wait(api, sid, ids=["bad", *ids], values=True)
    # THEN the first detail always fits (the error), the rest go in order while the budget lasts
    assert answer["results"][0]["error"]["message"] == "x" * 5000
    assert answer["values"] == [] and answer["incomplete"] == ids
    answer = wait(api, sid, ids=ids, values=True)
    got = [v["result_id"] for v in answer["values"]]
    assert got == ids[:3] and answer["incomplete"] == ids[3:]


def test_ids_and_also_are_bounded_together(api: ApiClient) -> None:
    sid = api.session()
    r = api.call("POST", f"/sessions/{sid}/results/wait",
                 {"ids": ["a"], "also": [f"b{i}" for i in range(MAX_IDS_PER_REQUEST)]})
    assert r.status == 400 and r.json["field"] == "also"
    r = api.call("POST", f"/sessions/{sid}/results/wait", {"ids": ["a"], "also": ["bad id!"]})
    assert r.status == 400 and r.json["field"].startswith("also")
    r = api.call("POST", f"/sessions/{sid}/results/wait", {"ids": ["a"], "mode": "some"})
    assert r.status == 400 and r.json["field"] == "mode"


def test_a_long_wait_for_many_results_costs_a_read_per_recheck(api: ApiClient, ddb_calls: Counter[str]) -> None:
    # GIVEN 1,000 results of which none completes (written directly: moto's transactions are slow)
    sid = api.session()
    ids = [f"p{i}" for i in range(1000)]
    with ResultModel.batch_write() as batch:
        for i in ids:
            batch.save(ResultModel(i, session_id=sid, owner=api.A, status="Created", created_at=0, updated_at=0))
    ddb_calls.clear()
    # WHEN a client waits for all of them for 1.5 s
    answer = wait(api, sid, ids=ids, timeout=1.5, values=True)
    # THEN no GetItem per result: a first read and a final report of 10 BatchGetItem calls each
    # (100 keys a call), and in between one call per re-check (it stops at the first pending page);
    # re-checks start 20 ms apart and grow 1.5 times, so 1.5 s holds at most a dozen of them
    assert answer["done"] is False and len(answer["results"]) == 1000
    assert ddb_calls["GetItem"] <= 1  # the session
    assert ddb_calls["BatchGetItem"] <= 2 * 10 + 12, ddb_calls
    # AND an any-mode wait re-reads every pending id each time, still 100 keys a call
    ddb_calls.clear()
    wait(api, sid, ids=ids, timeout=0.5, mode="any")
    assert ddb_calls["BatchGetItem"] % 10 == 0 and ddb_calls["GetItem"] <= 1

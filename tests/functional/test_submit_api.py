"""The submit Lambda through its public surface: API Gateway proxy events in, proxy responses out.

Happy paths of every route, then bad input. Each refusal must be a 4xx JSON ``ErrorBody`` whose
``error`` and ``field`` name the problem, and must leave every table exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import boto3
import pytest

from skyloom.core.protocol import b64encode as b64

if TYPE_CHECKING:  # fixtures provide the instances; the classes are only needed for types
    from tests.functional.conftest import ApiClient, ApiResponse, Db, LogCapture



def task(outputs: list[str], deps: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"handler": "tests.echo", "expected_outputs": outputs, "data_dependencies": deps or [], **extra}


def assert_json(r: ApiResponse) -> None:
    assert r.headers.get("content-type") == "application/json", r.headers
    json.loads(r.raw_body)


def assert_error(r: ApiResponse, status: int, error: str, field: str | None = None) -> dict[str, Any]:
    assert_json(r)
    assert r.status == status, r.raw_body
    body: dict[str, Any] = r.json
    assert body["error"] == error, body
    assert body["message"], body
    if field is not None:
        assert body.get("field") == field, body
    return body


@contextmanager
def nothing_written(db: Db) -> Iterator[None]:
    before = db.snapshot(), db.queued_messages()
    yield
    after = db.snapshot(), db.queued_messages()
    assert after == before


# ================================================================================ happy paths
class TestSessions:
    def test_create_get_close(self, api: ApiClient) -> None:
        # WHEN a session is created with default options
        r = api.call("POST", "/sessions", {"name": "pricing", "options": {"priority": 2}})
        # THEN it is owned by the caller, running, on the default partition
        assert_json(r)
        assert r.status == 201, r.raw_body
        info = r.json
        assert info["owner"] == api.A
        assert info["status"] == "Running"
        assert info["partitions"] == ["default"]
        assert info["options"]["priority"] == 2
        sid = info["session_id"]

        got = api.call("GET", f"/sessions/{sid}")
        assert got.status == 200 and got.json == info

        closed = api.call("POST", f"/sessions/{sid}/close")
        assert closed.status == 200 and closed.json["status"] == "Closed"
        again = api.call("POST", f"/sessions/{sid}/close")
        assert again.status == 200 and again.json["status"] == "Closed"

    def test_session_with_named_partitions(self, api: ApiClient) -> None:
        r = api.call("POST", "/sessions", {"partitions": ["gpu", "default"], "options": {"partition": "gpu"}})
        assert r.status == 201, r.raw_body
        assert r.json["partitions"] == ["gpu", "default"]

    def test_base64_encoded_body_is_accepted(self, api: ApiClient) -> None:
        r = api.call("POST", "/sessions", {"name": "b64"}, base64_body=True)
        assert r.status == 201, r.raw_body


class TestResults:
    def test_inline_upload_and_awaited_results(self, api: ApiClient, aws_stack: Any) -> None:
        sid = api.session()
        r = api.call(
            "POST",
            f"/sessions/{sid}/results",
            {"results": [{"id": "in1", "data": b64(b"hello")}, {"id": "up1", "upload": True}, {"id": "out1"}]},
        )
        assert r.status == 201, r.raw_body
        by_id = {x["result_id"]: x for x in r.json["results"]}
        assert by_id["in1"]["status"] == "Completed" and by_id["in1"]["size"] == 5
        assert by_id["up1"]["status"] == "Created" and by_id["up1"]["upload_url"]
        assert by_id["out1"]["status"] == "Created" and by_id["out1"]["upload_url"] is None

        # one result, several results
        one = api.call("GET", f"/sessions/{sid}/results/in1")
        assert one.status == 200 and one.json["result_id"] == "in1"
        many = api.call("POST", f"/sessions/{sid}/results/get", {"ids": ["out1", "in1"]})
        assert many.status == 200
        assert [x["result_id"] for x in many.json["results"]] == ["out1", "in1"]

        # inline value
        data = api.call("GET", f"/sessions/{sid}/results/in1/data")
        assert data.status == 200 and data.json == {
            "result_id": "in1", "size": 5, "data": b64(b"hello"), "download_url": None
        }

        # upload through the presigned URL (here: the same key via boto3), then complete
        url = urlparse(by_id["up1"]["upload_url"])
        path = unquote(url.path).lstrip("/")
        key = path if url.hostname and url.hostname.startswith(aws_stack.bucket) else path.split("/", 1)[1]
        boto3.client("s3", region_name="us-east-1").put_object(Bucket=aws_stack.bucket, Key=key, Body=b"x" * 2000)
        done = api.call("POST", f"/sessions/{sid}/results/complete", {"ids": ["up1"]})
        assert done.status == 200, done.raw_body
        assert done.json["results"][0]["status"] == "Completed"
        assert done.json["results"][0]["size"] == 2000
        big = api.call("GET", f"/sessions/{sid}/results/up1/data")
        assert big.status == 200 and big.json["download_url"] and big.json["data"] is None

    def test_wait(self, api: ApiClient) -> None:
        sid = api.session()
        api.results(sid, [{"id": "ready", "data": b64(b"1")}, {"id": "later"}])
        done = api.call("POST", f"/sessions/{sid}/results/wait", {"ids": ["ready"], "timeout": 1})
        assert done.status == 200 and done.json["done"] is True
        any_ = api.call("POST", f"/sessions/{sid}/results/wait", {"ids": ["ready", "later"], "mode": "any"})
        assert any_.status == 200 and any_.json["done"] is True
        pending = api.call("POST", f"/sessions/{sid}/results/wait", {"ids": ["later"], "timeout": 0})
        assert pending.status == 200 and pending.json["done"] is False

    def test_wait_is_cut_to_the_invocation_time_left(self, api: ApiClient) -> None:
        # GIVEN an invocation with 2.1 s left WHEN a client asks to wait 20 s
        sid = api.session()
        api.results(sid, [{"id": "later"}])
        r = api.call(
            "POST", f"/sessions/{sid}/results/wait", {"ids": ["later"], "timeout": 20},
            context=api.context(remaining_ms=2100),
        )
        # THEN it answers "not done" in time instead of being killed by the Lambda timeout
        assert r.status == 200 and r.json["done"] is False

    def test_reading_an_unfinished_result_is_a_conflict(self, api: ApiClient) -> None:
        sid = api.session()
        api.results(sid, [{"id": "later"}])
        assert_error(api.call("GET", f"/sessions/{sid}/results/later/data"), 409, "conflict", "result_id")


class TestTasks:
    def test_submit_ready_and_waiting_tasks(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        api.results(sid, [{"id": "x", "data": b64(b"2")}])
        r = api.call(
            "POST",
            f"/sessions/{sid}/tasks",
            {
                "results": [{"id": "y"}, {"id": "z"}],
                "tasks": [
                    task(["y"], ["x"], id="t1", payload=b64(b"args")),
                    task(["z"], ["y"], id="t2", options={"priority": 1}),
                ],
            },
        )
        assert r.status == 201, r.raw_body
        tasks = {t["task_id"]: t for t in r.json["tasks"]}
        assert tasks["t1"]["status"] == "Submitted"
        assert tasks["t2"]["status"] == "Pending" and tasks["t2"]["remaining"] == ["y"]
        assert {x["result_id"]: x["owner_task_id"] for x in r.json["results"]} == {"y": "t1", "z": "t2"}
        assert db.queued_messages() == 1

        one = api.call("GET", f"/sessions/{sid}/tasks/t2")
        assert one.status == 200 and one.json["handler"] == "tests.echo"
        many = api.call("POST", f"/sessions/{sid}/tasks/get", {"ids": ["t2", "t1"]})
        assert many.status == 200 and [t["task_id"] for t in many.json["tasks"]] == ["t2", "t1"]

    def test_task_on_another_partition_of_the_session(self, api: ApiClient) -> None:
        sid = api.session(partitions=["default", "gpu"])
        r = api.call("POST", f"/sessions/{sid}/tasks", {"results": [{"id": "o"}],
                                                        "tasks": [task(["o"], options={"partition": "gpu"})]})
        assert r.status == 201, r.raw_body
        assert r.json["tasks"][0]["options"]["partition"] == "gpu"


class TestDocumentAndObservability:
    def test_openapi_is_served_behind_auth(self, api: ApiClient) -> None:
        r = api.call("GET", "/openapi.json")
        assert r.status == 200 and r.json["info"]["title"] == "Skyloom API"
        assert_error(api.call("GET", "/openapi.json", identity=api.ANONYMOUS), 401, "unauthorized")

    def test_logs_carry_the_session_and_the_correlation_id(self, api: ApiClient, submit_logs: LogCapture) -> None:
        sid = api.session()
        r = api.call("GET", f"/sessions/{sid}/tasks/nope")
        assert_error(r, 404, "task_not_found", "ids")
        refused = [x for x in submit_logs.lines() if x.get("message") == "request refused"]
        assert len(refused) == 1, submit_logs.lines()
        line = refused[0]
        assert line["session_id"] == sid
        assert line["caller"] == api.A
        assert line["route"] == "GET /sessions/{session_id}/tasks/{task_id}"
        assert line["correlation_id"] == api.events[-1]["requestContext"]["requestId"]
        assert line["error"] == "task_not_found" and line["status"] == 404

    def test_log_keys_do_not_leak_into_the_next_request(self, api: ApiClient, submit_logs: LogCapture) -> None:
        sid = api.session()
        api.call("GET", f"/sessions/{sid}/tasks/nope")
        api.call("POST", "/sessions", {"partitions": ["nope"]})
        last = [x for x in submit_logs.lines() if x.get("message") == "request refused"][-1]
        assert last["route"] == "POST /sessions" and "session_id" not in last


# ================================================================================ bad input
class TestIdentityAndIsolation:
    def test_missing_identity_is_401(self, api: ApiClient, db: Db) -> None:
        with nothing_written(db):
            assert_error(api.call("POST", "/sessions", {}, identity=api.ANONYMOUS), 401, "unauthorized")

    def test_missing_request_context_is_401(self, api: ApiClient) -> None:
        from skyloom_server.functions.submit.handler import handler

        event = api.event("POST", "/sessions", {})
        event.pop("requestContext")
        out = handler(event, api.context())
        assert out["statusCode"] == 401 and json.loads(out["body"])["error"] == "unauthorized"

    @pytest.mark.parametrize(
        ("method", "suffix", "body"),
        [
            ("GET", "", None),
            ("POST", "/close", None),
            ("POST", "/results", {"results": [{"id": "r9"}]}),
            ("POST", "/results/get", {"ids": ["in"]}),
            ("GET", "/results/in", None),
            ("GET", "/results/in/data", None),
            ("POST", "/results/wait", {"ids": ["in"], "timeout": 0}),
            ("POST", "/results/complete", {"ids": ["in"]}),
            ("POST", "/tasks", {"tasks": [task(["out"], ["in"])]}),
            ("POST", "/tasks/get", {"ids": ["t"]}),
            ("GET", "/tasks/t", None),
        ],
    )
    def test_another_identitys_session_does_not_exist(
        self, api: ApiClient, db: Db, method: str, suffix: str, body: Any
    ) -> None:
        # GIVEN a session of A with results and a task
        sid = api.session()
        api.results(sid, [{"id": "in", "data": b64(b"1")}, {"id": "out"}])
        r = api.call("POST", f"/sessions/{sid}/tasks", {"tasks": [task(["out"], ["in"], id="t")]})
        assert r.status == 201, r.raw_body
        # WHEN B uses it THEN it is "not found", exactly as a missing one, and nothing changes
        with nothing_written(db):
            body_b = assert_error(
                api.call(method, f"/sessions/{sid}{suffix}", body, identity=api.B), 404, "session_not_found"
            )
        missing = assert_error(api.call(method, f"/sessions/{'0' * 32}{suffix}", body), 404, "session_not_found")
        assert body_b.keys() == missing.keys()
        assert api.call("GET", f"/sessions/{sid}").json["status"] == "Running"


class TestReplays:
    def test_replaying_a_submission_is_idempotent(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        body = {"results": [{"id": "o"}], "tasks": [task(["o"], id="t")]}
        first = api.call("POST", f"/sessions/{sid}/tasks", body)
        assert first.status == 201, first.raw_body
        before = db.snapshot()
        again = api.call("POST", f"/sessions/{sid}/tasks", body)
        assert again.status == 201, again.raw_body
        assert [t["task_id"] for t in again.json["tasks"]] == ["t"]
        assert db.counts() == {k: len(v) for k, v in before.items()}

    @pytest.mark.parametrize("suffix", ["/results", "/tasks"])
    def test_same_ids_in_another_identitys_session_are_not_a_replay(
        self, api: ApiClient, db: Db, suffix: str
    ) -> None:
        body: dict[str, Any] = (
            {"results": [{"id": "shared", "data": b64(b"a")}]} if suffix == "/results"
            else {"results": [{"id": "o"}], "tasks": [task(["o"], id="t")]}
        )
        sa, sb = api.session(), api.session(identity=api.B)
        assert api.call("POST", f"/sessions/{sa}{suffix}", body).status == 201
        # WHEN B posts the very same body into B's session
        with nothing_written(db):
            r = api.call("POST", f"/sessions/{sb}{suffix}", body, identity=api.B)
        # THEN B is not told that objects it can never read were created
        assert r.status == 409, r.raw_body


class TestMalformedRequests:
    def test_malformed_json(self, api: ApiClient, db: Db) -> None:
        with nothing_written(db):
            body = assert_error(api.call("POST", "/sessions", raw_body='{"name": '), 400, "invalid_request", "body")
        assert "JSON" in body["message"]

    @pytest.mark.parametrize("raw", ["[]", '"text"', "null", "42"])
    def test_json_that_is_not_an_object(self, api: ApiClient, db: Db, raw: str) -> None:
        sid = api.session()
        with nothing_written(db):
            assert_error(api.call("POST", f"/sessions/{sid}/tasks", raw_body=raw), 400, "invalid_request", "body")

    def test_missing_body(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        with nothing_written(db):
            assert_error(api.call("POST", f"/sessions/{sid}/results"), 400, "invalid_request", "body")

    def test_not_json_content_type(self, api: ApiClient, db: Db) -> None:
        with nothing_written(db):
            r = api.call("POST", "/sessions", raw_body="name=x", headers={"Content-Type": "text/plain"})
        assert_error(r, 415, "invalid_request", "content-type")

    def test_unknown_field(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        with nothing_written(db):
            body = assert_error(
                api.call("POST", f"/sessions/{sid}/tasks", {"tasks": [task(["o"], handlr="x")]}),
                400, "invalid_request", "tasks.0.handlr",
            )
        assert body["details"]["errors"][0]["type"] == "extra_forbidden"
        assert 422 not in {body.get("statusCode")}

    def test_all_errors_are_listed_first_one_named(self, api: ApiClient) -> None:
        sid = api.session()
        bad = {"tasks": [{"handler": "", "expected_outputs": []}, {"expected_outputs": ["x"]}]}
        body = assert_error(api.call("POST", f"/sessions/{sid}/tasks", bad), 400, "invalid_request")
        fields = [e["field"] for e in body["details"]["errors"]]
        assert body["field"] == fields[0]
        assert {"tasks.0.handler", "tasks.0.expected_outputs", "tasks.1.handler"} <= set(fields)
        assert "more error" in body["message"]

    def test_body_over_the_lambda_limit(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        huge = json.dumps({"tasks": [task(["o"], payload="A" * (6 * 1024 * 1024))]})
        with nothing_written(db):
            body = assert_error(
                api.call("POST", f"/sessions/{sid}/tasks", raw_body=huge), 413, "payload_too_large", "body"
            )
        assert body["details"]["limit"] == 6 * 1024 * 1024

    def test_unknown_route_and_method(self, api: ApiClient) -> None:
        assert_error(api.call("GET", "/nope"), 404, "not_found", "path")
        assert_error(api.call("DELETE", "/sessions"), 404, "not_found")
        assert_error(api.call("GET", "/sessions/a/b/c/d/e"), 404, "not_found")

    def test_wait_timeout_over_the_limit(self, api: ApiClient) -> None:
        sid = api.session()
        api.results(sid, [{"id": "r"}])
        assert_error(
            api.call("POST", f"/sessions/{sid}/results/wait", {"ids": ["r"], "timeout": 21}),
            400, "invalid_request", "timeout",
        )


class TestInvalidIds:
    @pytest.mark.parametrize(
        ("method", "path", "field"),
        [
            ("GET", "/sessions/bad.id", "session_id"),
            ("GET", "/sessions/{sid}/results/bad.id", "result_id"),
            ("GET", "/sessions/{sid}/results/bad.id/data", "result_id"),
            ("GET", "/sessions/{sid}/tasks/bad.id", "task_id"),
            ("GET", "/sessions/" + "x" * 65, "session_id"),
            ("POST", "/sessions/bad!id/close", "session_id"),
        ],
    )
    def test_path_ids(self, api: ApiClient, db: Db, method: str, path: str, field: str) -> None:
        sid = api.session()
        with nothing_written(db):
            body = assert_error(api.call(method, path.format(sid=sid)), 400, "invalid_request", field)
        assert field in body["message"]

    @pytest.mark.parametrize(
        ("suffix", "body", "field"),
        [
            ("/results/get", {"ids": ["ok", "not ok"]}, "ids"),
            ("/results", {"results": [{"id": "has space"}]}, "results.0.id"),
            ("/tasks", {"tasks": [task(["o"], id="t/1")]}, "tasks.0.id"),
            ("/tasks", {"tasks": [task(["o"], payload_result="bad id")]}, "tasks.0.payload_result"),
        ],
    )
    def test_body_ids(self, api: ApiClient, db: Db, suffix: str, body: Any, field: str) -> None:
        sid = api.session()
        with nothing_written(db):
            assert_error(api.call("POST", f"/sessions/{sid}{suffix}", body), 400, "invalid_request", field)


class TestGraphRules:
    def test_unknown_dependencies(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        api.results(sid, [{"id": "known"}])
        with nothing_written(db):
            body = assert_error(
                api.call("POST", f"/sessions/{sid}/tasks",
                         {"results": [{"id": "o"}], "tasks": [task(["o"], ["known", "ghost1", "ghost2"])]}),
                404, "result_not_found", "tasks.0.data_dependencies",
            )
        assert body["details"]["missing"] == ["ghost1", "ghost2"]
        assert "ghost1" in body["message"] and "ghost2" in body["message"]

    def test_unknown_expected_output(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        with nothing_written(db):
            assert_error(
                api.call("POST", f"/sessions/{sid}/tasks", {"tasks": [task(["ghost"])]}),
                404, "result_not_found", "tasks.0.expected_outputs",
            )

    def test_result_of_another_session_is_unknown(self, api: ApiClient, db: Db) -> None:
        other = api.session()
        api.results(other, [{"id": "theirs", "data": b64(b"1")}])
        sid = api.session()
        with nothing_written(db):
            assert_error(
                api.call("POST", f"/sessions/{sid}/tasks", {"results": [{"id": "o"}],
                                                            "tasks": [task(["o"], ["theirs"])]}),
                404, "result_not_found",
            )

    def test_cycle_through_expected_outputs(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        submission = {
            "results": [{"id": "r1"}, {"id": "r2"}, {"id": "r3"}],
            "tasks": [task(["r1"], ["r3"], id="a"), task(["r2"], ["r1"], id="b"), task(["r3"], ["r2"], id="c")],
        }
        with nothing_written(db):
            body = assert_error(api.call("POST", f"/sessions/{sid}/tasks", submission), 400, "dependency_cycle")
        assert set(body["details"]["cycle"]) == {"a", "b", "c"}

    def test_task_depending_on_its_own_output(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        with nothing_written(db):
            assert_error(
                api.call("POST", f"/sessions/{sid}/tasks",
                         {"results": [{"id": "r"}], "tasks": [task(["r"], ["r"], id="self")]}),
                400, "dependency_cycle",
            )

    def test_task_without_expected_outputs(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        with nothing_written(db):
            assert_error(
                api.call("POST", f"/sessions/{sid}/tasks", {"tasks": [task([])]}),
                400, "invalid_request", "tasks.0.expected_outputs",
            )

    def test_two_producers_of_one_result(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        with nothing_written(db):
            assert_error(
                api.call("POST", f"/sessions/{sid}/tasks",
                         {"results": [{"id": "r"}], "tasks": [task(["r"]), task(["r"])]}),
                400, "invalid_request",
            )

    def test_output_already_produced_by_another_task(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        first = api.call("POST", f"/sessions/{sid}/tasks", {"results": [{"id": "r"}], "tasks": [task(["r"])]})
        assert first.status == 201, first.raw_body
        with nothing_written(db):
            assert_error(api.call("POST", f"/sessions/{sid}/tasks", {"tasks": [task(["r"])]}), 409, "conflict")

    def test_duplicate_ids_in_one_request(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        with nothing_written(db):
            assert_error(
                api.call("POST", f"/sessions/{sid}/tasks",
                         {"results": [{"id": "r"}, {"id": "s"}],
                          "tasks": [task(["r"], id="t"), task(["s"], id="t")]}),
                400, "invalid_request", "tasks",
            )

    def test_duplicate_result_ids_in_one_submission(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        with nothing_written(db):
            assert_error(
                api.call("POST", f"/sessions/{sid}/tasks",
                         {"results": [{"id": "r"}, {"id": "r"}], "tasks": [task(["r"])]}),
                400, "invalid_request", "results",
            )

    def test_duplicate_result_ids_in_create_results(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        with nothing_written(db):
            assert_error(
                api.call("POST", f"/sessions/{sid}/results", {"results": [{"id": "r"}, {"id": "r"}]}),
                400, "invalid_request",
            )


class TestLimitsAndOptions:
    def test_oversized_inline_payload(self, api: ApiClient, db: Db, aws_stack: Any) -> None:
        sid = api.session()
        too_big = b64(b"x" * (aws_stack.inline_max_bytes + 1))
        with nothing_written(db):
            body = assert_error(
                api.call("POST", f"/sessions/{sid}/tasks",
                         {"results": [{"id": "o"}], "tasks": [task(["o"], payload=too_big)]}),
                413, "payload_too_large", "tasks.0.payload",
            )
        assert body["details"]["limit"] == aws_stack.inline_max_bytes

    def test_oversized_inline_result(self, api: ApiClient, db: Db, aws_stack: Any) -> None:
        sid = api.session()
        too_big = b64(b"x" * (aws_stack.inline_max_bytes + 1))
        with nothing_written(db):
            assert_error(
                api.call("POST", f"/sessions/{sid}/results", {"results": [{"id": "ok"}, {"data": too_big}]}),
                413, "payload_too_large", "results.1.data",
            )
        with nothing_written(db):
            assert_error(
                api.call("POST", f"/sessions/{sid}/tasks",
                         {"results": [{"id": "o"}, {"data": too_big}], "tasks": [task(["o"])]}),
                413, "payload_too_large", "results.1.data",
            )

    def test_payload_that_is_not_base64(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        with nothing_written(db):
            assert_error(
                api.call("POST", f"/sessions/{sid}/tasks",
                         {"results": [{"id": "o"}], "tasks": [task(["o"], payload="not base64!")]}),
                400, "invalid_request", "tasks.0.payload",
            )

    def test_unknown_partition_for_a_task(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        with nothing_written(db):
            assert_error(
                api.call("POST", f"/sessions/{sid}/tasks",
                         {"results": [{"id": "o"}], "tasks": [task(["o"], options={"partition": "nope"})]}),
                400, "invalid_request", "tasks.0.options.partition",
            )

    def test_partition_outside_the_session(self, api: ApiClient, db: Db) -> None:
        sid = api.session()  # default partition only, though "gpu" exists
        with nothing_written(db):
            assert_error(
                api.call("POST", f"/sessions/{sid}/tasks",
                         {"results": [{"id": "o"}], "tasks": [task(["o"], options={"partition": "gpu"})]}),
                400, "invalid_request", "tasks.0.options.partition",
            )

    def test_unknown_partition_for_a_session(self, api: ApiClient, db: Db) -> None:
        with nothing_written(db):
            assert_error(api.call("POST", "/sessions", {"partitions": ["nope"]}), 400, "invalid_request",
                         "partitions.0")
        with nothing_written(db):
            assert_error(api.call("POST", "/sessions", {"options": {"partition": "Bad_Name"}}), 400,
                         "invalid_request", "options.partition")

    def test_closed_session_refuses_work(self, api: ApiClient, db: Db) -> None:
        sid = api.session()
        api.call("POST", f"/sessions/{sid}/close")
        with nothing_written(db):
            assert_error(
                api.call("POST", f"/sessions/{sid}/tasks", {"results": [{"id": "o"}], "tasks": [task(["o"])]}),
                409, "session_closed", "session_id",
            )
            assert_error(api.call("POST", f"/sessions/{sid}/results", {"results": [{"id": "o"}]}),
                         409, "session_closed")


class TestUnexpectedErrors:
    def test_internal_error_hides_internals(
        self, api: ApiClient, monkeypatch: pytest.MonkeyPatch, submit_logs: LogCapture
    ) -> None:
        from skyloom.core import sessions

        def boom(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("secret table name skyloom-internal")

        monkeypatch.setattr(sessions, "get_session", boom)
        r = api.call("GET", f"/sessions/{'a' * 32}")
        body = assert_error(r, 500, "internal")
        assert body == {"error": "internal", "message": "internal error",
                        "details": {"request_id": api.events[-1]["requestContext"]["requestId"]}}
        assert "secret" not in r.raw_body
        (logged,) = [x for x in submit_logs.lines() if x.get("level") == "ERROR"]
        assert "secret table name" in logged["exception"] and "Traceback" in logged["exception"]
        assert logged["correlation_id"] == body["details"]["request_id"]

    def test_invalid_response_is_a_500_not_a_400(self, api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
        from skyloom.core import sessions

        bogus: Callable[..., Any] = lambda *a, **k: {"not": "a session"}  # noqa: E731
        monkeypatch.setattr(sessions, "get_session", bogus)
        assert_error(api.call("GET", f"/sessions/{'a' * 32}"), 500, "internal")


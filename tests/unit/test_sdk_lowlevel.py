"""The low-level client: chunking to the API limits, uploads, waits and error mapping."""

from __future__ import annotations

import json

import pytest

import skyloom
from skyloom.client.http import error_from_response
from skyloom.client.lowlevel import MAX_REQUEST_BYTES, Client
from skyloom.core.protocol import MAX_TASKS_PER_REQUEST, ResultSpec
from skyloom.errors import ERRORS_BY_CODE
from skyloom.runtime.context import TaskContext
from tests.unit.test_sdk_fakeserver import FakeServer


@skyloom.handler("lowlevel.upper")
def upper(ctx: TaskContext) -> None:
    (dep,) = ctx.dependencies.values()
    ctx.send_result(ctx.expected_outputs[0], ctx.payload + dep.upper())


@pytest.fixture
def server() -> FakeServer:
    return FakeServer(auto_run=False)


@pytest.fixture
def client(server: FakeServer) -> Client:
    return Client(server)


def _session(client: Client) -> str:
    return client.create_session(name="t").session_id


def test_ten_thousand_tasks_are_ten_requests(client: Client, server: FakeServer) -> None:
    sid = _session(client)
    results = [ResultSpec(id=f"r{i}") for i in range(10_000)]
    tasks = [skyloom.TaskRequest("h", expected_outputs=[f"r{i}"]) for i in range(10_000)]
    resp = client.submit_tasks(sid, tasks, results=results)
    bodies = server.posts("/tasks")
    assert len(bodies) == 10 and all(len(b["tasks"]) == MAX_TASKS_PER_REQUEST for b in bodies)
    assert len(resp.tasks) == 10_000 and len({t.task_id for t in resp.tasks}) == 10_000
    # Each request creates exactly the results its tasks produce.
    for body in bodies:
        assert {r["id"] for r in body["results"]} == {o for t in body["tasks"] for o in t["expected_outputs"]}


def test_a_sender_that_keeps_its_ids_sends_the_same_requests_and_reads_no_answer(
        client: Client, server: FakeServer) -> None:
    sid = _session(client)
    tasks = [skyloom.TaskRequest("h", task_id=f"t{i}", expected_outputs=[f"r{i}"]) for i in range(3)]
    resp = client.submit_tasks(sid, tasks, results=[ResultSpec(id=f"r{i}") for i in range(3)], answer=False)
    assert resp.tasks == [] and resp.results == []
    (body,) = server.posts("/tasks")
    assert [t["id"] for t in body["tasks"]] == ["t0", "t1", "t2"]
    # AND the tasks are there, as a full answer would have said
    assert [t.task_id for t in client.get_tasks(sid, ["t0", "t1", "t2"])] == ["t0", "t1", "t2"]
    # AND errors still raise
    with pytest.raises(skyloom.errors.ResultNotFound):
        client.submit_tasks(sid, [skyloom.TaskRequest("h", expected_outputs=["nope"])], answer=False)


def test_a_result_travels_with_its_first_reader(client: Client, server: FakeServer) -> None:
    # GIVEN a consumer in the first chunk of a result produced by a task in the second chunk
    sid = _session(client)
    fillers = [skyloom.TaskRequest("h", expected_outputs=[f"f{i}"]) for i in range(MAX_TASKS_PER_REQUEST - 1)]
    reader = skyloom.TaskRequest("h", expected_outputs=["out"], data_dependencies=["shared"])
    producer = skyloom.TaskRequest("h", expected_outputs=["shared"])
    specs = [ResultSpec(id=i) for i in ["shared", "out", "orphan", *(f"f{i}" for i in range(len(fillers)))]]
    client.submit_tasks(sid, [*fillers, reader, producer], results=specs)
    first, second = server.posts("/tasks")
    # THEN "shared" is created with the reader, before its producer arrives
    assert "shared" in {r["id"] for r in first["results"]}
    assert [t["expected_outputs"] for t in second["tasks"]] == [["shared"]] and second.get("results", []) == []
    # AND a result nobody names is created on its own, first
    assert server.posts("/results")[0]["results"] == [{"id": "orphan"}]


def test_requests_stay_under_the_byte_limit(client: Client, server: FakeServer) -> None:
    sid = _session(client)
    payload = b"p" * (client.inline_limit - 10)
    n = 300
    client.create_results(sid, [ResultSpec(id=f"r{i}") for i in range(n)])
    client.submit_tasks(sid, [skyloom.TaskRequest("h", [f"r{i}"], payload=payload) for i in range(n)])
    bodies = server.posts("/tasks")
    assert len(bodies) > 1
    assert all(len(json.dumps(b)) < MAX_REQUEST_BYTES * 1.1 for b in bodies)


def test_large_payload_is_uploaded_and_referenced(client: Client, server: FakeServer) -> None:
    sid = _session(client)
    (out,) = client.create_results(sid, [ResultSpec(id="out")])
    client.submit_tasks(sid, [skyloom.TaskRequest("h", ["out"], payload=b"z" * (client.inline_limit + 1))])
    (task,) = server.posts("/tasks")[0]["tasks"]
    assert "payload" not in task and task["payload_result"]
    assert server.results[task["payload_result"]].data == b"z" * (client.inline_limit + 1)
    assert out.status == "Created"


def test_upload_inline_then_through_s3(client: Client, server: FakeServer) -> None:
    sid = _session(client)
    small = client.upload(sid, b"small")
    assert server.blob_calls == [] and server.results[small].status == "Completed"
    big = client.upload(sid, b"B" * (client.inline_limit + 1))
    assert [k for k, _ in server.blob_calls] == ["PUT"]
    assert server.posts("/results/complete")[0]["ids"] == [big]
    assert client.download(sid, small) == b"small"
    assert client.download(sid, big) == b"B" * (client.inline_limit + 1)
    assert [k for k, _ in server.blob_calls] == ["PUT", "GET"]


def test_upload_falls_back_to_s3_when_the_server_limit_is_lower(server: FakeServer) -> None:
    server.inline_limit = 10
    client = Client(server, inline_limit=100)
    sid = _session(client)
    rid = client.upload(sid, b"x" * 50)
    assert server.results[rid].data == b"x" * 50 and server.blob_calls[0][0] == "PUT"


def test_wait_any_returns_when_one_is_final(client: Client, server: FakeServer) -> None:
    sid = _session(client)
    client.create_results(sid, [ResultSpec(id="done", data=""), ResultSpec(id="never")])
    infos = client.wait_results(sid, ["never", "done"], timeout=5, mode="any")
    assert [i.status for i in infos] == ["Created", "Completed"]
    with pytest.raises(skyloom.WaitTimeout, match="never"):
        client.wait_results(sid, ["never"], timeout=0)


def test_session_low_level_round_trip() -> None:
    server = FakeServer()
    client = Client(server)
    with client.session() as s:
        out, data = s.create_results(["out", b"abc"])
        (tid,) = s.submit_tasks([skyloom.TaskRequest("lowlevel.upper", [out], payload=b">", data_dependencies=[data])])
        (info,) = s.wait([out], timeout=5)
        assert info.status == "Completed" and s.download(out) == b">ABC"
        (task,) = s.get_tasks([tid])
        assert task.handler == "lowlevel.upper"
    assert s.close().status == "Closed"


@pytest.mark.parametrize("cls", sorted(ERRORS_BY_CODE.values(), key=lambda c: c.code))
def test_every_error_code_maps_back_to_its_class(cls: type[skyloom.SkyloomError]) -> None:
    body = json.dumps({"error": cls.code, "message": "boom", "field": "ids"}).encode()
    err = error_from_response(cls.http_status, body, "POST /x")
    assert type(err) is cls and err.message == "boom"
    if not issubclass(cls, skyloom.TaskFailed):
        assert err.field == "ids"


@pytest.mark.parametrize(
    ("status", "cls"),
    [(403, skyloom.Unauthorized), (404, skyloom.NotFound), (413, skyloom.PayloadTooLarge), (502, skyloom.SkyloomError)],
)
def test_gateway_errors_without_a_code_map_by_status(status: int, cls: type[Exception]) -> None:
    err = error_from_response(status, b'{"message": "Forbidden"}', "GET /sessions/x")
    assert type(err) is cls and "Forbidden" in str(err) and "GET /sessions/x" in str(err)


def test_client_errors_keep_their_field(client: Client, server: FakeServer) -> None:
    server.inject.append((400, {"error": "invalid_request", "message": "bad partition", "field": "partitions"}))
    with pytest.raises(skyloom.InvalidRequest) as info:
        client.create_session(partitions=["nope"])
    assert info.value.field == "partitions"

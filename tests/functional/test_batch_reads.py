"""The submit and wait routes' own costs: reads of several tables in one BatchGetItem
(``ddb.batch_get``: a submit and a wait read their session and the results they name in one call),
a submit asked for no answer (``?answer=none``), and the options of tasks that set none merged once
per request (each task still gets the session's defaults)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from skyloom.core import ddb
from skyloom.core.models import ResultModel, SessionModel, connection
from skyloom.core.protocol import b64encode as b64

if TYPE_CHECKING:
    from skyloom.core.config import Settings
    from tests.functional.conftest import ApiClient


@pytest.fixture
def calls(aws_stack: Settings) -> Iterator[Counter[str]]:
    """DynamoDB operations the process's shared client makes, by name."""
    seen: Counter[str] = Counter()
    events = connection().client.meta.events

    def count(model: Any, **_: Any) -> None:
        seen[model.name] += 1

    events.register("before-call.dynamodb", count)
    yield seen
    events.unregister("before-call.dynamodb", count)


def test_items_of_two_tables_are_read_in_one_call(api: ApiClient, calls: Counter[str]) -> None:
    sid = api.session()
    rids = api.results(sid, [{"data": b64(b"x")}, {"data": b64(b"y")}])
    calls.clear()
    sessions, results = ddb.batch_get([(SessionModel, [sid]), (ResultModel, [*rids, "absent", rids[0]])])
    assert [s.session_id for s in sessions] == [sid]
    assert sorted(r.result_id for r in results) == sorted(rids)  # the missing key left out, the repeat read once
    assert calls == {"BatchGetItem": 1}


def test_more_keys_than_one_call_takes_are_read_in_several(api: ApiClient, calls: Counter[str]) -> None:
    sid = api.session()
    rids = api.results(sid, [{"data": b64(b"%d" % i)} for i in range(150)])
    calls.clear()
    sessions, results = ddb.batch_get([(SessionModel, [sid]), (ResultModel, rids)])
    assert len(sessions) == 1 and sorted(r.result_id for r in results) == sorted(rids)
    assert calls == {"BatchGetItem": 2}


def test_keys_left_unprocessed_are_asked_for_again(api: ApiClient, calls: Counter[str]) -> None:
    # GIVEN DynamoDB leaves a key unprocessed in its first answer (as it does when throttled)
    sid = api.session()
    rids = api.results(sid, [{"data": b64(b"x")}, {"data": b64(b"y")}])
    events = connection().client.meta.events
    held_back: list[dict[str, Any]] = []

    def throttle_once(parsed: dict[str, Any], **_: Any) -> None:
        if held_back:
            return
        table, items = next((t, i) for t, i in parsed["Responses"].items() if i)
        held_back.append(items.pop())
        key = {name: held_back[0][name] for name in ("session_id", "result_id") if name in held_back[0]}
        parsed["UnprocessedKeys"] = {table: {"Keys": [key], "ConsistentRead": True}}

    events.register("after-call.dynamodb.BatchGetItem", throttle_once)
    try:
        calls.clear()
        sessions, results = ddb.batch_get([(SessionModel, [sid]), (ResultModel, rids)])
    finally:
        events.unregister("after-call.dynamodb.BatchGetItem", throttle_once)
    # THEN the key is read in a second call and nothing is missing
    assert held_back and calls == {"BatchGetItem": 2}
    assert len(sessions) == 1 and sorted(r.result_id for r in results) == sorted(rids)


def test_two_models_of_one_table_are_refused() -> None:
    from skyloom.core.models import WorkerEnvironmentModel

    with pytest.raises(ValueError, match="table of its own"):
        ddb.batch_get([(SessionModel, ["s"]), (WorkerEnvironmentModel, ["s"])])


def test_a_submit_and_a_wait_read_their_session_with_the_results_they_name(
        api: ApiClient, calls: Counter[str]) -> None:
    sid = api.session()
    (dep,) = api.results(sid, [{"data": b64(b"1")}])
    calls.clear()
    r = api.call("POST", f"/sessions/{sid}/tasks",
                 {"results": [{"id": "out"}],
                  "tasks": [{"handler": "tests.echo", "data_dependencies": [dep], "expected_outputs": ["out"]}]})
    assert r.status == 201, r.raw_body
    assert calls["BatchGetItem"] == 1 and calls["GetItem"] == 0
    calls.clear()
    r = api.call("POST", f"/sessions/{sid}/results/wait", {"ids": [dep], "timeout": 1})
    assert r.status == 200, r.raw_body
    assert r.json["done"] is True
    assert calls == {"BatchGetItem": 1}


def test_a_wait_on_another_owners_session_is_not_found(api: ApiClient) -> None:
    sid = api.session()
    (rid,) = api.results(sid, [{"data": b64(b"1")}])
    r = api.call("POST", f"/sessions/{sid}/results/wait", {"ids": [rid], "timeout": 1}, identity=api.B)
    assert r.status == 404 and r.field == "session_id"


def test_a_submit_asked_for_no_answer_lists_only_what_the_client_cannot_know(api: ApiClient) -> None:
    sid = api.session()
    body = {"results": [{"id": "out"}, {"id": "big", "upload": True}],
            "tasks": [{"handler": "tests.echo", "id": "t1", "expected_outputs": ["out"]}]}
    r = api.call("POST", f"/sessions/{sid}/tasks?answer=none", body)
    assert r.status == 201, r.raw_body
    # THEN no task info, and of the results only the one with an upload URL
    assert r.json["tasks"] == [] and [x["result_id"] for x in r.json["results"]] == ["big"]
    assert r.json["results"][0]["upload_url"]
    # AND the task was created all the same
    got = api.call("POST", f"/sessions/{sid}/tasks/get", {"ids": ["t1"]})
    assert got.status == 200 and got.json["tasks"][0]["task_id"] == "t1"


def test_an_unknown_answer_is_refused_naming_it(api: ApiClient, db: Any) -> None:
    sid = api.session()
    before = db.snapshot()
    r = api.call("POST", f"/sessions/{sid}/tasks?answer=some",
                 {"results": [{"id": "o"}], "tasks": [{"handler": "tests.echo", "expected_outputs": ["o"]}]})
    assert r.status == 400 and r.field == "answer"
    assert db.snapshot() == before


def test_tasks_without_options_take_the_session_defaults_each_and_others_their_own(api: ApiClient) -> None:
    sid = api.session(options={"priority": 2, "max_retries": 1, "extra": {"desk": "rates"}})
    tasks = [{"handler": "tests.echo", "id": f"t{i}", "expected_outputs": [f"o{i}"]} for i in range(3)]
    tasks.insert(1, {"handler": "tests.echo", "id": "own", "expected_outputs": ["o-own"],
                     "options": {"priority": 5, "extra": {"book": "b1"}}})
    body = {"results": [{"id": t["expected_outputs"][0]} for t in tasks], "tasks": tasks}
    assert api.call("POST", f"/sessions/{sid}/tasks", body).status == 201
    got = {t["task_id"]: t["options"] for t in
           api.call("POST", f"/sessions/{sid}/tasks/get", {"ids": ["t0", "own", "t1", "t2"]}).json["tasks"]}
    assert got["t0"] == got["t1"] == got["t2"]
    assert got["t0"]["priority"] == 2 and got["t0"]["max_retries"] == 1 and got["t0"]["extra"] == {"desk": "rates"}
    assert got["own"]["priority"] == 5 and got["own"]["max_retries"] == 1
    assert got["own"]["extra"] == {"desk": "rates", "book": "b1"}

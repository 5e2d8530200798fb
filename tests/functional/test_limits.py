"""Every named limit of :mod:`skyloom.core.limits` through the API: at the limit is accepted, one over
is a 4xx naming the field (and the limit) that writes nothing.

"Accepted" for the limits on large batches (1000 ids, 1000 dependencies) means "passes validation":
the request then stops on the first missing object (404), which still proves the count was allowed
without writing thousands of items into moto.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from skyloom.core import limits
from skyloom.core.protocol import b64encode as b64
from tests.functional.test_submit_api import assert_error, nothing_written, task

if TYPE_CHECKING:
    from skyloom.core.config import Settings
    from tests.functional.conftest import ApiClient, ApiResponse, Db


def over(api: ApiClient, db: Db, method: str, path: str, body: Any, field: str, *,
         status: int = 400, error: str = "invalid_request") -> dict[str, Any]:
    """Send a request one over a limit: refused, naming ``field`` (or a key inside it, for the
    key-value options), nothing written."""
    with nothing_written(db):
        body = assert_error(api.call(method, path, body), status, error)
    assert body.get("field") == field or str(body.get("field")).startswith(f"{field}."), body
    return body


def get(api: ApiClient, path: str, params: dict[str, Any]) -> ApiResponse:
    """A GET with query parameters, as the gateway passes them (``queryStringParameters``)."""
    from skyloom_server.functions.submit.handler import handler
    from tests.functional.conftest import ApiResponse, FakeLambdaContext

    event = api.event("GET", path)
    query = {k: str(v) for k, v in params.items()}
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    out = handler(event, FakeLambdaContext())
    headers = {k.lower(): v for k, v in (out.get("headers") or {}).items()}
    for k, values in (out.get("multiValueHeaders") or {}).items():
        headers.setdefault(k.lower(), values[0])
    return ApiResponse(status=int(out["statusCode"]), headers=headers, raw_body=out.get("body") or "")


def get_over(api: ApiClient, db: Db, path: str, params: dict[str, Any], field: str) -> dict[str, Any]:
    """:func:`over` for a GET with query parameters."""
    with nothing_written(db):
        return assert_error(get(api, path, params), 400, "invalid_request", field)


def accepted(r: ApiResponse, *statuses: int) -> None:
    assert r.status in (statuses or (200, 201)), r.raw_body


# ------------------------------------------------------------------------------ option ranges
@pytest.mark.parametrize(
    ("option", "at_limit", "over_limit"),
    [
        ("priority", limits.PRIORITY.value, limits.PRIORITY.value + 1),
        ("priority", limits.PRIORITY.minimum, -1),
        ("max_retries", limits.MAX_RETRIES.value, limits.MAX_RETRIES.value + 1),
        ("max_retries", limits.MAX_RETRIES.minimum, -1),
        ("max_duration", limits.MAX_DURATION.value, limits.MAX_DURATION.value + 1),
        ("max_duration", 0.001, 0),
        ("application_name", "a" * limits.APPLICATION_NAME_LENGTH.value,
         "a" * (limits.APPLICATION_NAME_LENGTH.value + 1)),
        ("application_version", "1" * limits.APPLICATION_VERSION_LENGTH.value,
         "1" * (limits.APPLICATION_VERSION_LENGTH.value + 1)),
        ("extra", {f"k{i}": "v" for i in range(limits.OPTION_EXTRAS.value)},
         {f"k{i}": "v" for i in range(limits.OPTION_EXTRAS.value + 1)}),
        ("extra", {"k" * limits.OPTION_KEY_LENGTH.value: "v"}, {"k" * (limits.OPTION_KEY_LENGTH.value + 1): "v"}),
        ("extra", {"k": "v" * limits.OPTION_VALUE_LENGTH.value}, {"k": "v" * (limits.OPTION_VALUE_LENGTH.value + 1)}),
    ],
)
def test_option_ranges(api: ApiClient, db: Db, option: str, at_limit: Any, over_limit: Any) -> None:
    # session defaults and a task's own options share the model, hence the limits
    body = over(api, db, "POST", "/sessions", {"options": {option: over_limit}}, f"options.{option}")
    assert option in body["message"]
    sid = api.session(options={option: at_limit})
    over(api, db, "POST", f"/sessions/{sid}/tasks",
         {"results": [{"id": "o"}], "tasks": [task(["o"], options={option: over_limit})]}, f"tasks.0.options.{option}")
    accepted(api.call("POST", f"/sessions/{sid}/tasks",
                      {"results": [{"id": "o"}], "tasks": [task(["o"], options={option: at_limit})]}))


def test_extra_key_must_not_be_empty(api: ApiClient, db: Db) -> None:
    over(api, db, "POST", "/sessions", {"options": {"extra": {"": "v"}}}, "options.extra..[key]")


# ----------------------------------------------------------------------------------- strings
@pytest.mark.parametrize(
    ("field", "limit"),
    [("handler", limits.HANDLER_LENGTH), ("label", limits.LABEL_LENGTH)],
)
def test_task_strings(api: ApiClient, db: Db, field: str, limit: limits.Limit) -> None:
    sid = api.session()
    body = over(api, db, "POST", f"/sessions/{sid}/tasks",
                {"results": [{"id": "o"}], "tasks": [task(["o"], **{field: "h" * (limit.value + 1)})]},
                f"tasks.0.{field}")
    assert body["details"]["limit"] == limit.value
    accepted(api.call("POST", f"/sessions/{sid}/tasks",
                      {"results": [{"id": "o"}], "tasks": [task(["o"], **{field: "h" * limit.value})]}))


def test_names(api: ApiClient, db: Db) -> None:
    n = limits.NAME_LENGTH.value
    over(api, db, "POST", "/sessions", {"name": "n" * (n + 1)}, "name")
    sid = api.session(name="n" * n)
    over(api, db, "POST", f"/sessions/{sid}/results", {"results": [{"name": "n" * (n + 1)}]}, "results.0.name")
    api.results(sid, [{"name": "n" * n}])


def test_ids(api: ApiClient, db: Db) -> None:
    n = limits.ID_LENGTH.value
    sid = api.session()
    over(api, db, "POST", f"/sessions/{sid}/results", {"results": [{"id": "i" * (n + 1)}]}, "results.0.id")
    over(api, db, "GET", f"/sessions/{'s' * (n + 1)}", None, "session_id")
    assert api.results(sid, [{"id": "i" * n}]) == ["i" * n]
    accepted(api.call("GET", f"/sessions/{sid}/results/{'i' * n}"))


def test_partition_names_and_count(api: ApiClient, db: Db, aws_stack: Settings) -> None:
    n = limits.PARTITION_NAME_LENGTH.value
    body = over(api, db, "POST", "/sessions", {"partitions": ["p" * (n + 1)]}, "partitions.0")
    assert body["details"]["limit"] == n
    over(api, db, "POST", "/sessions", {"partitions": ["Upper"]}, "partitions.0")
    # at the length limit the name is well-formed, so the refusal is about the partition not existing
    body = over(api, db, "POST", "/sessions", {"partitions": ["p" * n]}, "partitions.0")
    assert "unknown partition" in body["message"]
    count = limits.PARTITIONS_PER_SESSION.value
    body = over(api, db, "POST", "/sessions", {"partitions": ["default"] * (count + 1)}, "partitions")
    assert body["details"]["limit"] == count
    body = over(api, db, "POST", "/sessions", {"partitions": ["default"] * count}, "partitions")
    assert "twice" in body["message"]  # the count passed; duplicates are a separate rule


# ------------------------------------------------------------------------------------ counts
def test_expected_outputs_per_task(api: ApiClient, db: Db) -> None:
    n = limits.EXPECTED_OUTPUTS_PER_TASK.value
    sid = api.session()
    outs = [f"o{i}" for i in range(n + 1)]
    over(api, db, "POST", f"/sessions/{sid}/tasks",
         {"results": [{"id": o} for o in outs], "tasks": [task(outs)]}, "tasks.0.expected_outputs")
    accepted(api.call("POST", f"/sessions/{sid}/tasks",
                      {"results": [{"id": o} for o in outs[:n]], "tasks": [task(outs[:n])]}))


def test_dependencies_per_task(api: ApiClient, db: Db) -> None:
    n = limits.DEPENDENCIES_PER_TASK.value
    sid = api.session()
    deps = [f"d{i}" for i in range(n + 1)]
    over(api, db, "POST", f"/sessions/{sid}/tasks",
         {"results": [{"id": "o"}], "tasks": [task(["o"], deps)]}, "tasks.0.data_dependencies")
    over(api, db, "POST", f"/sessions/{sid}/tasks", {"results": [{"id": "o"}], "tasks": [task(["o"], deps[:n])]},
         "tasks.0.data_dependencies", status=404, error="result_not_found")


def test_tasks_per_request(api: ApiClient, db: Db) -> None:
    n = limits.TASKS_PER_REQUEST.value
    sid = api.session()
    body = over(api, db, "POST", f"/sessions/{sid}/tasks",
                {"tasks": [task([f"o{i}"]) for i in range(n + 1)]}, "tasks")
    assert body["details"]["limit"] == n
    over(api, db, "POST", f"/sessions/{sid}/tasks", {"tasks": [task([f"o{i}"]) for i in range(n)]},
         "tasks.0.expected_outputs", status=404, error="result_not_found")


def test_results_per_request(api: ApiClient, db: Db, aws_stack: Settings) -> None:
    n = limits.RESULTS_PER_REQUEST.value
    sid = api.session()
    over(api, db, "POST", f"/sessions/{sid}/results", {"results": [{} for _ in range(n + 1)]}, "results")
    # n results pass the count; the last one's inline data is too large, so nothing is written
    too_big = b64(b"x" * (aws_stack.inline_max_bytes + 1))
    over(api, db, "POST", f"/sessions/{sid}/results", {"results": [{} for _ in range(n - 1)] + [{"data": too_big}]},
         f"results.{n - 1}.data", status=413, error="payload_too_large")


@pytest.mark.parametrize(
    "suffix", ["/results/get", "/results/wait", "/results/complete", "/tasks/get", "/tasks/cancel"]
)
def test_ids_per_request(api: ApiClient, db: Db, suffix: str) -> None:
    n = limits.IDS_PER_REQUEST.value
    sid = api.session()
    body = over(api, db, "POST", f"/sessions/{sid}{suffix}", {"ids": [f"i{k}" for k in range(n + 1)]}, "ids")
    assert body["details"]["limit"] == n
    r = api.call("POST", f"/sessions/{sid}{suffix}", {"ids": [f"i{k}" for k in range(n)]})
    assert r.status == 404, r.raw_body  # validated; the ids just do not exist


def test_inline_data_at_the_limit(api: ApiClient, aws_stack: Settings) -> None:
    sid = api.session()
    exact = b64(b"x" * aws_stack.inline_max_bytes)
    api.results(sid, [{"id": "r", "data": exact}])
    accepted(api.call("POST", f"/sessions/{sid}/tasks",
                      {"results": [{"id": "o"}], "tasks": [task(["o"], payload=exact)]}))


# ------------------------------------------------------------------------------- reading side
def test_wait_seconds(api: ApiClient, db: Db) -> None:
    sid = api.session()
    api.results(sid, [{"id": "r", "data": b64(b"1")}])
    over(api, db, "POST", f"/sessions/{sid}/results/wait", {"ids": ["r"], "timeout": limits.WAIT_SECONDS.value + 0.5},
         "timeout")
    accepted(api.call("POST", f"/sessions/{sid}/results/wait", {"ids": ["r"], "timeout": limits.WAIT_SECONDS.value}))


@pytest.mark.parametrize(
    ("path", "limit"),
    [("/sessions", limits.PAGE_SIZE), ("/sessions/{sid}/tasks", limits.PAGE_SIZE),
     ("/sessions/{sid}/results", limits.PAGE_SIZE), ("/sessions/{sid}/events", limits.EVENTS_PER_PAGE)],
)
def test_page_sizes(api: ApiClient, db: Db, path: str, limit: limits.Limit) -> None:
    sid = api.session()
    url = path.format(sid=sid)
    body = get_over(api, db, url, {"limit": limit.value + 1}, "limit")
    assert body["details"]["limit"] == limit.value
    get_over(api, db, url, {"limit": 0}, "limit")
    accepted(get(api, url, {"limit": limit.value}))


@pytest.mark.parametrize(
    ("query", "limit"),
    [
        ("next", limits.PAGE_TOKEN_LENGTH),
        ("status", limits.STATUS_FILTER_LENGTH),
        ("partition", limits.PARTITION_NAME_LENGTH),
        ("handler", limits.HANDLER_LENGTH),
    ],
)
def test_query_strings(api: ApiClient, db: Db, query: str, limit: limits.Limit) -> None:
    sid = api.session()
    body = get_over(api, db, f"/sessions/{sid}/tasks", {query: "a" * (limit.value + 1)}, query)
    assert body["details"]["limit"] == limit.value
    r = get(api, f"/sessions/{sid}/tasks", {query: "a" * limit.value})
    # at the limit the length is fine; a made-up token or state name is refused for what it is
    assert r.status == 200 or "at most" not in r.json["message"], r.raw_body


def test_parent_filter_is_an_id(api: ApiClient, db: Db) -> None:
    sid = api.session()
    get_over(api, db, f"/sessions/{sid}/tasks", {"parent": "p" * (limits.ID_LENGTH.value + 1)}, "parent")
    accepted(get(api, f"/sessions/{sid}/tasks", {"parent": "p" * limits.ID_LENGTH.value}))


def test_events_cursor_length(api: ApiClient, db: Db) -> None:
    sid = api.session()
    get_over(api, db, f"/sessions/{sid}/events", {"after": "a" * (limits.PAGE_TOKEN_LENGTH.value + 1)}, "after")

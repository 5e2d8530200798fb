"""The high-level SDK (@task, futures, sessions) against the in-memory API."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import skyloom
from skyloom.client import backend
from skyloom.client import session as session_module
from skyloom.client.callspec import decode
from skyloom.client.functions import FUNCTION_INLINE_MAX, PAYLOAD_INLINE_MAX
from skyloom.client.lowlevel import Client
from skyloom.runtime.context import TaskContext
from tests.unit.test_sdk_fakeserver import FakeServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "portfolio.py"


# ----------------------------------------------------------------------------- task functions
@skyloom.task
def add(a: int, b: int) -> int:
    return a + b


@skyloom.task
def total(*values: int) -> int:
    return sum(values)


@skyloom.task
def combine(a: int, items: list[int], named: dict[str, int]) -> int:
    return a + sum(items) + sum(named.values())


@skyloom.task(max_retries=0)
def explode(message: str) -> int:
    raise ValueError(message)


@skyloom.task(max_retries=0)
def fan_out(n: int):  # type: ignore[no-untyped-def]
    return total.submit(*[add.submit(i, i) for i in range(n)])


@skyloom.task(max_retries=0)
def returns_structure():  # type: ignore[no-untyped-def]
    return [add.submit(1, 2)]


@skyloom.task(max_retries=0)
def waits_inside() -> int:
    return add.submit(1, 2).result()


@skyloom.task(priority=3, max_retries=1)
def inherit_parent() -> int:
    # A subtask with its own override and one without.
    add.options(max_duration=9).submit(1, 1)
    add.submit(2, 2)
    return 0


@skyloom.task(max_retries=0)
def first_fails_then_used():  # type: ignore[no-untyped-def]
    bad = explode.submit("root cause")
    return add.submit(bad, 1)


@skyloom.task
def size_of(blob: bytes) -> int:
    return len(blob)


@skyloom.task
def make_bytes(n: int) -> bytes:
    return b"x" * n


@skyloom.task(max_retries=0)
def uses_big_helper(x: int) -> int:
    return _BIG_TABLE[x % len(_BIG_TABLE)]


_BIG_TABLE = list(range(3000))  # captured by value with the function: its pickle exceeds 2 KiB


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def client(server: FakeServer) -> Iterator[Client]:
    c = Client(server)
    backend.set_fallback(c.default_session)
    yield c
    c.close()
    backend.set_fallback(None)


def tasks_sent(server: FakeServer) -> list[dict[str, Any]]:
    return [t for body in server.posts("/tasks") for t in body["tasks"]]


# ------------------------------------------------------------------------------------ basics
def test_plain_call_runs_locally_without_a_client() -> None:
    assert add(2, 3) == 5
    assert add.__name__ == "add" and add.__doc__ is None


def test_submit_without_connection_explains_how_to_connect() -> None:
    backend.set_fallback(None)
    with pytest.raises(RuntimeError, match=r"skyloom\.connect\(\)"):
        add.submit(1, 2)


def test_submit_and_result(client: Client) -> None:
    f = add.submit(2, 3)
    assert isinstance(f, skyloom.Future)
    assert f.result() == 5
    assert f.done()


def test_futures_as_arguments_become_dependencies(client: Client, server: FakeServer) -> None:
    # GIVEN futures passed directly, in a list and in a dict
    a, b, c = add.submit(1, 1), add.submit(2, 2), add.submit(3, 3)
    f = combine.submit(a, [b, 10], {"c": c})
    # THEN the consuming task depends on their results and their values arrive as plain values
    assert f.result() == 2 + 4 + 10 + 6
    task = server.task_of_output(f.id)
    assert set(task.deps) >= {a.id, b.id, c.id}
    header = decode(task.payload)
    assert set(header.dependencies) == set(task.deps)
    # AND the client downloaded nothing per result: values come only in its waits' answers
    assert [p for m, p, _ in server.calls if p.endswith("/data")] == []


def test_the_same_future_twice_is_one_dependency(client: Client, server: FakeServer) -> None:
    a = add.submit(1, 1)
    f = total.submit(a, a, a)
    assert f.result() == 6
    assert server.task_of_output(f.id).deps.count(a.id) == 1


def test_results_are_cached_on_the_future(client: Client, server: FakeServer) -> None:
    f = add.submit(1, 1)
    assert f.result() == 2
    n = len(server.calls)
    assert f.result() == 2 and f.done()
    assert len(server.calls) == n


# ---------------------------------------------------------------------------------- batching
def test_ten_thousand_submissions_are_a_handful_of_requests(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # Batches by size only: on a loaded machine the submitting loop can pause past the linger, and
    # what a pause sends early is the linger's own test (below), not this one's.
    monkeypatch.setattr(session_module, "LINGER_SECONDS", 60.0)
    monkeypatch.setattr(session_module, "MAX_LINGER_SECONDS", 60.0)
    server = FakeServer(auto_run=False)
    c = Client(server)
    with c.session() as s:
        futures = [add.submit(i, i) for i in range(10_000)]
    assert len({f.id for f in futures}) == 10_000
    task_posts = server.posts("/tasks")
    assert sum(len(b["tasks"]) for b in task_posts) == 10_000
    assert len(task_posts) <= 10_000 // session_module.FLUSH_AT_TASKS + 2
    # every result is created in the same request as the task producing it
    for body in task_posts:
        made = {r["id"] for r in body["results"]}
        assert all(set(t["expected_outputs"]) <= made | set(server.results) for t in body["tasks"])
    assert s.session_id in server.sessions


def test_a_lone_submission_is_sent_after_a_short_linger(client: Client, server: FakeServer) -> None:
    add.submit(1, 2)
    time.sleep(session_module.LINGER_SECONDS * 5)
    assert len(server.posts("/tasks")) == 1


def test_a_lone_put_is_sent_after_a_short_linger(client: Client, server: FakeServer) -> None:
    s = client.session()
    f = s.put({"curve": [1.0, 2.0]})
    time.sleep(session_module.LINGER_SECONDS * 5)
    assert [r["id"] for body in server.posts("/results") for r in body["results"]] == [f.id]
    assert f.result() == {"curve": [1.0, 2.0]}


def test_closing_the_client_sends_the_buffer_and_forgets_the_default(server: FakeServer) -> None:
    c = Client(server)
    backend.set_fallback(c.default_session)
    with c.session():
        add.submit(1, 1)
        c.close()
        assert len(server.posts("/tasks")) == 1
    assert backend.fallback() is None


def test_result_flushes_what_is_buffered(client: Client, server: FakeServer) -> None:
    with client.session() as s:
        f = add.submit(1, 2)
        assert not server.posts("/tasks")
        assert f.result() == 3
        assert s.session_id == f.session_id


def test_dependency_order_survives_batches(client: Client, server: FakeServer, monkeypatch: Any) -> None:
    # GIVEN tiny batches, so a chain crosses many requests
    monkeypatch.setattr(session_module, "FLUSH_AT_TASKS", 3)
    f = add.submit(0, 0)
    for i in range(20):
        f = add.submit(f, i)
    assert f.result() == sum(range(20))
    assert len(server.posts("/tasks")) >= 6


# ------------------------------------------------------------------------------------ options
def test_options_merge_decorator_then_overrides(client: Client, server: FakeServer) -> None:
    explode.options(priority=7, extra={"team": "risk"}).submit("x")
    client.flush()
    (task,) = tasks_sent(server)
    assert task["options"] == {"max_retries": 0, "priority": 7, "extra": {"team": "risk"}}


def test_session_defaults_go_to_the_session_not_each_task(client: Client, server: FakeServer) -> None:
    with client.session(max_retries=4, partition="gpu", name="eod") as s:
        add.submit(1, 2)
    body = server.posts("/sessions")[-1]
    assert body["options"]["max_retries"] == 4 and body["options"]["partition"] == "gpu"
    assert body["name"] == "eod"
    (task,) = tasks_sent(server)
    assert task.get("options", {}) == {}
    assert s.info.name == "eod"


def test_subtasks_inherit_the_parents_effective_options(client: Client, server: FakeServer) -> None:
    assert inherit_parent.submit().result() == 0
    subtasks = [t for t in server.tasks.values() if t.parent is not None]
    options = sorted((t.options for t in subtasks), key=len)
    assert options[0] == {"priority": 3, "max_retries": 1}
    assert options[1] == {"priority": 3, "max_retries": 1, "max_duration": 9.0}


def test_invalid_option_fails_at_decoration() -> None:
    with pytest.raises(ValueError, match="priority"):
        skyloom.task(priority=42)


# --------------------------------------------------------------------------- decorator misuse
class _Thing:
    def method(self) -> int:
        return 1


async def _coro() -> int:
    return 1


def _gen() -> Iterator[int]:
    yield 1


@pytest.mark.parametrize(
    ("target", "fix"),
    [
        (_Thing, "module-level function"),
        (_Thing.method, "pass the object as an argument"),
        (_coro, "asyncio.run"),
        (_gen, "return a list"),
        (len, "wrap it"),
        (add, r"\.options\(\.\.\.\)"),
    ],
)
def test_decorator_misuse_says_how_to_fix_it(target: Any, fix: str) -> None:
    with pytest.raises(TypeError, match=fix):
        skyloom.task(target)


def test_decorator_with_a_positional_name_says_options_are_keywords() -> None:
    with pytest.raises(TypeError, match="keyword-only"):
        skyloom.task("price")  # type: ignore[call-overload]


def test_options_reject_unknown_names() -> None:
    with pytest.raises(TypeError):
        add.options(priorty=1)  # type: ignore[call-arg]
    asyncio.run(_coro())  # keep the coroutine helper honest


# ----------------------------------------------------------------------------------- failures
def test_failure_raises_task_failed_with_remote_traceback(client: Client) -> None:
    f = explode.submit("bad trade 42")
    with pytest.raises(skyloom.TaskFailed) as info:
        f.result()
    err = info.value
    # Native: the task's own type too (tests/unit/test_native_exceptions.py), TaskFailed first.
    assert isinstance(err, ValueError) and type(err).__mro__[1] is skyloom.TaskFailed
    assert err.remote_type == "ValueError" and err.attempts == 1 and err.handler == "skyloom.call"
    assert "bad trade 42" in str(err) and err.task_id in str(err)
    assert "in explode" in (err.remote_traceback or "") and "Remote traceback" in str(err)
    assert f.done()


def test_dependents_of_a_failure_raise_dependency_aborted(client: Client, server: FakeServer) -> None:
    bad = explode.submit("root cause")
    after = add.submit(bad, 1)
    with pytest.raises(skyloom.DependencyAborted, match="root cause") as info:
        after.result()
    root = server.task_of_output(bad.id)
    assert info.value.task_id == root.task_id and root.task_id in str(info.value)
    assert info.value.remote_type == "ValueError" and "in explode" in str(info.value)


def test_failure_inside_a_dynamic_graph_reaches_the_top(client: Client) -> None:
    with pytest.raises(skyloom.DependencyAborted, match="root cause"):
        first_fails_then_used.submit().result()


def test_retries_are_counted(client: Client, server: FakeServer) -> None:
    f = explode.options(max_retries=2).submit("flaky")
    with pytest.raises(skyloom.TaskFailed) as info:
        f.result()
    assert info.value.attempts == 3


def test_returning_futures_in_a_structure_is_a_type_error(client: Client) -> None:
    with pytest.raises(skyloom.TaskFailed, match="return one future") as info:
        returns_structure.submit().result()
    assert info.value.remote_type and info.value.remote_type.endswith("ReturnValueError")


def test_waiting_inside_a_task_explains_delegation(client: Client) -> None:
    with pytest.raises(skyloom.TaskFailed, match="Return the future"):
        waits_inside.submit().result()


def test_future_nested_in_an_object_cannot_be_pickled(client: Client) -> None:
    class Box:
        def __init__(self, f: Any):
            self.f = f

    with pytest.raises(TypeError, match="data dependency only when passed directly"):
        add.submit(Box(add.submit(1, 1)), 1)


def test_wait_timeout(client: Client) -> None:
    server = FakeServer(auto_run=False)
    c = Client(server)
    with c.session():
        f = add.submit(1, 1)
    with pytest.raises(skyloom.WaitTimeout, match="not final"):
        f.result(timeout=0)
    assert not f.done()


def test_a_rejected_batch_fails_its_futures(client: Client, server: FakeServer) -> None:
    with client.session() as s:
        f = add.submit(1, 1)
        server.inject.append((409, {"error": "session_closed", "message": "session is Closed"}))
        with pytest.raises(skyloom.SessionClosed):
            f.result()
        assert f.done()
        s.flush()  # already reported through the future


def test_a_background_send_error_is_raised_on_flush(client: Client, server: FakeServer) -> None:
    s = client.session()
    server.inject.append((400, {"error": "invalid_request", "message": "bad", "field": "tasks"}))
    with s:
        add.submit(1, 1)
        time.sleep(session_module.LINGER_SECONDS * 5)
        with pytest.raises(skyloom.InvalidRequest) as info:
            s.flush()
    assert info.value.field == "tasks"


# ------------------------------------------------------------------------------ dynamic graphs
def test_delegation_hands_the_output_to_the_subtask(client: Client, server: FakeServer) -> None:
    f = fan_out.submit(5)
    assert f.result() == sum(2 * i for i in range(5))
    parent = server.task_of_output(f.id)
    assert parent.handler == "skyloom.call" and parent.status == "Completed"
    owner = server.results[f.id].owner
    assert owner is not None and server.tasks[owner].parent == parent.task_id


def test_portfolio_example(client: Client) -> None:
    module = _load_example()
    trades = module.make_trades()
    value = module.portfolio.submit(trades).result()
    assert value == pytest.approx(module.sequential(trades), rel=1e-12)


def test_fan_out_of_two_hundred(client: Client, server: FakeServer) -> None:
    assert fan_out.submit(200).result() == sum(2 * i for i in range(200))
    assert len(server.tasks) == 202


# ------------------------------------------------------------------------ data and functions
def test_large_function_is_stored_once_per_session(client: Client, server: FakeServer) -> None:
    with client.session():
        futures = [uses_big_helper.submit(i) for i in range(5)]
    assert [f.result() for f in futures] == [0, 1, 2, 3, 4]
    tasks = [server.task_of_output(f.id) for f in futures]
    blob = {d for t in tasks for d in t.deps}
    assert len(blob) == 1
    assert len(server.results[blob.pop()].data or b"") > FUNCTION_INLINE_MAX
    assert all(len(t.payload) < 1024 for t in tasks)


def test_large_arguments_travel_as_a_result(client: Client, server: FakeServer) -> None:
    big = b"y" * (PAYLOAD_INLINE_MAX * 2)
    f = size_of.submit(big)
    assert f.result() == len(big)
    task = server.task_of_output(f.id)
    assert len(task.payload) < 1024 and decode(task.payload).spec_index is not None


def test_large_result_is_downloaded_from_a_presigned_url(client: Client, server: FakeServer) -> None:
    assert len(make_bytes.submit(100_000).result()) == 100_000
    assert any(kind == "GET" and url.startswith("fake://download") for kind, url in server.blob_calls)
    assert make_bytes.submit(10).result() == b"x" * 10


def test_put_value_shared_by_several_tasks(client: Client, server: FakeServer) -> None:
    with client.session() as s:
        data = s.put(list(range(100)))
        futures = [size_of.submit(data) for _ in range(3)]
    assert [f.result() for f in futures] == [100, 100, 100]
    readers = [server.task_of_output(f.id) for f in futures]
    assert all(data.id in t.deps for t in readers)
    assert data.result() == list(range(100))


def test_futures_of_another_session_are_refused(client: Client) -> None:
    with client.session():
        f = add.submit(1, 1)
    with client.session(), pytest.raises(ValueError, match="same session"):
        add.submit(f, 1)


def test_task_context_is_the_backend_inside_a_task() -> None:
    from skyloom.runtime.outcome import TaskInput

    ctx = TaskContext(TaskInput("t", "s", "skyloom.call", b"", {}, ["out"], {"priority": 2}))
    with ctx.active():
        f = add.submit(1, 2)
    assert f.backend is ctx
    ctx.send_result("out", b"done")
    outcome = ctx.outcome()
    (staged,) = outcome.staged_tasks
    assert staged.handler == "skyloom.call" and staged.expected_outputs == [f.id]
    assert staged.options == {"priority": 2}
    assert f.id in {r.result_id for r in outcome.staged_results}


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("skyloom_example_portfolio", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_burst_sends_its_first_tasks_while_the_rest_are_still_being_submitted(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # Batches by size only past the first: a loaded machine's pauses are the linger's own test.
    monkeypatch.setattr(session_module, "LINGER_SECONDS", 60.0)
    monkeypatch.setattr(session_module, "MAX_LINGER_SECONDS", 60.0)
    server = FakeServer(auto_run=False)
    c = Client(server)
    with c.session():
        first = [add.submit(i, i) for i in range(session_module.FIRST_FLUSH_AT_TASKS)]
        deadline = time.monotonic() + 10
        while not server.posts("/tasks") and time.monotonic() < deadline:
            time.sleep(0.01)
        # the first ones went out on their own, before the burst was over
        assert [t["expected_outputs"] for t in server.posts("/tasks")[0]["tasks"]] == [[f.id] for f in first]
        rest = [add.submit(i, i) for i in range(100)]
        assert len(server.posts("/tasks")) == 1  # the rest wait for the burst's end, as before
    posts = server.posts("/tasks")
    assert len(posts) == 2
    assert [t["expected_outputs"] for t in posts[1]["tasks"]] == [[f.id] for f in rest]

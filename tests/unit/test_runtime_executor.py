"""The worker-side runtime: run_task, the task context, delegation and the handler registry."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import cloudpickle
import pytest

import skyloom
from skyloom.client.callspec import decode
from skyloom.client.specs import TaskRequest
from skyloom.errors import InvalidRequest, ResultAlreadyWritten
from skyloom.runtime import registry
from skyloom.runtime.context import TaskContext, current_context
from skyloom.runtime.executor import run_task
from skyloom.runtime.outcome import TaskInput, TaskOutcome


# ------------------------------------------------------------------------------- test handlers
@skyloom.handler("test.echo")
def echo(ctx: TaskContext) -> None:
    ctx.send_result(ctx.expected_outputs[0], ctx.payload + b"".join(ctx.dependencies.values()))


@skyloom.handler("test.split")
def split(ctx: TaskContext) -> None:
    # Two leaves, and a join that takes over our output.
    left, right = ctx.create_results(["left", "right"])
    ctx.submit_tasks(
        [
            TaskRequest("test.echo", expected_outputs=[left], payload=b"L"),
            TaskRequest("test.echo", expected_outputs=[right], payload=b"R", options=skyloom.TaskOptions(priority=9)),
            TaskRequest("test.echo", expected_outputs=ctx.expected_outputs, data_dependencies=[left, right]),
        ]
    )


@skyloom.handler("test.forgets")
def forgets(ctx: TaskContext) -> None:
    ctx.create_results([b"side data"])


@skyloom.handler("test.raises")
def raises(ctx: TaskContext) -> None:
    _deep_helper(ctx.payload.decode())


def _deep_helper(message: str) -> None:
    raise KeyError(message)


@skyloom.handler("test.exits")
def exits(ctx: TaskContext) -> None:
    raise SystemExit(3)


@skyloom.handler("test.whoami")
def whoami(ctx: TaskContext) -> None:
    ctx.send_result(ctx.expected_outputs[0], current_context().task_id.encode())


@skyloom.handler("test.threaded")
def threaded(ctx: TaskContext) -> None:
    # A thread started by user code does not inherit contextvars; it still stages into the task.
    worker = threading.Thread(target=lambda: double.submit(1))
    worker.start()
    worker.join()
    ctx.send_result(ctx.expected_outputs[0], b"ok")


@skyloom.task
def double(x: int) -> int:
    return 2 * x


@skyloom.task
def plus(*xs: int) -> int:
    return sum(xs)


def _call_input(fn: Any, *args: Any, deps: dict[str, bytes] | None = None, **options: Any) -> TaskInput:
    """A TaskInput for ``fn(*args)`` built the way a client would build it."""
    from skyloom.client.functions import _submit

    ctx = TaskContext(TaskInput("client", "s1", "skyloom.call", b"", {}, ["x"], {}))
    future = _submit(ctx, fn, args, {})
    (task,) = ctx._tasks
    extra = {r.result_id: r.data for r in ctx._results.values() if r.data is not None}
    return TaskInput(
        task_id="t1",
        session_id="s1",
        handler=task.handler,
        payload=task.payload,
        dependencies={**extra, **(deps or {})},
        expected_outputs=[future.id],
        options=options,
    )


def _input(handler: str, payload: bytes = b"", outputs: tuple[str, ...] = ("out",), **kw: Any) -> TaskInput:
    return TaskInput("t1", "s1", handler, payload, kw.pop("deps", {}), list(outputs), kw.pop("options", {}), **kw)


# ---------------------------------------------------------------------------------------- tests
def test_send_result_becomes_an_output() -> None:
    outcome = run_task(_input("test.echo", b"hi", deps={"d": b"!"}))
    assert outcome.ok and outcome.outputs == {"out": b"hi!"}
    assert pickle.loads(pickle.dumps(outcome)) == outcome


def test_context_is_current_only_while_running() -> None:
    assert run_task(_input("test.whoami")).outputs == {"out": b"t1"}
    with pytest.raises(RuntimeError, match="inside a running task"):
        current_context()


def test_threads_of_a_task_submit_into_it() -> None:
    outcome = run_task(_input("test.threaded"))
    assert outcome.ok and [t.handler for t in outcome.staged_tasks] == ["skyloom.call"]


def test_staged_subtasks_and_delegation_by_a_low_level_handler() -> None:
    outcome = run_task(_input("test.split", options={"priority": 1, "max_retries": 4}))
    assert outcome.ok and outcome.outputs == {}
    left, right = [r.result_id for r in outcome.staged_results]
    assert [r.name for r in outcome.staged_results] == ["left", "right"]
    leaf_l, leaf_r, join = outcome.staged_tasks
    assert join.expected_outputs == ["out"] and join.data_dependencies == [left, right]
    # Subtasks inherit the parent's effective options, except what they set themselves.
    assert leaf_l.options == {"priority": 1, "max_retries": 4}
    assert leaf_r.options == {"priority": 9, "max_retries": 4}


def test_missing_output_is_a_non_retryable_error_naming_it() -> None:
    outcome = run_task(_input("test.forgets", outputs=("a", "b")))
    assert outcome.error is not None and not outcome.error.retryable
    assert "a, b" in outcome.error.message and "OutputsNotCovered" in outcome.error.type
    assert outcome.staged_tasks == [] and outcome.staged_results == []


def test_exception_becomes_remote_error_with_user_traceback() -> None:
    outcome = run_task(_input("test.raises", b"trade-7"))
    err = outcome.error
    assert err is not None and err.retryable
    assert err.type == "KeyError" and err.message == "'trade-7'"
    assert "_deep_helper" in err.traceback and "in raises" in err.traceback
    assert "skyloom/runtime/executor.py" not in err.traceback
    assert outcome.outputs == {}


def test_system_exit_fails_the_task_instead_of_the_child() -> None:
    outcome = run_task(_input("test.exits"))
    assert outcome.error is not None and outcome.error.type == "SystemExit"


def test_unknown_handler_is_non_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    outcome = run_task(_input("nobody.home"))
    assert outcome.error is not None and not outcome.error.retryable
    assert "nobody.home" in outcome.error.message and registry.ENV_MODULES in outcome.error.message


def test_handler_modules_are_imported_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_imported", False)
    monkeypatch.setattr(registry, "_import_errors", [])
    monkeypatch.setenv(registry.ENV_MODULES, "json, skyloom_no_such_module")
    outcome = run_task(_input("still.unknown"))
    assert outcome.error is not None and not outcome.error.retryable
    assert "skyloom_no_such_module" in outcome.error.message


def test_handler_registration_rules() -> None:
    with pytest.raises(TypeError, match="needs the handler's name"):
        skyloom.handler("")
    with pytest.raises(ValueError, match="already registered"):
        skyloom.handler("test.echo")(lambda ctx: None)
    assert skyloom.handler("test.echo")(echo) is echo  # the same function again is fine
    registry.resolve_handler("skyloom.call")
    assert "skyloom.call" in registry.registered()


# ------------------------------------------------------------------------------ skyloom.call
def test_call_runs_the_function_and_pickles_its_value() -> None:
    outcome = run_task(_call_input(double, 21))
    assert outcome.ok
    (value,) = outcome.outputs.values()
    assert cloudpickle.loads(value) == 42


def test_call_replaces_dependency_refs_with_values() -> None:
    from skyloom.client.futures import Future

    ctx = TaskContext(TaskInput("client", "s1", "skyloom.call", b"", {}, ["x"], {}))
    dep = Future("dep1", ctx)
    inp = _call_input(plus, dep, 1, dep, deps={"dep1": cloudpickle.dumps(10)})
    assert decode(inp.payload).dependencies.count("dep1") == 1
    (value,) = run_task(inp).outputs.values()
    assert cloudpickle.loads(value) == 21


def test_returning_a_future_delegates_and_rewrites_references() -> None:
    # GIVEN a function that submits a, b = f(a), and returns a (the one b reads)
    @skyloom.task
    def chain() -> Any:
        a = double.submit(1)
        plus.submit(a, 1)
        return a

    inp = _call_input(chain)
    (out,) = inp.expected_outputs
    outcome = run_task(inp)
    assert outcome.ok and outcome.outputs == {}
    producer, reader = outcome.staged_tasks
    # THEN the producer now makes our output, the reader reads it, and the old result is gone
    assert producer.expected_outputs == [out]
    assert out in reader.data_dependencies
    assert out in decode(reader.payload).dependencies
    staged_ids = {r.result_id for r in outcome.staged_results}
    assert out not in staged_ids
    assert all(d in staged_ids | {out} | set(inp.dependencies) for d in reader.data_dependencies)


def test_delegated_payload_still_runs() -> None:
    @skyloom.task
    def chain() -> Any:
        return double.submit(5)

    outcome = run_task(_call_input(chain))
    (producer,) = outcome.staged_tasks
    # The delegated producer runs like any call and produces the parent's output.
    blobs = {r.result_id: r.data for r in outcome.staged_results if r.data is not None}
    sub = run_task(TaskInput("t2", "s1", producer.handler, producer.payload, blobs, producer.expected_outputs, {}))
    assert cloudpickle.loads(sub.outputs[producer.expected_outputs[0]]) == 10


def test_a_failed_attempt_stages_nothing() -> None:
    @skyloom.task
    def fails_after_submitting() -> int:
        double.submit(1)
        raise RuntimeError("late failure")

    outcome = run_task(_call_input(fails_after_submitting))
    assert outcome.error is not None and "late failure" in outcome.error.message
    assert outcome.staged_tasks == [] and outcome.staged_results == []


def test_unpicklable_call_spec_is_non_retryable() -> None:
    outcome = run_task(_input("skyloom.call", b"not a call spec"))
    assert outcome.error is not None and not outcome.error.retryable
    assert "call spec" in outcome.error.message


# --------------------------------------------------------------------------------- context
def _ctx(outputs: tuple[str, ...] = ("out",)) -> TaskContext:
    return TaskContext(_input("any", outputs=outputs))


def test_context_refuses_double_and_foreign_writes() -> None:
    ctx = _ctx()
    ctx.send_result("out", b"1")
    with pytest.raises(ResultAlreadyWritten):
        ctx.send_result("out", b"2")
    with pytest.raises(InvalidRequest, match="neither an expected output"):
        ctx.send_result("someone-elses", b"x")


def test_context_refuses_two_producers_for_one_output() -> None:
    ctx = _ctx()
    ctx.submit_tasks([TaskRequest("h", expected_outputs=["out"])])
    with pytest.raises(InvalidRequest, match="already has a producer"):
        ctx.submit_tasks([TaskRequest("h", expected_outputs=["out"])])
    with pytest.raises(InvalidRequest, match="produced by subtask"):
        ctx.send_result("out", b"x")
    (mine,) = ctx.create_results(["mine"])
    with pytest.raises(InvalidRequest, match="already has a producer"):
        ctx.submit_tasks([TaskRequest("h", expected_outputs=[mine]), TaskRequest("h", expected_outputs=[mine])])


def test_context_can_fill_a_result_it_created() -> None:
    ctx = _ctx()
    (r,) = ctx.create_results(["later"])
    ctx.send_result(r, b"value")
    ctx.send_result("out", b"x")
    outcome: TaskOutcome = ctx.outcome()
    assert [(s.result_id, s.name, s.data) for s in outcome.staged_results] == [(r, "later", b"value")]


def test_blob_ref_reuses_identical_inputs_and_staged_blobs() -> None:
    ctx = TaskContext(_input("any", deps={"fn-blob": b"F" * 100}))
    assert ctx.blob_ref(b"F" * 100) == "fn-blob"
    first = ctx.blob_ref(b"G" * 100)
    assert ctx.blob_ref(b"G" * 100) == first


def test_waiting_on_a_staged_future_explains_why_not() -> None:
    from skyloom.client.futures import Future

    ctx = _ctx()
    with pytest.raises(RuntimeError, match="Return the future"):
        Future("r", ctx).result()
    with pytest.raises(RuntimeError, match="Return the future"):
        Future("r", ctx).done()

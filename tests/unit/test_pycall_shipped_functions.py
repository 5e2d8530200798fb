"""A function shipped by value (stored as a result every task of it depends on) is unpickled once
per process, and a task that submits it again ships the very bytes it received, so that the
subtasks reuse the stored function instead of a copy per task (issue 17: the tree sum).

The functions here live in a test module, not an installed package: they travel by value, as a
user's script's functions do.
"""

from __future__ import annotations

from typing import Any

import cloudpickle
import pytest

import skyloom
from skyloom.client.callspec import CallSpec, DependencyRef, encode
from skyloom.client.functions import FUNCTION_INLINE_MAX, _Shipped
from skyloom.core.protocol import CALL_HANDLER
from skyloom.runtime import pycall
from skyloom.runtime.context import TaskContext
from skyloom.runtime.outcome import TaskInput

#: Makes the function's pickle larger than what rides inline in a payload, so that it is stored as
#: a result of its own, as a script's function usually is.
_PADDING = "x" * (2 * FUNCTION_INLINE_MAX)


@skyloom.task
def twice(x: int) -> int:
    """Doubles ``x``."""
    return 2 * x + 0 * len(_PADDING)


@skyloom.task
def less_one(x: int) -> int:
    return x - 1 + 0 * len(_PADDING)


def _context(function_id: str, function: bytes, *args: Any, task_id: str = "t1", session_id: str = "s1") -> TaskContext:
    body = cloudpickle.dumps(CallSpec(DependencyRef(0), args, {}))
    return TaskContext(TaskInput(task_id=task_id, session_id=session_id, handler=CALL_HANDLER,
                                 payload=encode(body, [function_id]), dependencies={function_id: function},
                                 expected_outputs=["out"], options={}))


@pytest.fixture
def shipped() -> bytes:
    data = _Shipped.of(twice).function
    assert len(data) > FUNCTION_INLINE_MAX, "the test function must be shipped as a result of its own"
    return data


def test_a_function_is_unpickled_once_per_result(shipped: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN two tasks of the same stored function, and a fresh cache
    monkeypatch.setattr(pycall, "_functions", type(pycall._functions)())
    loads: list[str] = []
    real = pycall._unpickle

    def counting(data: bytes, what: str, *, is_value: bool = False) -> Any:
        loads.append(what)
        return real(data, what, is_value=is_value)

    monkeypatch.setattr(pycall, "_unpickle", counting)
    # WHEN each is loaded
    fn1, args1, _ = pycall.load_call(_context("f1", shipped, 3))
    fn2, args2, _ = pycall.load_call(_context("f1", shipped, 4, task_id="t2"))
    # THEN the function was unpickled once, and each call has its own arguments
    assert fn1 is fn2 and (fn1(*args1), fn2(*args2)) == (6, 8)
    assert loads.count("the function") == 1


def test_another_stored_function_is_unpickled_on_its_own(shipped: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pycall, "_functions", type(pycall._functions)())
    fn1, _, _ = pycall.load_call(_context("f1", shipped, 1))
    fn2, _, _ = pycall.load_call(_context("f2", shipped, 1))
    assert fn1 is not fn2


def test_a_result_id_taken_again_by_another_session_is_its_own_function(
    shipped: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a process that ran a task of session s1 whose function came in result f1
    monkeypatch.setattr(pycall, "_functions", type(pycall._functions)())
    fn1, _, _ = pycall.load_call(_context("f1", shipped, 1))
    # WHEN s1 is deleted and a new session stores another function under the same id
    other = _Shipped.of(less_one).function
    fn2, args, _ = pycall.load_call(_context("f1", other, 10, session_id="s2"))
    # THEN the new session's task runs its own function
    assert fn1 is not fn2 and fn2(*args) == 9


def test_the_cache_keeps_a_bounded_number_of_functions(shipped: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pycall, "_functions", type(pycall._functions)())
    for i in range(pycall.FUNCTION_CACHE_SIZE + 5):
        pycall.load_call(_context(f"f{i}", shipped, 1))
    assert len(pycall._functions) == pycall.FUNCTION_CACHE_SIZE
    assert "s1/f0" not in pycall._functions and f"s1/f{pycall.FUNCTION_CACHE_SIZE + 4}" in pycall._functions


def test_a_task_resubmitting_its_function_reuses_the_stored_one(
    shipped: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a task whose function came by value in result f1, loaded in a process
    monkeypatch.setattr(pycall, "_functions", type(pycall._functions)())
    ctx = _context("f1", shipped, 5)
    pycall.load_call(ctx)
    # WHEN the task pickles that function again for a subtask (fn.submit inside the task)
    again = _Shipped.of(pycall._functions["s1/f1"]).function
    # THEN it ships the bytes it received, and the context stores no copy: the input is reused
    assert again == shipped
    assert ctx.blob_ref(again) == "f1"

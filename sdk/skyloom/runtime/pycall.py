"""The ``skyloom.call`` handler: run a pickled Python call made by ``fn.submit()``.

Dependency refs in the call spec are replaced by the unpickled values of the task's data
dependencies, and the function's return value becomes the task's single expected output. Returning
a future of a subtask submitted by this very call *delegates* the output: the subtask produces it
directly, so ``return total.submit(*parts)`` costs no extra copy and no waiting worker.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import cloudpickle

from skyloom.client.callspec import (
    CallSpec,
    CallSpecError,
    DependencyRef,
    contains,
    decode,
    replace_nested,
)
from skyloom.client.functions import TaskFunction, remember_shipped
from skyloom.client.futures import Future
from skyloom.core.protocol import CALL_HANDLER
from skyloom.runtime.context import TaskContext
from skyloom.runtime.inputs import LazyInput
from skyloom.runtime.registry import handler

#: Functions shipped by value (stored as a result, a dependency of every task of that function) that
#: this process unpickled, by session and result id: a result never changes, and unpickling a
#: script's function with the module it carries costs milliseconds per task. Like a function imported by name, a cached
#: one keeps its module's globals from one task to the next in this process (as Ray's workers do).
FUNCTION_CACHE_SIZE = 32
_functions: OrderedDict[str, Any] = OrderedDict()
_functions_lock = threading.Lock()


class ReturnValueError(TypeError):
    """The function returned something that cannot become a result; retrying cannot fix it."""

    non_retryable = True


@handler(CALL_HANDLER)
def call(ctx: TaskContext) -> None:
    """Run the call in ``ctx.payload`` and produce (or delegate) its one expected output."""
    if len(ctx.expected_outputs) != 1:
        raise CallSpecError(
            f"a skyloom.call task has exactly one expected output, task {ctx.task_id} has {len(ctx.expected_outputs)}"
        )
    output = ctx.expected_outputs[0]
    fn, args, kwargs = load_call(ctx)
    value = fn(*args, **kwargs)
    if isinstance(value, Future):
        if value.backend is not ctx:
            raise ReturnValueError(
                f"{_name(fn)} returned {value!r}, which it did not submit itself; return a future "
                "from this task's own fn.submit() calls, or a plain value"
            )
        ctx.delegate(value.id, output)
        return
    if contains(value, Future):
        raise ReturnValueError(
            f"{_name(fn)} returned futures inside a {type(value).__name__}; return one future "
            "(e.g. `return combine.submit(*futures)`) or plain values, not a structure of futures"
        )
    try:
        data = cloudpickle.dumps(value)
    except Exception as exc:
        raise ReturnValueError(
            f"the value returned by {_name(fn)} ({type(value).__name__}) cannot be pickled: {exc}"
        ) from exc
    ctx.send_result(output, data)


def load_call(ctx: TaskContext) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """The callable and its arguments, with every dependency ref replaced by its value.

    Raises:
        CallSpecError: the payload or a pickled function cannot be read here (non-retryable).
    """
    payload = decode(ctx.payload)

    def raw(index: int) -> bytes:
        try:
            rid = payload.dependencies[index]
            return ctx.dependencies[rid]
        except (IndexError, KeyError) as exc:
            raise CallSpecError(
                f"call spec of task {ctx.task_id} refers to dependency #{index}, which the task did not receive"
            ) from exc

    body = raw(payload.spec_index) if payload.spec_index is not None else payload.body
    spec = _unpickle(body, "the call spec")
    if not isinstance(spec, CallSpec):
        raise CallSpecError(f"payload of task {ctx.task_id} holds a {type(spec).__name__}, not a CallSpec")
    function = spec.function
    if isinstance(function, DependencyRef):
        index = function.index
        known = 0 <= index < len(payload.dependencies)
        # By session and id: a deleted session's result ids may be taken again by a new session.
        key = f"{ctx.session_id}/{payload.dependencies[index]}" if known else ""
        fn = _shipped_function(key, lambda: raw(index))
    else:
        fn = _unpickle(function, "the function")
    if isinstance(fn, TaskFunction):
        fn = fn.definition.fn
    if not callable(fn):
        raise CallSpecError(f"the call spec of task {ctx.task_id} holds a {type(fn).__name__}, not a function")

    values: dict[int, Any] = {}

    def value(ref: DependencyRef) -> Any:
        # Memoized: one result passed twice arrives as one object, as it would in a local call.
        if ref.index not in values:
            values[ref.index] = _argument(ctx, payload.dependencies, ref.index, raw)
        return values[ref.index]

    return fn, replace_nested(spec.args, DependencyRef, value), replace_nested(spec.kwargs, DependencyRef, value)


def _shipped_function(key: str, raw: Callable[[], bytes]) -> Any:
    """The function stored in the result ``key`` names (``<session>/<result id>``; "" keeps
    nothing), unpickled once per process."""
    with _functions_lock:
        fn = _functions.get(key)
        if fn is not None:
            _functions.move_to_end(key)
            return fn
    data = raw()
    fn = _unpickle(data, "the function")
    if isinstance(fn, TaskFunction):
        remember_shipped(fn, data)
    if key:
        with _functions_lock:
            _functions[key] = fn
            while len(_functions) > FUNCTION_CACHE_SIZE:
                _functions.popitem(last=False)
    return fn


def _argument(ctx: TaskContext, dependencies: list[str], index: int, raw: Callable[[int], bytes]) -> Any:
    """The value of argument ``index``: unpickled, or by kind of dependency, an ``Aborted`` marker
    (an optional input that was aborted) or a ``LazyInput`` (fetched when the task asks)."""
    rid = dependencies[index] if 0 <= index < len(dependencies) else None
    what = f"argument value #{index}"
    if rid is not None and rid in ctx.lazy:
        def load() -> Any:
            if rid in ctx.aborted:
                return ctx.aborted[rid]
            return _unpickle(ctx.fetch(rid), what, is_value=True)

        return LazyInput(rid, load)
    if rid is not None and rid in ctx.aborted:
        return ctx.aborted[rid]
    return _unpickle(raw(index), what, is_value=True)


def _unpickle(data: bytes, what: str, *, is_value: bool = False) -> Any:
    try:
        return cloudpickle.loads(data)
    except ModuleNotFoundError as exc:
        raise CallSpecError(
            f"cannot unpickle {what}: module {exc.name!r} is not installed on this worker. Install it "
            "in the worker image, or make the client ship it by value "
            "(cloudpickle.register_pickle_by_value(module))"
        ) from exc
    except Exception as exc:
        hint = " (a result produced by a low-level handler holds raw bytes, not a pickled value)" if is_value else ""
        raise CallSpecError(f"cannot unpickle {what}: {type(exc).__name__}: {exc}{hint}") from exc


def _name(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"

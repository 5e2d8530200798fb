"""``@skyloom.task``: turn a Python function into something that can run as a task.

``fn.submit(*args)`` pickles a call to ``fn`` into the payload of a task run by the built-in
``skyloom.call`` handler (see :mod:`skyloom.client.callspec` for the format) and returns a
:class:`~skyloom.client.futures.Future`. The same code builds the task on a laptop and inside a
running task; only the backend that receives it differs (:mod:`skyloom.client.backend`).

Functions travel by value when workers cannot be expected to import them (``__main__``, notebooks,
a project checkout) and by reference when they come from an installed package, like any library.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import site
import sys
import sysconfig
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, ParamSpec, TypeVar, Unpack, overload

import cloudpickle

from skyloom.client import backend as backends
from skyloom.client import sources
from skyloom.client.backend import Backend
from skyloom.client.callspec import CallSpec, DependencyRef, encode, replace_nested
from skyloom.client.dependencies import DataDependency
from skyloom.client.futures import Future
from skyloom.client.specs import TaskRequest
from skyloom.core.graph import merge_uses
from skyloom.core.protocol import CALL_HANDLER, MAX_LABEL_LENGTH
from skyloom.options import TaskOptions, TaskOptionsArgs

P = ParamSpec("P")
R = TypeVar("R")

#: A pickled function larger than this is stored once per session and read as a dependency.
FUNCTION_INLINE_MAX = 2 * 1024
#: A pickled call larger than this is stored as a result; the payload then only points to it.
PAYLOAD_INLINE_MAX = 24 * 1024


@dataclass(frozen=True, eq=False)
class TaskDefinition:
    """What ``@skyloom.task`` learned about a function, fixed when the decorator is applied."""

    fn: Callable[..., Any]
    #: ``module.qualname``; names the results the function produces.
    name: str
    options: TaskOptions


class TaskFunction(Generic[P, R]):
    """A function that can run as a task. Made by :func:`task`; calling it runs it locally.

    Example:
        >>> @skyloom.task(max_retries=1)
        ... def square(x: int) -> int:
        ...     return x * x
        >>> square(3)                                   # a plain local call
        9
        >>> square.submit(3).result()                   # a task
        9
        >>> square.options(priority=5).submit(4).result()
        16
    """

    def __init__(self, definition: TaskDefinition, *, base: TaskFunction[P, R] | None = None):
        self._definition = definition
        # The decorated function as its module holds it: what is shipped, whatever the options.
        self._base: TaskFunction[P, R] = base if base is not None else self
        functools.update_wrapper(self, definition.fn)

    @property
    def definition(self) -> TaskDefinition:
        return self._definition

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = self._definition.fn(*args, **kwargs)
        return result

    def submit(self, *args: Any, **kwargs: Any) -> Future[R]:
        """Run ``fn(*args, **kwargs)`` as a task and return a future of its value.

        Futures among the arguments (also inside lists, tuples and dicts) become data
        dependencies: the task starts when they are ready and receives their values. Called
        inside a task, this submits a subtask, which starts only if the caller succeeds.

        Example:
            >>> total.submit(*[price.submit(t) for t in trades]).result()
        """
        return _submit(_current_backend(), self, args, kwargs)

    def map(self, *iterables: Iterable[Any], timeout: float | None = None, chunksize: int = 1) -> Iterator[R]:
        """Submit ``fn(*args)`` for each ``args`` of ``zip(*iterables)`` now; yield the values in order.

        The semantics of ``concurrent.futures.Executor.map``: every task is submitted before this
        returns (in a few requests), the iterator waits for each value in turn and raises the first
        failure it meets, and ``timeout`` counts from this call (``WaitTimeout``, a ``TimeoutError``).
        Waiting is shared: one server-side wait brings the values of many tasks. Leaving the loop
        early cancels the tasks whose values were not read. For futures instead of values, use
        ``[fn.submit(x) for x in xs]``.

        Args:
            chunksize: calls per task; a chunk runs its calls one after the other on one worker,
                which pays off for calls much shorter than a task's overhead. With chunks, a call
                cannot return a future (delegation needs the task's own result).

        Example:
            >>> for price in price_trade.map(trades, chunksize=50):
            ...     book(price)
            >>> total = sum(square.map(range(1000)))
        """
        if chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, got {chunksize}")
        calls = list(zip(*iterables, strict=False))
        b = _current_backend()
        end = None if timeout is None else time.monotonic() + timeout
        if chunksize == 1:
            shipped = _Shipped.of(self)
            futures = [_submit(b, shipped, args, {}) for args in calls]
            return _in_order(futures, end, chunked=False)
        chunk_fn = _Shipped.of(self, chunked=True)
        chunks = [calls[i : i + chunksize] for i in range(0, len(calls), chunksize)]
        return _in_order([_submit(b, chunk_fn, (c,), {}) for c in chunks], end, chunked=True)

    def options(self, **options: Unpack[TaskOptionsArgs]) -> TaskFunction[P, R]:
        """The same function with some options (:class:`~skyloom.options.TaskOptionsArgs`)
        overridden, for the next ``submit``.

        Options never mix with the function's own arguments, so a function may well have a
        parameter called ``priority``.

        Example:
            >>> price.options(priority=9, max_duration=30).submit(urgent_trade)
        """
        merged = TaskOptions.of(options).merged_over(self._definition.options)
        return TaskFunction(dataclasses.replace(self._definition, options=merged), base=self._base)

    def __reduce__(self) -> tuple[Any, ...]:
        if _by_reference(self):
            return (_import_attribute, (self.__module__, getattr(self, "__qualname__", "")))
        # By value: with its source file, so that the worker's tracebacks show the user's lines.
        # The definition goes in the *state*, not the constructor's arguments: a recursive task's
        # function holds this very TaskFunction among its globals, and pickle can only close that
        # cycle through an object it has already created (memoized) and fills in afterwards.
        return (_unbuilt, (), (self._definition, sources.capture(self._definition.fn)))

    def __setstate__(self, state: tuple[TaskDefinition, sources.Source | None]) -> None:
        definition, source = state
        sources.restore(definition.fn, source)
        TaskFunction.__init__(self, definition)

    def __repr__(self) -> str:
        return f"<skyloom task {self._definition.name}>"


@overload
def task(fn: Callable[P, R], /) -> TaskFunction[P, R]: ...


@overload
def task(**options: Unpack[TaskOptionsArgs]) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...


def task(fn: Any = None, /, **options: Unpack[TaskOptionsArgs]) -> Any:
    """Make a function submittable as a task; usable bare or with options.

    Args:
        options: the function's default task options (:class:`~skyloom.options.TaskOptionsArgs`:
            partition, priority, max_retries, max_duration, application_name, application_version,
            extra).

    Raises:
        TypeError: the target is not a plain synchronous function, with what to do instead.

    Example:
        >>> @skyloom.task
        ... def price(trade): ...
        >>> @skyloom.task(max_retries=2, priority=1, partition="default", max_duration=60)
        ... def total(*values): return sum(values)
    """
    defaults = TaskOptions.of(options)

    def decorate(target: Callable[P, R]) -> TaskFunction[P, R]:
        _check_target(target)
        name = f"{target.__module__}.{target.__qualname__}"[:MAX_LABEL_LENGTH]
        return TaskFunction(TaskDefinition(fn=target, name=name, options=defaults))

    if fn is None:
        return decorate
    if isinstance(fn, str):
        raise TypeError(
            f"@skyloom.task({fn!r}): options are keyword-only, e.g. @skyloom.task(max_retries=2); "
            "the result name comes from the function's name"
        )
    return decorate(fn)


# ------------------------------------------------------------------------------------ submission
def _current_backend() -> Backend:
    ctx = backends.running_task()
    if ctx is not None:
        return ctx
    session = backends.entered_session()
    if session is not None:
        return session
    provider = backends.fallback()
    if provider is not None:
        return provider()
    raise RuntimeError(
        "fn.submit() has nowhere to go: connect first, e.g. `client = skyloom.connect()` or "
        "`with skyloom.connect() as client:`; calling fn(...) instead runs it locally"
    )


@dataclass(frozen=True)
class _Shipped:
    """What a task runs, pickled for the workers once: a function and its options and label."""

    function: bytes
    options: TaskOptions
    name: str

    @staticmethod
    def of(fn: TaskFunction[Any, Any], *, chunked: bool = False) -> _Shipped:
        d = fn.definition
        if not chunked:
            return _Shipped(shipped_function(fn._base), d.options, d.name)
        # The same bytes for every chunk (and every map of it), so a large function is stored once.
        return _Shipped(cloudpickle.dumps(_Chunk(fn._base)), d.options, d.name)


@dataclass(frozen=True)
class _Chunk:
    """Runs a chunk of ``fn.map`` calls in one task, returning their values as a list."""

    fn: TaskFunction[Any, Any]

    def __call__(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        return [self.fn(*args) for args in calls]


def _in_order(futures: list[Future[Any]], end: float | None, *, chunked: bool) -> Iterator[Any]:
    """Values of ``futures`` in order (flattened for chunks); cancels the unread ones if left early."""
    read = 0
    try:
        for f in futures:
            value = f.result(None if end is None else max(0.0, end - time.monotonic()))
            read += 1
            if chunked:
                yield from value
            else:
                yield value
    finally:
        if read < len(futures):
            # Here, not at the top: a task's child process runs task functions without the waiting
            # machinery (gathering -> waiting -> the HTTP client), and only a client iterates a map.
            from skyloom.client.gathering import cancel

            cancel(futures[read:])


def _submit(
    b: Backend, what: TaskFunction[Any, Any] | _Shipped, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Future[Any]:
    fn = what if isinstance(what, _Shipped) else _Shipped.of(what)
    deps: list[str] = []
    index: dict[str, int] = {}
    #: (result id, optional, lazy) of each use: the kinds of dependency the task gets.
    uses: list[tuple[str, bool, bool]] = []

    def ref(result_id: str, *, optional: bool = False, lazy: bool = False) -> DependencyRef:
        if result_id not in index:
            index[result_id] = len(deps)
            deps.append(result_id)
        uses.append((result_id, optional, lazy))
        return DependencyRef(index[result_id])

    def dependency(arg: Future[Any] | DataDependency[Any]) -> DependencyRef:
        kind = arg if isinstance(arg, DataDependency) else DataDependency(arg)
        f = kind.future
        if f.backend is not b and f.session_id != b.session_id:
            raise ValueError(
                f"{f!r} belongs to session {f.session_id}, but this task goes to session {b.session_id}: "
                "data dependencies must live in the same session; pass f.result() instead"
            )
        return ref(f.id, optional=kind.optional, lazy=kind.lazy)

    call_args = replace_nested(args, (Future, DataDependency), dependency)
    call_kwargs = replace_nested(kwargs, (Future, DataDependency), dependency)
    shipped = fn.function
    function: bytes | DependencyRef = ref(b.blob_ref(shipped)) if len(shipped) > FUNCTION_INLINE_MAX else shipped
    body = cloudpickle.dumps(CallSpec(function, call_args, call_kwargs))
    if len(body) > PAYLOAD_INLINE_MAX:
        # Large arguments are stored once (deduplicated by content) instead of riding in the payload.
        payload = encode(b"", deps, spec_index=ref(b.blob_ref(body)).index)
    else:
        payload = encode(body, deps)
    out = b.new_id()
    optional, lazy = merge_uses(uses)
    request = TaskRequest(
        CALL_HANDLER,
        expected_outputs=[out],
        payload=payload,
        data_dependencies=deps,
        optional_dependencies=optional,
        lazy_dependencies=lazy,
        options=fn.options,
        task_id=b.new_id(),
        # Every function runs under the one dispatch handler; the label tells people which one.
        label=fn.name,
    )
    b.enqueue(request, {out: fn.name})
    return b.future(out, request.task_id)


# ------------------------------------------------------------------------------ function shipping
_shipped: weakref.WeakKeyDictionary[TaskFunction[Any, Any], bytes] = weakref.WeakKeyDictionary()
_by_value_roots: set[str] = set()


def shipped_function(fn: TaskFunction[Any, Any]) -> bytes:
    """The function pickled for the workers, computed once per process.

    Pickled once, like Ray: module globals a function reads are captured at its first submission.
    """
    data = _shipped.get(fn)
    if data is None:
        data = cloudpickle.dumps(fn)
        _shipped[fn] = data
    return data


def remember_shipped(fn: TaskFunction[Any, Any], data: bytes) -> None:
    """Record ``data`` as the pickled form of ``fn``, which was unpickled from it (on a worker).

    A task that submits its own function again (recursion) then ships the very bytes it received,
    which :meth:`skyloom.runtime.context.TaskContext.blob_ref` recognises among its inputs: the
    subtasks reuse the stored function instead of storing a copy per task (pickling it again gives
    other bytes). As on the client, the function travels as it was first shipped.
    """
    if fn._base is fn:
        _shipped.setdefault(fn, data)


def _by_reference(fn: TaskFunction[Any, Any]) -> bool:
    """Whether workers can import ``fn`` by name (it lives in an installed package)."""
    modname = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not modname or modname == "__main__" or "<locals>" in qualname:
        return False
    module = sys.modules.get(modname)
    if module is None:
        return False
    if not _installed(module):
        # Helpers of the same project must travel by value too, or the worker would try to
        # import them; registering the top package covers its sibling modules.
        _register_by_value(modname.split(".")[0])
        return False
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj is fn


@functools.cache
def _installed_roots() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    return tuple(Path(r).resolve() for r in roots if r)


def _installed(module: ModuleType) -> bool:
    if module.__name__ == "skyloom" or module.__name__.startswith("skyloom."):
        return True
    file = getattr(module, "__file__", None)
    if not file:
        return True  # built-in or frozen: present in every interpreter
    path = Path(file).resolve()
    if "site-packages" in path.parts or "dist-packages" in path.parts:
        return True
    return any(path.is_relative_to(root) for root in _installed_roots())


def _register_by_value(root: str) -> None:
    if root in _by_value_roots:
        return
    module = sys.modules.get(root)
    if module is not None:
        cloudpickle.register_pickle_by_value(module)
    _by_value_roots.add(root)


def _import_attribute(modname: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(modname)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _unbuilt() -> TaskFunction[Any, Any]:
    """An empty TaskFunction for pickle to fill with :meth:`TaskFunction.__setstate__`."""
    fn: TaskFunction[Any, Any] = TaskFunction.__new__(TaskFunction)
    return fn


# ---------------------------------------------------------------------------------- validation
def _check_target(fn: Any) -> None:
    what = getattr(fn, "__qualname__", None) or type(fn).__name__
    if isinstance(fn, TaskFunction):
        raise TypeError(
            f"{fn!r} is already a task; to change its options use "
            f"{getattr(fn, '__name__', 'fn')}.options(...).submit(...)"
        )
    if inspect.isclass(fn):
        raise TypeError(
            f"@skyloom.task decorates a function, not the class {what}; decorate a module-level "
            "function that builds and uses the object instead"
        )
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"@skyloom.task cannot run the async function {what}; define a plain function that calls "
            "asyncio.run(...) on it"
        )
    if inspect.isgeneratorfunction(fn):
        raise TypeError(
            f"@skyloom.task cannot ship the generator function {what} (generators do not pickle); "
            "return a list instead of yielding"
        )
    if not inspect.isfunction(fn):
        raise TypeError(
            f"@skyloom.task decorates a plain Python function (def or lambda), got {type(fn).__name__} "
            f"{what}; wrap it: `@skyloom.task\\ndef run(*args): return target(*args)`"
        )
    params = list(inspect.signature(fn).parameters)
    if params and params[0] == "self" and "." in fn.__qualname__ and "<locals>" not in fn.__qualname__:
        raise TypeError(
            f"@skyloom.task cannot decorate the method {what}: a task has no instance to run on; "
            "decorate a module-level function and pass the object as an argument"
        )

"""Named low-level handlers: what a task's ``handler`` field resolves to on a worker.

Workers learn which modules define handlers from ``SKYLOOM_HANDLER_MODULES`` (comma-separated
module names), imported once on the first lookup; the built-in ``skyloom.call`` handler, which runs
``@skyloom.task`` functions, is always there.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from skyloom.runtime.context import TaskContext

HandlerFn = Callable[["TaskContext"], None]
H = TypeVar("H", bound=HandlerFn)

ENV_MODULES = "SKYLOOM_HANDLER_MODULES"
_BUILTIN_MODULES = ("skyloom.runtime.pycall",)

_handlers: dict[str, HandlerFn] = {}
_lock = threading.Lock()
_import_lock = threading.Lock()
_imported = False
_import_errors: list[str] = []


class UnknownHandler(LookupError):
    """No handler has this name on this worker; another attempt on the same fleet cannot help."""

    non_retryable = True


class HandlerImportError(ImportError):
    """A module listed in SKYLOOM_HANDLER_MODULES failed to import: a deployment problem."""

    non_retryable = True


def handler(name: str) -> Callable[[H], H]:
    """Register ``fn(ctx: TaskContext) -> None`` as the handler called ``name``.

    The function is returned unchanged, so it stays callable (and testable) on its own.

    Raises:
        TypeError: ``name`` is missing or the target is not callable.
        ValueError: another function already holds ``name``.

    Example:
        >>> @skyloom.handler("echo")
        ... def echo(ctx: skyloom.TaskContext) -> None:
        ...     ctx.send_result(ctx.expected_outputs[0], ctx.payload)
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"@skyloom.handler needs the handler's name, e.g. @skyloom.handler('echo'); got {name!r}")
    if len(name) > 256:
        raise ValueError(f"handler name is {len(name)} characters long; at most 256")

    def register(fn: H) -> H:
        if not callable(fn):
            raise TypeError(f"@skyloom.handler({name!r}) decorates a function taking a TaskContext")
        with _lock:
            known = _handlers.get(name)
            if known is not None and _same_code(known) != _same_code(fn):
                raise ValueError(
                    f"handler {name!r} is already registered by {_identity(known)}; "
                    f"pick another name for {_identity(fn)}"
                )
            _handlers[name] = fn
        return fn

    return register


def resolve_handler(name: str) -> HandlerFn:
    """The handler registered as ``name``, importing the configured modules on first use.

    Raises:
        UnknownHandler: nothing registered that name (non-retryable).
        HandlerImportError: a configured module failed to import (non-retryable).
    """
    fn = _handlers.get(name)
    if fn is not None:
        return fn
    _import_modules()
    fn = _handlers.get(name)
    if fn is not None:
        return fn
    if _import_errors:
        raise HandlerImportError(
            f"handler {name!r} is unknown and some handler modules failed to import: " + "; ".join(_import_errors)
        )
    configured = os.environ.get(ENV_MODULES, "")
    raise UnknownHandler(
        f"no handler named {name!r} on this worker (known: {', '.join(sorted(_handlers)) or 'none'}); "
        f"list the module that registers it in {ENV_MODULES} (now {configured!r})"
    )


def registered() -> list[str]:
    return sorted(_handlers)


def _import_modules() -> None:
    global _imported
    with _import_lock:
        if _imported:
            return
        env = os.environ.get(ENV_MODULES, "")
        for module in [*_BUILTIN_MODULES, *(m.strip() for m in env.split(",") if m.strip())]:
            try:
                importlib.import_module(module)
            except Exception as exc:
                _import_errors.append(f"{module}: {type(exc).__name__}: {exc}")
        _imported = True


def _same_code(fn: object) -> tuple[str, str]:
    # By source file and qualname, so one file imported under two module names (a test runner's
    # rootdir import and a package import) registers once instead of failing.
    code = getattr(fn, "__code__", None)
    return (getattr(code, "co_filename", _identity(fn)), getattr(fn, "__qualname__", repr(fn)))


def _identity(fn: object) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"

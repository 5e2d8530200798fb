"""Native exceptions: a task's failure raised as the task's own exception type, too.

A quant writes ``except ValueError:`` around ``future.result()`` as around a local call. The worker
records the type module-qualified (bare for builtins) and its args when they are plain scalars; when
that type can be imported here, the client raises an instance of a class made on the fly that
derives from both the :class:`~skyloom.errors.TaskFailed` it would raise anyway and the task's type
(Ray does the same). ``except skyloom.TaskFailed`` still catches it, its message still carries the
remote traceback, and ``args`` are the original's when they could be rebuilt.

When the type cannot be imported, is not an ``Exception``, or cannot be combined (a layout or MRO
conflict, a final class), the plain ``TaskFailed`` is raised, as before.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import sys
import threading
from collections.abc import Sequence
from typing import Any

from skyloom.errors import TaskFailed

#: One combined class per (failure class, task type), so that two failures of one kind share a type.
_CLASSES: dict[tuple[type[TaskFailed], type[Exception]], type[TaskFailed] | None] = {}
_CLASSES_LOCK = threading.Lock()

#: Attribute holding the text ``str()`` shows; a private name, since the task's type may set ``message``.
_TEXT = "_skyloom_text"


def native_failure(
    failure: TaskFailed, type_name: str | None, args: Sequence[Any] | None, *, remote_message: str | None = None
) -> TaskFailed:
    """``failure``, as an instance of the task's own exception type too when that type is importable.

    Args:
        failure: what the client raises without native types (carries task, attempts, traceback).
        type_name: the remote type as recorded by the worker, ``module.QualName`` or a builtin's name.
        args: the remote exception's args, when they travelled (JSON scalars), else None.
        remote_message: ``str()`` of the remote exception: the args when they did not travel, as
            for the most common ``SomeError("text")``; ``failure``'s message when None.

    Returns:
        An instance of a subclass of ``type(failure)`` and of the task's type, or ``failure`` itself.

    Example:
        >>> from skyloom.errors import TaskFailed
        >>> err = native_failure(TaskFailed("task t1 failed: ValueError: bad"), "ValueError", ["bad"])
        >>> isinstance(err, ValueError), isinstance(err, TaskFailed), err.args
        (True, True, ('bad',))
    """
    if not type_name:
        return failure
    user = _import_exception_type(type_name)
    if user is None or isinstance(failure, user):
        return failure
    cls = _combined_class(type(failure), user)
    if cls is None:
        return failure
    rebuilt = tuple(args) if args is not None else None
    exc = _instantiate(cls, user, rebuilt, remote_message, failure)
    return exc if exc is not None else failure


def _import_exception_type(name: str) -> type[Exception] | None:
    """The class ``name`` designates here, if it is an ``Exception`` (never a BaseException only:
    a ``SystemExit`` or ``KeyboardInterrupt`` made of a task failure would stop the caller)."""
    parts = name.split(".")
    if not all(p.isidentifier() for p in parts):
        return None
    found: object = None
    if len(parts) == 1:
        found = getattr(builtins, name, None)
    else:
        # The longest module prefix wins: "pkg.mod.Outer.Inner" is tried as pkg.mod.Outer, then pkg.mod.
        for cut in range(len(parts) - 1, 0, -1):
            module = _module(".".join(parts[:cut]))
            if module is None:
                continue
            found = module
            for attr in parts[cut:]:
                found = getattr(found, attr, None)
            break
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


def _module(name: str) -> object | None:
    """An already imported module, or one importable here; None if importing it fails in any way."""
    if name in sys.modules:
        return sys.modules[name]
    try:
        return importlib.import_module(name)
    except (Exception, SystemExit):  # a module that is absent, broken, or exits when imported
        return None


def _combined_class(base: type[TaskFailed], user: type[Exception]) -> type[TaskFailed] | None:
    """``base`` and ``user`` in one class, cached; None when Python refuses to combine them."""
    key = (base, user)
    with _CLASSES_LOCK:
        if key in _CLASSES:
            return _CLASSES[key]
        cls: type[TaskFailed] | None
        try:
            cls = type(
                f"{base.__qualname__}({user.__qualname__})",
                (base, user),
                {
                    "__module__": base.__module__,
                    "__qualname__": f"{base.__qualname__}({user.__qualname__})",
                    "__doc__": f"A {base.__name__} whose task raised {user.__module__}.{user.__qualname__}.",
                    "__str__": _text,
                    "__repr__": _repr,
                    "__reduce__": _reduce,
                },
            )
        except Exception:  # layout conflict, inconsistent MRO, a metaclass or __init_subclass__ refusing
            cls = None
        _CLASSES[key] = cls
        return cls


def _instantiate(
    cls: type[TaskFailed],
    user: type[Exception],
    args: tuple[Any, ...] | None,
    remote_message: str | None,
    failure: TaskFailed,
) -> TaskFailed | None:
    """An instance of ``cls`` holding ``failure``'s attributes and, when known, the original args.

    The task type's ``__init__`` runs with the original args, as unpickling an exception does, so
    attributes it sets exist; if it refuses them, the args are set alone. It never runs on guessed
    args. The failure's own attributes are set last: ``message``, ``task_id`` and the traceback are
    Skyloom's contract on every ``TaskFailed``.
    """
    call_args = args if args is not None else (remote_message if remote_message is not None else failure.message,)
    try:
        exc = cls.__new__(cls, *call_args)
    except Exception:
        try:
            exc = cls.__new__(cls)
        except Exception:
            return None
    if args is not None:
        # A signature that does not match its args raises: the args alone still help.
        with contextlib.suppress(Exception):
            user.__init__(exc, *args)
    try:
        exc.args = call_args
        exc.__dict__.update(vars(failure))
        setattr(exc, _TEXT, str(failure))
    except Exception:  # a type with __slots__ or read-only attributes
        return None
    return exc


def _text(self: TaskFailed) -> str:
    """What ``str()`` and tracebacks show: the whole failure (task, attempts, remote traceback)."""
    text = self.__dict__.get(_TEXT)
    return text if isinstance(text, str) else self.message


def _repr(self: TaskFailed) -> str:
    return f"{type(self).__qualname__}({self.message.splitlines()[0]!r})"


def _reduce(self: TaskFailed) -> tuple[Any, ...]:
    """Pickle as the parts it is made of: the combined class has no importable name of its own."""
    bases = type(self).__bases__
    return (_rebuild, (bases[0], bases[1], self.args, dict(self.__dict__)))


def _rebuild(base: type[TaskFailed], user: type[Exception], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """Unpickle a native failure (see :func:`_reduce`); a plain ``base`` if the pair cannot combine here."""
    cls = _combined_class(base, user)
    if cls is None:
        plain: TaskFailed = base.__new__(base)
        plain.args = (state.get("message", ""),)
        plain.__dict__.update(state)
        return plain
    exc: TaskFailed = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc

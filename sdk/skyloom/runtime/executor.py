"""Run one task attempt in the worker's child process and report what came of it.

The agent hands over a :class:`~skyloom.runtime.outcome.TaskInput` and gets a
:class:`~skyloom.runtime.outcome.TaskOutcome` back, never an exception: whatever user code raises
is flattened into a :class:`~skyloom.runtime.outcome.RemoteError` that survives pickling, with a
traceback that starts at the user's code rather than in this module.
"""

from __future__ import annotations

import os
import traceback
from types import TracebackType

import skyloom.runtime.pycall  # noqa: F401  (registers the built-in skyloom.call handler)
from skyloom.runtime.admission import check_admitted
from skyloom.runtime.context import TaskContext
from skyloom.runtime.outcome import RemoteError, TaskInput, TaskOutcome, portable_args
from skyloom.runtime.registry import resolve_handler

_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))


def run_task(inp: TaskInput) -> TaskOutcome:
    """Run ``inp`` with its handler and return outputs plus staged work, or the error.

    A successful outcome covers each expected output exactly once, sent or delegated to a staged
    subtask; otherwise the outcome carries a non-retryable error naming the missing output.

    Example:
        >>> outcome = run_task(TaskInput("t1", "s1", "echo", b"hi", {}, ["r1"], {}))
        >>> outcome.outputs
        {'r1': b'hi'}
    """
    ctx = TaskContext(inp)
    try:
        with ctx.active():
            check_admitted(inp.handler, inp.options)  # before the handler can unpickle anything
            fn = resolve_handler(inp.handler)
            fn(ctx)
            return ctx.outcome()
    except (Exception, SystemExit) as exc:
        # SystemExit too: a user's sys.exit() must fail the task, not kill the agent's child silently.
        return TaskOutcome(error=remote_error(exc), **ctx.transfers())


def remote_error(exc: BaseException) -> RemoteError:
    """Flatten an exception; ``non_retryable = True`` on it (or its class) means do not retry.

    The type is recorded module-qualified (bare for builtins) and the args when they are plain
    scalars: together they let the client raise an instance of the same type (native exceptions).
    """
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    return RemoteError(
        type=name,
        message=str(exc) or name,
        traceback="".join(traceback.format_exception(cls, exc, _user_frames(exc.__traceback__))),
        retryable=not bool(getattr(exc, "non_retryable", False)),
        args=portable_args(exc),
    )


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Skip the runtime's own frames at the top, unless the error happened in them."""
    first = tb
    while tb is not None and os.path.dirname(os.path.abspath(tb.tb_frame.f_code.co_filename)) == _RUNTIME_DIR:
        tb = tb.tb_next
    return tb if tb is not None else first

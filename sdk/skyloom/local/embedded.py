"""The one local stack of a client process: found, waited for, or started once and said out loud.

``skyloom.connect()`` with nothing configured uses the running local stack; if a ``skyloom local up``
is starting, it waits for it instead of starting a second one beside it. Only when there is none
does it start an embedded stack, in its own process, and then it says so on stderr with the
endpoint, publishes it like ``skyloom local up`` does (so ``skyloom sessions list`` and friends find
it), and keeps it for every later ``connect()`` of the process: a notebook cell run again gets a
client of the same stack, not a new stack each time. The stack stops when the process exits.
"""

from __future__ import annotations

import atexit
import sys
import threading
from typing import TextIO

from skyloom.errors import ConnectionFailed
from skyloom.local.discovery import (
    KIND_EMBEDDED,
    START_WAIT_SECONDS,
    LocalState,
    discover,
    mark_starting,
    publish,
    unmark_starting,
    unpublish,
)
from skyloom.local.stack import LocalStack, default_run_dir

#: Worker agents of an embedded stack.
EMBEDDED_WORKERS = 2

_lock = threading.Lock()
_stack: LocalStack | None = None


def local_endpoint(*, wait: float = START_WAIT_SECONDS, announce: TextIO | None = None) -> str:
    """The endpoint of the local stack this process should use, starting one only if there is none.

    In order: this process's embedded stack, a running one (``skyloom local up`` or another
    process's embedded stack), one that is starting (waited for up to ``wait`` seconds), else a
    new embedded stack, announced on ``announce`` (stderr by default).

    Args:
        wait: Seconds to wait for a stack that another process is starting.
        announce: Where to say that a stack was started here.

    Raises:
        ConnectionFailed: another process's stack is still starting after ``wait`` seconds.

    Example:
        >>> local_endpoint()          # nothing running: starts one and says so on stderr
        'http://127.0.0.1:40125'
        >>> local_endpoint()          # the same stack, again
        'http://127.0.0.1:40125'
    """
    global _stack
    with _lock:
        if _stack is not None and _stack.running:
            return _stack.endpoint
        found = discover(wait=wait)
        if found:
            return found
        run_dir = default_run_dir()
        if not mark_starting(str(run_dir), exclusive=True):
            # Another process began starting one since we looked: use it when it is up.
            found = discover(wait=wait)
            if found:
                return found
            raise ConnectionFailed("another process started a local stack and stopped before it was up; retry")
        try:
            stack = LocalStack(workers=EMBEDDED_WORKERS, run_dir=run_dir).start()
            try:
                publish(LocalState.of(stack, KIND_EMBEDDED))
            except BaseException:
                stack.stop()
                raise
        finally:
            unmark_starting()
        _stack = stack
        atexit.register(stop_embedded)
        _announce(stack, announce if announce is not None else sys.stderr)
        return stack.endpoint


def embedded_stack() -> LocalStack | None:
    """The stack this process started for its clients, while it runs."""
    with _lock:
        return _stack if _stack is not None and _stack.running else None


def stop_embedded() -> None:
    """Stop this process's embedded stack (at exit, or when a test is done with it)."""
    global _stack
    with _lock:
        stack, _stack = _stack, None
    if stack is not None:
        unpublish()
        stack.stop()


def _announce(stack: LocalStack, out: TextIO) -> None:
    out.write(
        f"skyloom: no local stack was running, so this process started one at {stack.endpoint} "
        f"({EMBEDDED_WORKERS} workers; logs in {stack.run_dir}).\n"
        "skyloom: it serves every connect() and `skyloom` command until this process exits; "
        "`skyloom local up` in a terminal runs one that outlives it.\n"
    )
    out.flush()

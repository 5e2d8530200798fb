"""The console is for people: what the in-process functions print goes to the run directory.

On AWS, the functions' JSON logs, embedded-metric JSON and library warnings go to CloudWatch. In
local mode, resolve and dispatch (and a submit function given as a callable) run in the process that
hosts the stack: ``skyloom local up``, ``skyloom local run``, or a notebook whose ``connect()``
started an embedded stack. Their output would land between the user's lines, an EMF line every
sweep and a Powertools ``UserWarning`` among them. Here ``sys.stdout`` and ``sys.stderr`` are
wrapped once by a stream that sends what a thread writes *while it runs a function* to that
function's log file, and everything else to the original stream, untouched.

A thread is routed only inside :func:`routed_to`, so the stack's own messages and the user's prints
(other threads, or this thread outside an invocation) reach the console as before.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TextIO

from skyloom.local.invoke import Handler


class Writable(Protocol):
    """Where a route writes: the part of a text stream that print, logging and warnings use."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


_route = threading.local()
_install_lock = threading.Lock()


class RoutedStream:
    """A text stream that writes to the current thread's route, else to the stream it wraps.

    Everything but ``write`` and ``flush`` (``encoding``, ``isatty``, ``fileno``...) is the wrapped
    stream's, so code that inspects ``sys.stdout`` sees what it saw before.
    """

    def __init__(self, original: TextIO) -> None:
        self.original = original

    def write(self, text: str) -> int:
        target: Writable | None = getattr(_route, "stream", None)
        if target is None:
            return self.original.write(text)
        return target.write(text)

    def flush(self) -> None:
        target: Writable | None = getattr(_route, "stream", None)
        (target or self.original).flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


def install() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` once (idempotent); unrouted writes are unchanged.

    Call it before the functions' modules are imported: a logging handler keeps the stream it was
    created with, so one made earlier writes to the console whatever the route.
    """
    with _install_lock:
        if not isinstance(sys.stdout, RoutedStream):
            sys.stdout = RoutedStream(sys.stdout)
        if not isinstance(sys.stderr, RoutedStream):
            sys.stderr = RoutedStream(sys.stderr)


@contextlib.contextmanager
def routed_to(stream: Writable) -> Iterator[None]:
    """While inside, what this thread writes to ``sys.stdout``/``sys.stderr`` goes to ``stream``."""
    previous: Writable | None = getattr(_route, "stream", None)
    _route.stream = stream
    try:
        yield
    finally:
        _route.stream = previous


def logged(handler: Handler, stream: Writable) -> Handler:
    """``handler`` with its output (logs, metrics, warnings) routed to ``stream`` on every call.

    The wrapper keeps the handler's ``__module__`` (``functools.wraps``): local mode finds the
    function's cold-start hook through it.
    """

    @functools.wraps(handler)
    def invoke(event: dict[str, Any], context: Any) -> Any:
        with routed_to(stream):
            return handler(event, context)

    return invoke


class SharedLog:
    """A line-buffered append-only text file that several threads write whole lines to."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._file: TextIO = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, text: str) -> int:
        with self._lock:
            if self._file.closed:  # a function still finishing after its stack stopped
                return len(text)
            return self._file.write(text)

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

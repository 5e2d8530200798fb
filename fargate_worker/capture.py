"""What a task prints: its child's stdout and stderr, captured at the file descriptors.

The child's fds 1 and 2 are both pointed at one pipe (:func:`redirect_child_output`, in the child),
so everything lands there: ``print`` from any thread of the task, C extensions writing to fd 1,
subprocesses the task starts, an interpreter's fatal-error dump. The protocol with the agent runs
over its own pipe, so no print can corrupt it.

The agent reads the pipe while the task runs (:class:`OutputPipe`, in the parent) into a ring that
keeps the last ``limit`` bytes (:class:`OutputRing`): a task that prints without end costs the agent
a bounded amount of memory, and the child never blocks on a full pipe. Because the bytes are in the
agent as soon as they are printed, a task that times out, dies or is killed keeps what it printed
until then (what its own stdio buffers held is lost with it: the child line-buffers stdout, so that
is at most an unfinished line).

Like :mod:`fargate_worker.child`, this module is imported in the child and imports nothing heavy.
"""

from __future__ import annotations

import io
import os
import sys
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnContext
from typing import TextIO

from skyloom.runtime.outcome import TaskLog

#: Bytes one drain reads at most: a thread of the task that prints without pause cannot keep the
#: agent's slot thread reading forever.
_DRAIN_BUDGET = 4 * 1024 * 1024
#: When the beginning is cut, the partial line left at the start is dropped if it is shorter.
_PARTIAL_LINE_BYTES = 4096


class OutputRing:
    """The last ``limit`` bytes written, and how many were written before them.

    Example:
        >>> ring = OutputRing(4)
        >>> ring.write(b"abcdef")
        >>> ring.take()
        TaskLog(tail=b'cdef', cut=2)
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"an output ring keeps at least 1 byte, not {limit}")
        self._limit = limit
        self._buf = bytearray()
        self._cut = 0

    def write(self, data: bytes) -> None:
        self._buf += data
        over = len(self._buf) - self._limit
        if over > 0:
            del self._buf[:over]
            self._cut += over

    def take(self) -> TaskLog:
        """What was written since the last take, and start afresh.

        When the beginning was cut, the line it cut through is dropped (when short): a log that
        starts at a line boundary reads better, and the dropped bytes are counted as cut.
        """
        tail, cut = bytes(self._buf), self._cut
        self._buf.clear()
        self._cut = 0
        if cut:
            newline = tail.find(b"\n", 0, _PARTIAL_LINE_BYTES)
            if newline >= 0:
                tail, cut = tail[newline + 1:], cut + newline + 1
        return TaskLog(tail, cut)


class OutputPipe:
    """The agent's end of one child's output pipe, read without blocking into an :class:`OutputRing`.

    Usable in :func:`multiprocessing.connection.wait` (it has a ``fileno``). After :meth:`close` the
    ring is still there to :meth:`take`.
    """

    def __init__(self, ctx: SpawnContext, limit: int) -> None:
        # A one-way multiprocessing pipe is a plain os.pipe(): raw bytes, no message framing. Its
        # writing end is a Connection so that spawn hands the fd to the child.
        self._reader, self.writer = ctx.Pipe(duplex=False)
        os.set_blocking(self._reader.fileno(), False)
        self._ring = OutputRing(limit)
        self._open = True
        self._eof = False

    def fileno(self) -> int:
        return self._reader.fileno()

    @property
    def readable(self) -> bool:
        """False once the pipe is closed or at its end (nothing more can come: stop waiting on it)."""
        return self._open and not self._eof

    def drain(self) -> None:
        """Read what the pipe holds now into the ring (at most a budget's worth)."""
        read = 0
        while self.readable and read < _DRAIN_BUDGET:
            try:
                chunk = os.read(self._reader.fileno(), 65536)
            except BlockingIOError:
                return
            except OSError:
                self._eof = True
                return
            if not chunk:
                self._eof = True
                return
            self._ring.write(chunk)
            read += len(chunk)

    def take(self) -> TaskLog:
        """What was printed since the last take (see :meth:`OutputRing.take`)."""
        return self._ring.take()

    def close_writer(self) -> None:
        """Close the agent's copy of the writing end once the child holds it, so that the pipe
        reaches its end when the child (and whatever it started) is gone."""
        self.writer.close()

    def close(self) -> None:
        """Read what is left, then close; idempotent."""
        if self._open:
            self.drain()
            self._open = False
            self._reader.close()


def wait_reading(out: OutputPipe, objects: list[Connection | int], deadline: float | None) -> list[object]:
    """Wait until one of ``objects`` is ready or ``deadline`` (monotonic) passes, reading the
    child's output meanwhile; ``[]`` on the deadline. Reading as it comes is what keeps the child
    from blocking on a full pipe while the ring bounds what the agent holds."""
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = wait([*objects, out] if out.readable else objects, remaining)
        if not ready or any(o in ready for o in objects):
            return ready
        out.drain()


def redirect_child_output(writer: Connection) -> None:
    """In the child: send fds 1 and 2 to the output pipe, and line-buffer ``sys.stdout``.

    Line buffering costs a write per line, and buys that a killed task loses at most its last,
    unfinished line. ``sys.stderr`` is line-buffered already.
    """
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os.dup2(writer.fileno(), 1)
    os.dup2(writer.fileno(), 2)
    writer.close()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)


def flush_child_output(stdout: TextIO, stderr: TextIO) -> None:
    """In the child, after a task: flush what Python buffers, so that the agent has every byte of
    the attempt in the pipe before it reads the outcome; and give back the streams the task may
    have replaced (``sys.stdout = ...`` must not swallow the next task's prints)."""
    for stream in (sys.stdout, sys.stderr, stdout, stderr):
        flush = getattr(stream, "flush", None)
        if callable(flush):
            try:
                flush()
            except Exception:  # a broken user stream must not keep the outcome from being sent
                continue
    sys.stdout, sys.stderr = stdout, stderr

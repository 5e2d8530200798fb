"""What the worker agent hands to a task's child process, and what comes back.

The child never talks to AWS: it receives every input as bytes and returns outputs plus whatever the
task *staged* (results it created, subtasks it submitted). The agent makes staged work live only if
the attempt succeeds, which is how a failed attempt discards its subtasks for free. Both dataclasses
are pickled across a pipe, so they hold plain data only.

What the task prints does not travel in the outcome: the agent reads the child's stdout and stderr
from a pipe of their own while the task runs (so a killed task keeps what it printed) and hands the
tail on as a :class:`TaskLog`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

#: What an exception's ``args`` may hold to travel with its error: JSON scalars only, so the
#: control plane stores them as they are and the client rebuilds them without unpickling anything.
PortableArg = str | int | float | bool | None

#: Longest JSON text of an exception's ``args`` that travels; larger args stay behind (the message
#: still carries their ``str``), so one huge argument cannot bloat every aborted result's item.
MAX_ARGS_CHARS = 2000


@dataclass(frozen=True)
class TaskInput:
    task_id: str
    session_id: str
    handler: str
    payload: bytes
    #: Every data dependency's value by result id, already downloaded by the agent.
    dependencies: dict[str, bytes]
    expected_outputs: list[str]
    #: Effective task options (a TaskOptions dict).
    options: dict[str, Any]
    attempt: int = 1
    #: Last recorded values of the (key, name) pairs asked for in ``options["metrics"]``, fetched
    #: by the agent with the inputs; a pair never recorded (or expired) is absent.
    metrics: dict[tuple[str, str], float] = field(default_factory=dict)
    #: Lazy data dependencies: not in ``dependencies``; the task fetches them on demand.
    lazy: list[str] = field(default_factory=list)
    #: Optional data dependencies that were aborted, with the root failure each records.
    aborted: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskLog:
    """What one attempt printed on stdout and stderr, merged in the order a terminal shows them.

    The worker keeps a bounded tail (the end of a log says why a task failed); ``cut`` counts the
    bytes printed before it, so that a reader is told the log is not whole.
    """

    tail: bytes
    cut: int = 0

    @property
    def size(self) -> int:
        """Bytes the attempt printed in all."""
        return self.cut + len(self.tail)

    def text(self) -> str:
        """The tail as text (undecodable bytes replaced), without the cut notice: see :func:`render_log`."""
        return self.tail.decode("utf-8", errors="replace")


def render_log(text: str, cut: int) -> str:
    """A log tail as a reader gets it: ``... N bytes cut ...`` first when the beginning is gone."""
    return f"... {cut} bytes cut ...\n{text}" if cut else text


@dataclass(frozen=True)
class StagedResult:
    """A result created by the running task; with ``data`` it is born Completed."""

    result_id: str
    name: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class StagedTask:
    """A subtask submitted by the running task. Naming one of the parent's expected outputs in
    ``expected_outputs`` delegates that output to this subtask (ownership moves on success)."""

    task_id: str
    handler: str
    payload: bytes
    data_dependencies: list[str]
    expected_outputs: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    #: What it runs, for people (see ``TaskSpec.label``).
    label: str | None = None
    #: Its data dependencies of the optional and of the lazy kind (see ``TaskSpec``).
    optional_dependencies: list[str] = field(default_factory=list)
    lazy_dependencies: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RemoteError:
    """An exception raised by user code, flattened so it survives pickling whatever its type."""

    type: str
    message: str
    traceback: str
    #: False when retrying cannot help (e.g. the handler name is unknown).
    retryable: bool = True
    #: The exception's ``args`` when they are JSON scalars (see :func:`portable_args`), so that the
    #: client can rebuild an instance of the task's own exception type with them.
    args: list[PortableArg] | None = None


@dataclass(frozen=True)
class Recorded:
    """A value the task recorded under a business key (``skyloom.metrics.record``)."""

    key: str
    name: str
    value: float
    #: Unix time of the record call.
    at: float


@dataclass(frozen=True)
class TaskOutcome:
    #: Values of the expected outputs this task produced itself (not delegated).
    outputs: dict[str, bytes] = field(default_factory=dict)
    staged_results: list[StagedResult] = field(default_factory=list)
    staged_tasks: list[StagedTask] = field(default_factory=list)
    error: RemoteError | None = None
    #: Measurements, written with the attempt's commit (discarded if it fails, like staged work).
    measurements: list[Recorded] = field(default_factory=list)
    #: The attempt read or wrote the task's checkpoint: the agent drops it once the task completes.
    checkpointed: bool = False
    #: Lazy inputs the task fetched: how many, their bytes, and the seconds it took (the agent adds
    #: them to the attempt's input transfers).
    lazy_fetches: int = 0
    lazy_bytes: int = 0
    lazy_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def portable_args(exc: BaseException) -> list[PortableArg] | None:
    """``exc.args`` as a JSON-safe list, or None when they cannot travel as plain data.

    Only scalars travel (a bool is kept a bool, a float must be finite): anything else would need
    pickling, and an error is read by clients that may not be able to unpickle the worker's objects.

    Example:
        >>> portable_args(ValueError("bad trade", 42))
        ['bad trade', 42]
        >>> portable_args(KeyError(object())) is None
        True
    """
    args = getattr(exc, "args", None)
    if not isinstance(args, tuple):
        return None
    for arg in args:
        if arg is not None and type(arg) not in (str, int, float, bool):
            return None
        if type(arg) is float and not math.isfinite(arg):
            return None
    if len(json.dumps(list(args))) > MAX_ARGS_CHARS:
        return None
    return list(args)

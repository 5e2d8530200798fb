"""The one shape of a task to submit, shared by client sessions and running tasks.

A task submitted from a laptop and a subtask submitted from inside a handler are the same thing with
a different transport, so they are described by the same value. Payloads are raw bytes here; the
HTTP layer base64-encodes them and the worker agent stores them, so no user ever sees the wire
format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from skyloom.core.graph import check_dependency_kinds
from skyloom.core.protocol import MAX_LABEL_LENGTH
from skyloom.options import TaskOptions


@dataclass(frozen=True)
class TaskRequest:
    """A task to submit: a handler, its payload, the results it reads and the results it must produce.

    Ids are chosen client-side (``task_id=None`` draws a random one) so that a retried request
    creates nothing twice.

    Example:
        >>> out, = session.create_results(["greeting"])
        >>> session.submit_tasks([TaskRequest("echo", expected_outputs=[out], payload=b"hi")])
    """

    handler: str
    expected_outputs: Sequence[str]
    payload: bytes = b""
    data_dependencies: Sequence[str] = ()
    options: TaskOptions = field(default_factory=TaskOptions)
    task_id: str | None = None
    #: What the task runs, for people: listings, ``skyloom stats`` and ``skyloom graph`` show it
    #: instead of the handler (``@skyloom.task`` sets the function's ``module.qualname``).
    label: str | None = None
    #: Data dependencies of the *optional* kind: if one is aborted, the task runs anyway and finds it
    #: in ``ctx.aborted`` (with the reason) instead of being cancelled. Each is in ``data_dependencies``.
    optional_dependencies: Sequence[str] = ()
    #: Data dependencies of the *lazy* kind: not downloaded before the task starts; ``ctx.fetch(id)``
    #: downloads one on demand. Each is in ``data_dependencies``.
    lazy_dependencies: Sequence[str] = ()

    def __post_init__(self) -> None:
        # Tuples, so that a caller mutating its list afterwards cannot change a buffered task.
        object.__setattr__(self, "expected_outputs", tuple(self.expected_outputs))
        object.__setattr__(self, "data_dependencies", tuple(self.data_dependencies))
        object.__setattr__(self, "optional_dependencies", tuple(self.optional_dependencies))
        object.__setattr__(self, "lazy_dependencies", tuple(self.lazy_dependencies))
        check_dependency_kinds(self.data_dependencies, self.optional_dependencies, self.lazy_dependencies, "")
        if not self.handler:
            raise ValueError("TaskRequest.handler must name a handler, e.g. 'skyloom.call'")
        if not self.expected_outputs:
            raise ValueError(
                "TaskRequest.expected_outputs is empty: every task produces at least one result; "
                "create one with create_results() first"
            )
        if not isinstance(self.payload, bytes | bytearray | memoryview):
            raise TypeError(f"TaskRequest.payload must be bytes, got {type(self.payload).__name__}")
        object.__setattr__(self, "payload", bytes(self.payload))
        if self.label is not None and not 0 < len(self.label) <= MAX_LABEL_LENGTH:
            raise ValueError(f"TaskRequest.label must be 1 to {MAX_LABEL_LENGTH} characters")

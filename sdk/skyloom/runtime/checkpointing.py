"""``skyloom.checkpoint``, ``skyloom.restore`` and ``skyloom.on_preempt``: what a running task calls
so that a later attempt starts where it stopped, not from scratch.

Each attempt gets one :class:`Checkpointer`, made on first use. Its first call reads the task's
stored checkpoint once: what an earlier attempt left (what :func:`restore` returns) and the
sequence number to continue from. Each :func:`checkpoint` then writes the next number, durably,
before it returns (see :mod:`skyloom.core.checkpoints` for why a stale attempt cannot overwrite a
newer one). The store is reached from the child process itself, lazily: tasks that never
checkpoint import and call nothing.
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from skyloom.runtime import store
from skyloom.runtime.context import TaskContext, active_context

if TYPE_CHECKING:
    from skyloom.core.checkpoints import Stored

log = logging.getLogger("skyloom.checkpoints")



def checkpoint(state: object) -> int:
    """Save ``state`` as this task's latest checkpoint, durably, before returning.

    A later attempt of the same task (a retry, or after its worker was killed, reclaimed or drained)
    gets it back from :func:`restore`. Small states sit inline in DynamoDB, large ones go to S3; only
    the latest is kept, and it is dropped when the task completes.

    Args:
        state: any picklable value.

    Returns:
        The checkpoint's sequence number within the task (1 for its first).

    Raises:
        RuntimeError: called outside a running task.
        TypeError: ``state`` cannot be pickled.
        CheckpointSuperseded: a newer attempt of this task has checkpointed: this one is stale.

    Example:
        >>> @skyloom.task
        ... def simulate(paths: int) -> float:
        ...     done, total = skyloom.restore(default=(0, 0.0))
        ...     for i in range(done, paths):
        ...         total += one_path(i)
        ...         if i % 1000 == 0:
        ...             skyloom.checkpoint((i + 1, total))
        ...     return total / paths
    """
    return _checkpointer("skyloom.checkpoint()").save(state)


def restore(default: Any = None) -> Any:
    """The latest checkpoint an earlier attempt of this task saved, or ``default`` if there is none.

    Raises:
        RuntimeError: called outside a running task.

    Example:
        >>> step = skyloom.restore(default=0)
    """
    return _checkpointer("skyloom.restore()").restore(default)


def on_preempt(hook: Callable[[], object]) -> None:
    """Call ``hook()`` once if this task's worker is reclaimed (SIGTERM: a Spot interruption, a
    scale-in) while the task runs: the moment to take a last :func:`checkpoint`.

    The hook runs in the task's main thread, between two of its bytecodes, at the start of the
    worker's grace period; the task then goes on, and is given back if the grace ends first. An
    exception in the hook is logged, not raised into the task.

    Raises:
        RuntimeError: called outside a running task.

    Example:
        >>> skyloom.on_preempt(lambda: skyloom.checkpoint(state))
    """
    if not callable(hook):
        raise TypeError(f"skyloom.on_preempt() needs a callable, got {type(hook).__name__}")
    _checkpointer("skyloom.on_preempt()").hooks.append(hook)


def preempt_running() -> None:
    """Run the hooks of the task running in this process (called on the preemption signal)."""
    ctx = active_context()
    if ctx is None:
        return
    cp = _of(ctx)
    if cp is not None:
        cp.preempt()


class Checkpointer:
    """The checkpoints of one attempt: what it inherited, the sequence it continues, its hooks."""

    def __init__(self, ctx: TaskContext) -> None:
        self._task_id = ctx.task_id
        self._session_id = ctx.session_id
        self._attempt = int(ctx.attempt)
        self._lock = threading.RLock()
        self._loaded = False
        self._inherited: Stored | None = None
        self._seq = 0
        self._s3_key: str | None = None
        self._resumed = False
        self._saving = False
        self._preempted = False
        self._deferred = False
        #: Whether this attempt read or wrote the store (the agent then drops the value on success).
        self.touched = False
        self.hooks: list[Callable[[], object]] = []

    def save(self, state: object) -> int:
        try:
            data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"skyloom.checkpoint() needs a picklable state: {exc}") from exc
        from skyloom.core import checkpoints

        with self._lock:
            self._saving = True
            try:
                self._load()
                seq = self._seq + 1
                self._s3_key = checkpoints.save(store.settings(), self._session_id, self._task_id, self._attempt,
                                                seq, data, replaces=self._s3_key)
                self._seq = seq
            finally:
                self._saving = False
        if self._deferred:  # the preemption signal came while this one was being written
            self._deferred = False
            self._run_hooks()
        return seq

    def restore(self, default: Any) -> Any:
        from skyloom.core import checkpoints

        with self._lock:
            self._load()
            stored = self._inherited
            if stored is None or stored.data is None:
                return default
            if not self._resumed:
                self._resumed = True
                checkpoints.record_resume(self._task_id, self._attempt, stored)
            return pickle.loads(stored.data)

    def preempt(self) -> None:
        if self._preempted:
            return
        self._preempted = True
        if self._saving:
            self._deferred = True  # after the write in progress: no nested write of the same item
            return
        self._run_hooks()

    def _run_hooks(self) -> None:
        for hook in list(self.hooks):
            try:
                hook()
            except Exception:
                log.exception("a preemption hook of task %s failed", self._task_id)

    def _load(self) -> None:
        """Read what earlier attempts left, once per attempt."""
        if self._loaded:
            return
        from skyloom.core import checkpoints

        settings = store.settings()
        self._inherited, self._seq = checkpoints.load(settings, self._task_id)
        self._s3_key = self._inherited.s3_key if self._inherited is not None else None
        self._loaded = True
        self.touched = True


def _checkpointer(what: str) -> Checkpointer:
    ctx = active_context()
    if ctx is None:
        raise RuntimeError(f"{what} is only available inside a running task")
    cp = _of(ctx)
    if cp is None:
        cp = Checkpointer(ctx)
        ctx.checkpointer = cp
    return cp


def _of(ctx: TaskContext) -> Checkpointer | None:
    cp = ctx.checkpointer
    return cp if isinstance(cp, Checkpointer) else None

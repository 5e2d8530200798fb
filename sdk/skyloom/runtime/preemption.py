"""How a worker tells the task in its child process that the worker is being reclaimed.

On a Spot reclaim the agent gets SIGTERM and has a grace period to drain; a long task will not
finish in it, but it can save its state. The agent sends :data:`PREEMPT_SIGNAL` to each child at
the start of the drain; the child runs the hooks its task registered with ``skyloom.on_preempt``
(typically a last ``skyloom.checkpoint``) in its main thread, between two bytecodes of the task,
and the task goes on until it ends or the grace is over.

This module is imported by the agent and, at start, by every child: it imports nothing heavy.
"""

from __future__ import annotations

import signal
from types import FrameType

#: The signal the agent sends a child whose worker is draining (None where the OS has no SIGUSR1).
PREEMPT_SIGNAL: signal.Signals | None = getattr(signal, "SIGUSR1", None)


def install() -> None:
    """In a child process, at start: run the task's hooks on :data:`PREEMPT_SIGNAL`, and never die
    of it (its default action ends the process, which would lose the task's last checkpoint)."""
    if PREEMPT_SIGNAL is not None:
        signal.signal(PREEMPT_SIGNAL, _on_signal)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    from skyloom.runtime.checkpointing import preempt_running  # the task's modules are loaded by now

    preempt_running()

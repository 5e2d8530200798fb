"""Measurements that outlive sessions, from inside a task (issue 15).

A task records values under a business key (a trade id); later tasks of any session read the last
one back, and clients read values and history (``client.metrics``, ``skyloom metrics show KEY``).
The typical use is sizing work from history: record how long a unit of work took, and size the next
run's tasks from it (``examples/adaptive_sizing.py``).

Example:
    >>> @skyloom.task(metrics=[("TRD-42", "seconds_per_path")])
    ... def price(trade_id: str) -> float:
    ...     per_path = skyloom.metrics.latest(trade_id, "seconds_per_path") or 1e-4
    ...     paths = int(5.0 / per_path)                      # about 5 s of work
    ...     start = time.perf_counter()
    ...     value = monte_carlo(trade_id, paths)
    ...     skyloom.metrics.record(trade_id, "seconds_per_path", (time.perf_counter() - start) / paths)
    ...     return value
"""

from __future__ import annotations

from skyloom.runtime.context import current_context

__all__ = ["latest", "record"]


def record(key: str, name: str, value: float) -> None:
    """Record ``value`` as ``name`` under ``key``; stored when the running attempt succeeds, kept
    after its session is closed or purged, for the stack's retention (``skyloom:metricsRetentionDays``).

    Raises:
        RuntimeError: not called inside a task.
        InvalidArgument: a bad key, name or value (see :meth:`skyloom.TaskContext.record`).
    """
    current_context().record(key, name, value)


def latest(key: str, name: str) -> float | None:
    """The last value of ``name`` under ``key`` when the running task started, or None if there was
    none. No call is made: the task must list ``(key, name)`` in its ``metrics`` option.

    Raises:
        RuntimeError: not called inside a task.
        InvalidArgument: the pair is not in the task's ``metrics`` option.
    """
    return current_context().latest(key, name)

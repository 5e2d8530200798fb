"""Run times per handler or function across sessions: what the agent adds to the measurements table
and to CloudWatch, once a minute rather than once a task.

Each completed attempt's compute time goes into an in-memory histogram per (owner, label, minute);
a closed minute is written once (:func:`skyloom.core.measurements.add_durations`, a conditional
put keyed by this worker: a retried flush writes nothing twice) and emitted as the EMF metric
``FunctionRunTime`` (dimensions partition and label; up to :data:`EMF_SAMPLE` values a minute, the
first ones). The agent flushes what is left when it stops; a SIGKILL loses at most the current
minute of statistics, never a task.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from skyloom.core import measurements
from skyloom.core.config import Settings
from skyloom.core.measurements import WINDOW_SECONDS, Histogram
from skyloom_server.fargate_worker.telemetry import emit_label_run_times, logger

#: Values per label and minute sent to CloudWatch (an EMF metric holds at most 100 values).
EMF_SAMPLE = 100


@dataclass
class _Window:
    hist: Histogram = field(default_factory=Histogram)
    sample: list[float] = field(default_factory=list)


class DurationBook:
    """Run times of this agent's completed attempts, flushed a minute at a time by its own thread."""

    def __init__(self, settings: Settings, *, worker_id: str, partition: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._worker = worker_id
        self._partition = partition
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[int, str, str], _Window] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, owner: str, label: str, seconds: float) -> None:
        """Count one completed attempt's compute time."""
        start = int(self._clock()) // WINDOW_SECONDS * WINDOW_SECONDS
        with self._lock:
            w = self._windows.setdefault((start, owner, label), _Window())
            w.hist.add(seconds)
            if len(w.sample) < EMF_SAMPLE:
                w.sample.append(seconds)

    def flush(self, *, everything: bool = False) -> int:
        """Write the closed minutes (every minute with ``everything``); those that fail stay for the
        next flush. Returns how many were written."""
        now = self._clock()
        with self._lock:
            due = {k: w for k, w in self._windows.items() if everything or k[0] + WINDOW_SECONDS <= now}
            for k in due:
                del self._windows[k]
        written = 0
        for (start, owner, label), w in sorted(due.items()):
            try:
                measurements.add_durations(self._settings, owner=owner, label=label, window=start,
                                           worker=self._worker, hist=w.hist)
            except Exception:
                logger.exception("could not write a minute of run times; keeping it for the next flush")
                with self._lock:
                    self._windows.setdefault((start, owner, label), w)
                continue
            written += 1
            try:
                emit_label_run_times(self._partition, label, w.sample)
            except Exception:  # metrics must never stop the agent
                logger.exception("could not emit the run-time metric")
        return written

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="durations", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write every minute still held."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush(everything=True)

    def _loop(self) -> None:
        while not self._stop.wait(WINDOW_SECONDS / 4):
            self.flush()

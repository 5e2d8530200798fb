"""What the agent holds, counted under one lock: the messages it received and has not settled,
the tasks it finished with, the attempts waiting to be reported, and its stats.

The poller asks it how many messages to receive (:meth:`Ledger.wait_for_budget`), the slots and
reporters tell it when they are done with one (:meth:`Ledger.forget`), the heartbeat asks it what
is due. Kept apart so that no thread reaches into another's counters.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable

from skyloom_server.fargate_worker.messages import Held
from skyloom_server.fargate_worker.policy import in_flight_limit, receive_budget, refill_budget
from skyloom_server.fargate_worker.settings import WorkerSettings
from skyloom_server.fargate_worker.shutdown import StopControl

#: An agent idle this long sizes its next receive as if it knew nothing of its tasks' duration.
IDLE_FORGET_SECONDS = 0.25


class Ledger:
    """Counters shared by the agent's threads; every method is thread-safe."""

    def __init__(self, config: WorkerSettings) -> None:
        self._config = config
        #: Guards everything below; notified whenever a slot frees up.
        self._lock = threading.Condition()
        self.stats: Counter[str] = Counter()
        self._held: set[Held] = set()
        self._in_flight = 0  # messages handed to slots and not finished with
        self._finished = 0  # claimed tasks finished with, whatever the outcome (max_tasks)
        self._reporting = 0  # attempts handed to reporters and not yet reported
        #: What a slot spends per task, smoothed (None until measured): sizes the backlog.
        self._task_seconds: float | None = None
        self._observed_at = 0.0

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def wait_for_budget(self, stop: StopControl, *, ahead: bool = False) -> int:
        """Block until a slot is free; returns how many messages to ask for (0 once stopping).

        ``ahead``: for an upper priority level, whose messages jump the backlog: it may take as many
        as the agent has slots beyond the backlog, at once (no refill hysteresis), so that a backlog
        of lower work received just before never holds it back for more than a task per slot.
        """
        max_tasks = self._config.max_tasks
        with self._lock:
            while not stop.stopping:
                if max_tasks is not None and self._finished >= max_tasks:
                    stop.finish(f"max_tasks={max_tasks} reached")
                    break
                # Attempts being reported no longer occupy a slot's child: up to one per slot may
                # be reported behind while the slots start their next tasks.
                busy = self._in_flight - min(self._reporting, self._config.slots)
                limit = in_flight_limit(self._config.slots, self._config.prefetch, self._estimate())
                if ahead:
                    budget = receive_budget(limit + self._config.slots, busy)
                else:
                    budget = refill_budget(limit, self._config.slots, busy)
                if max_tasks is not None:  # counts every task not finished with
                    budget = min(budget, receive_budget(max_tasks, self._in_flight, max_tasks, self._finished))
                if budget:
                    return budget
                self._lock.wait(0.5)
        return 0

    def observe(self, seconds: float) -> None:
        """A slot spent ``seconds`` on one task (prepare and execute): the backlog follows it, at
        once when tasks get longer (holding too many is what delays other agents and priorities),
        gradually when they get shorter."""
        with self._lock:
            prev = self._task_seconds
            self._task_seconds = seconds if prev is None else max(seconds, 0.8 * prev + 0.2 * seconds)
            self._observed_at = time.monotonic()

    def _estimate(self) -> float | None:
        """The task duration to size the backlog on; forgotten after an idle spell, when the next
        work may be of another kind (called under the lock)."""
        if self._in_flight == 0 and time.monotonic() - self._observed_at > IDLE_FORGET_SECONDS:
            self._task_seconds = None
        return self._task_seconds

    def admit(self, received: Iterable[Held]) -> None:
        """Messages received: held (the heartbeat keeps them) and in flight until forgotten."""
        received = list(received)
        with self._lock:
            self._held.update(received)
            self._in_flight += len(received)

    def forget(self, held: Held) -> None:
        """Done with ``held``, whatever became of it: no more heartbeats, a slot is free."""
        held.reporting = True
        with self._lock:
            self._held.discard(held)
            self._in_flight -= 1
            if held.task is not None:
                self._finished += 1
            self._lock.notify_all()

    def reporting_started(self) -> None:
        with self._lock:
            self._reporting += 1

    def reporting_done(self) -> None:
        with self._lock:
            self._reporting -= 1

    def due(self, now: float) -> list[Held]:
        """Held messages whose heartbeat is due."""
        with self._lock:
            return [h for h in self._held if h.next_beat <= now]

    def running(self) -> list[Held]:
        """Held messages whose task's code runs now in a child process."""
        with self._lock:
            return [h for h in self._held if h.child is not None]

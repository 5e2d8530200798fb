"""Lease keeping: one thread for the whole agent extends every held message's visibility and every
claimed task's lease, kills the child of a task whose lease was lost, watches the children's
memory, and reports how busy the slots are.

It beats every lease/3 (and visibility/3): a lease is lost only after three missed beats in a row,
so a GC pause, a throttled call or a slow network cannot let two agents run one task.
"""

from __future__ import annotations

import threading
import time

from skyloom.core import claims
from skyloom.core.config import Settings
from skyloom_server.fargate_worker.attempt import ExecutionOps
from skyloom_server.fargate_worker.ledger import Ledger
from skyloom_server.fargate_worker.messages import Held, Mailbox
from skyloom_server.fargate_worker.telemetry import (
    MEMORY_WARN_FRACTION,
    BusyMeter,
    StartCounts,
    emit_busy_fraction,
    emit_memory_warning,
    logger,
    rss_bytes,
)

#: How long a task taken on its receipt runs before it is claimed (at most one beat).
CLAIM_AFTER_SECONDS = 1.0


class Heartbeat:
    """The agent's heartbeat thread.

    Args:
        settings: the stack's settings (lease and visibility timeout).
        partition: the agent's partition (a metric dimension).
        worker_id: the lease owner.
        ops: the heartbeat operation of :mod:`skyloom.core.execution` (:mod:`skyloom.core.claims`).
        ledger: what the agent holds.
        mailbox: extends the messages' visibility.
        busy: the slots' busy meter.
        busy_report_seconds: seconds between two busy reports.
        memory_limit: a task child's memory limit in bytes; None turns the warning off.
    """

    def __init__(self, settings: Settings, *, partition: str, worker_id: str, ops: ExecutionOps, ledger: Ledger,
                 mailbox: Mailbox, busy: BusyMeter, busy_report_seconds: float, memory_limit: int | None,
                 starts: StartCounts | None = None) -> None:
        self._settings = settings
        self._partition = partition
        self._worker_id = worker_id
        self._ops = ops
        self._ledger = ledger
        self._mailbox = mailbox
        self._busy = busy
        self._busy_report_seconds = busy_report_seconds
        self._memory_limit = memory_limit
        self._starts = starts
        self.every = min(settings.lease_seconds, float(settings.visibility_timeout)) / 3
        #: A task taken on its receipt is claimed once it has run this long (see claims.take):
        #: a task of a second or more then shows as Processing, and a lost one is charged.
        self.claim_after = min(CLAIM_AFTER_SECONDS, self.every)
        self._beating = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._beating.set()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._beating.clear()
        if self._thread is not None:
            self._thread.join(5.0)

    def _loop(self) -> None:
        """Extend what we hold every lease/3 (and visibility/3), well before either lapses."""
        tick = min(1.0, self.every / 4, self.claim_after / 2)
        next_report = time.monotonic() + self._busy_report_seconds
        while self._beating.is_set():
            time.sleep(tick)
            now = time.monotonic()
            try:
                self._watch_memory()
            except Exception:  # a sampling bug must not stop the beats: leases would be lost
                logger.exception("could not sample the children's memory")
            if now >= next_report:
                next_report = now + self._busy_report_seconds
                self._report_busy()
            self._tell_starts()
            for held in self._ledger.running():
                task = held.task
                if task is not None and not claims.claimed(task) and now - held.running_since >= self.claim_after:
                    self._beat(held)  # the claim; its message keeps its own schedule
            extend = []
            for held in self._ledger.due(now):
                held.next_beat = now + self.every
                if self._beat(held):
                    extend.append(held)
            self._mailbox.extend(extend)

    def _beat(self, held: Held) -> bool:
        """Extend the task's lease, if claimed; True if its message's visibility is to be extended."""
        if held.lost.is_set():
            return False  # the slot is about to make the message visible again
        task = held.task
        if task is not None:
            try:
                with held.claim_lock:
                    if not claims.claimed(task) and (held.reporting or held.child is None):
                        return True  # taken, not running (or done): its message is all it holds
                    alive = self._ops.heartbeat(self._settings, task, self._worker_id)
            except Exception:
                logger.exception(f"heartbeat of task {task.task_id} failed; retrying soon")
                held.next_beat = time.monotonic() + min(self.every, 5.0)
                alive = True
            if not alive:
                if not held.reporting:
                    held.lost.set()
                    logger.warning(f"lease of task {task.task_id} lost; stopping it")
                    child = held.child
                    if child is not None:
                        child.kill()
                return False
        return True

    def _tell_starts(self) -> None:
        """The attempts started since the last line (at most a tick ago), if any."""
        if self._starts is None:
            return
        try:
            self._starts.flush()
        except Exception:  # metrics must never stop the beats
            logger.exception("could not emit the started attempts' metrics")

    def _report_busy(self) -> None:
        """The fraction of slot time spent holding a task since the last report (log + metric)."""
        try:
            fraction = self._busy.take()
            logger.info("busy fraction", extra={"busy_fraction": round(fraction, 4), "slots": self._busy.slots})
            emit_busy_fraction(self._partition, fraction)
        except Exception:
            logger.exception("could not report the busy fraction")

    def _watch_memory(self) -> None:
        """Sample each running child's memory: keep the attempt's peak (``ChildMemoryHighWater``
        when the child cannot say it itself, e.g. it was OOM-killed), and warn once per attempt when
        it reaches 80% of its limit: the next step is the OOM killer, and the log says which task
        it was (never a metric dimension)."""
        for held in self._ledger.running():
            child = held.child
            pid = child.pid if child is not None else None
            rss = rss_bytes(pid) if pid is not None else None
            if rss is None:
                continue
            held.memory_peak = max(held.memory_peak, rss)
            if held.memory_warned or self._memory_limit is None or rss < MEMORY_WARN_FRACTION * self._memory_limit:
                continue
            held.memory_warned = True
            task = held.task
            handler = str(task.handler) if task is not None else "unknown"
            logger.warning(
                "task's child process is near its memory limit",
                extra={"task_id": held.message.task_id, "handler": handler, "rss_bytes": rss,
                       "limit_bytes": self._memory_limit},
            )
            try:
                emit_memory_warning(self._partition, handler)
            except Exception:
                logger.exception("could not emit the memory warning metric")

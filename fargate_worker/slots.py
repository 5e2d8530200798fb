"""The agent's working threads and the queues between them::

    poller --inbox--> [preparers: claim, load inputs] --ready--> slots: execute --reports--> reporters
                      (prefetch > 0; without, slots read the inbox and prepare themselves)

- a **slot** owns one :class:`~fargate_worker.child.ChildProcess` and runs one task at a time in it;
- a **preparer** (prefetch) claims the next task and downloads its inputs while the children
  compute, so that a slot starts its next task the moment it is free;
- a **reporter** uploads outputs, commits and settles the message of a finished attempt while its
  slot's child already runs the next task: communication overlaps computation. The slot hands it
  the attempt once the child has its next task (:class:`_FinishedAttempt`).

Every queue ends with ``None`` sentinels: the poller's end reaches the preparers (the last one
then ends the slots) or the slots; the reporters end after the slots.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

from skyloom.core.models import TaskModel
from skyloom.runtime.outcome import TaskInput
from skyloom_server.fargate_worker.attempt import Attempts
from skyloom_server.fargate_worker.child import ChildProcess
from skyloom_server.fargate_worker.ledger import Ledger
from skyloom_server.fargate_worker.messages import Held
from skyloom_server.fargate_worker.policy import Action, Backoff, Verdict, verdict
from skyloom_server.fargate_worker.settings import WorkerSettings
from skyloom_server.fargate_worker.shutdown import FORCED_EXIT_SECONDS, StopControl
from skyloom_server.fargate_worker.telemetry import BusyMeter, logger

Report = tuple[Held, TaskModel, Verdict, dict[str, float]]
#: At most this many finished attempts are reported together (one commit of up to 100 items).
REPORTS_PER_COMMIT = 25


class SlotPool:
    """The slots, preparers and reporters of one agent.

    Args:
        config: the agent's settings (slots, prefetch, overlap_reports).
        attempts: the steps each thread runs.
        ledger: where each thread says it is done with a message.
        stop: the agent's stop flags.
        busy: the slots' busy meter.
        child_factory: makes one ChildProcess per slot.
    """

    def __init__(self, config: WorkerSettings, *, attempts: Attempts, ledger: Ledger, stop: StopControl,
                 busy: BusyMeter, child_factory: Callable[[], ChildProcess]) -> None:
        self._config = config
        self._attempts = attempts
        self._ledger = ledger
        self._stop = stop
        self._busy = busy
        self.children = [child_factory() for _ in range(config.slots)]
        #: Received messages, highest priority first: a backlog may hold several levels at once.
        self._inbox = _Inbox()
        #: Prefetch: preparers claim and load inputs ahead of the slots, which take from here. Bounded:
        #: a claim holds a lease, so no more than ``prefetch`` tasks wait claimed (the rest of the
        #: backlog waits unclaimed in the inbox, where a higher-priority arrival can pass it).
        self._ready: queue.Queue[Held | None] = queue.Queue(maxsize=max(1, config.prefetch))
        #: Finished attempts waiting to be reported by the reporter threads (overlap_reports).
        self._reports: queue.Queue[Report | None] = queue.Queue()
        self._slots: list[threading.Thread] = []
        self._preparers: list[threading.Thread] = []
        self._reporters: list[threading.Thread] = []
        self._preparers_left = 0
        self._lock = threading.Lock()
        self._inbox_ended = False
        self._reports_ended = False

    def start(self) -> None:
        # Before the slots: a slot reads from the ready queue if there are preparers.
        self._preparers_left = self._config.prefetch
        for i in range(self._config.prefetch):
            self._preparers.append(_thread(self._preparer_loop, f"prefetch-{i}"))
        for i, child in enumerate(self.children):
            # Daemon: a slot stuck in an AWS call must not keep a stopping agent alive; what it
            # held is left to the lease sweeper and the visibility timeout.
            self._slots.append(_thread(self._slot_loop, f"slot-{i}", child))
        for i in range(self._config.slots if self._config.overlap_reports else 0):
            self._reporters.append(_thread(self._reporter_loop, f"reporter-{i}"))

    def hand(self, received: list[Held]) -> None:
        """Messages for the preparers, or the slots without prefetch."""
        for held in received:
            self._inbox.put(held)

    # ------------------------------------------------------------------------------ ending
    def drain(self) -> None:
        """Let running tasks finish and their reports land (raises ForcedShutdown past the grace)."""
        self.give_back_unstarted()
        self.end_inbox()
        self._stop.wait_for(self._slots)
        self.end_reports()  # after the slots: every hand-off is queued before it
        self._stop.wait_for(self._reporters)

    def close(self) -> None:
        """Leave nothing running: give back what did not start, kill what runs (its slot then
        releases it), and let the reports land within a bound."""
        self.give_back_unstarted()
        self.end_inbox()
        if any(s.is_alive() for s in self._slots):
            self._stop.force.set()
            self._kill_running()
        # Reports are finished work (and quick): let them land, within a bound.
        self.end_reports()
        deadline = time.monotonic() + FORCED_EXIT_SECONDS
        for reporter in self._reporters:
            reporter.join(max(0.0, deadline - time.monotonic()))

    def preempt(self) -> None:
        """Warn every running task that this worker is draining (their ``on_preempt`` hooks run)."""
        for child in self.children:
            child.preempt()

    def close_children(self) -> None:
        for child in self.children:
            try:
                child.close()
            except Exception:
                logger.exception("could not close a child process")

    def give_back_unstarted(self) -> None:
        """Received (or prepared) but not started: give back at once, for another agent."""
        queues: tuple[_Inbox | queue.Queue[Held | None], ...] = (self._inbox, self._ready)
        for q in queues:
            sentinels = 0
            while True:
                try:
                    held = q.get_nowait()
                except queue.Empty:
                    break
                if held is None:
                    sentinels += 1
                    continue
                try:
                    self._attempts.give_back(held)
                finally:
                    self._ledger.forget(held)
            for _ in range(sentinels):
                q.put(None)

    def end_inbox(self) -> None:
        """End the inbox's readers: the preparers (the last one then ends the slots) or the slots."""
        if not self._inbox_ended:
            self._inbox_ended = True
            for _ in self._preparers or self._slots:
                self._inbox.put(None)

    def end_reports(self) -> None:
        if not self._reports_ended:
            self._reports_ended = True
            for _ in self._reporters:
                self._reports.put(None)

    def _kill_running(self) -> None:
        """Kill every child; each slot then gives its task back (verdict RELEASE) and exits."""
        deadline = time.monotonic() + FORCED_EXIT_SECONDS
        while any(s.is_alive() for s in self._slots) and time.monotonic() < deadline:
            for child in self.children:  # repeated: a slot may have been just about to start one
                child.kill()
            for s in self._slots:
                s.join(0.1)
        if any(s.is_alive() for s in self._slots):
            logger.error("some slots did not stop in time; their tasks are left to the lease sweeper")

    # ------------------------------------------------------------------------------- loops
    def _slot_loop(self, child: ChildProcess) -> None:
        """A slot takes one message at a time until it receives the None sentinel: from the
        preparers' ready queue with prefetch, straight from the poller without."""
        self._warm_up(child)
        backoff = Backoff()
        source: _Source = self._ready if self._preparers else self._inbox
        finished = _FinishedAttempt(self._reports)
        try:
            while (held := finished.next_from(source)) is not None:
                handed_off = False
                try:
                    if self._stop.stopping:
                        finished.hand_over()
                        self._attempts.give_back(held)  # not started: another agent may run it
                    else:
                        handed_off = self._work(held, child, finished)
                    backoff.reset()
                except Exception:
                    finished.hand_over()
                    self._leave_to_sweeper(held, backoff)
                finally:
                    if not handed_off:
                        self._ledger.forget(held)
        finally:
            finished.hand_over()

    def _leave_to_sweeper(self, held: Held, backoff: Backoff) -> None:
        """After an AWS call failed past boto3's retries, or a bug: what DynamoDB holds is unknown,
        so touch nothing more. The lease expires and the sweeper re-queues; the message reappears
        after its visibility timeout. Pause (keeping this thread busy) so that an outage does not
        churn through the queue."""
        delay = backoff.next()
        logger.exception(f"task {held.message.task_id}: left to the lease sweeper; pausing {delay:.1f} s")
        self._stop.stop.wait(delay)

    def _preparer_loop(self) -> None:
        """Prefetch: claim the next message's task and download its inputs while the slots'
        children compute. The lease starts at the claim; the heartbeat keeps it (and the message)
        alive while it waits."""
        backoff = Backoff()
        try:
            while (held := self._inbox.get()) is not None:
                ready = False
                try:
                    if self._stop.stopping:
                        self._attempts.give_back(held)
                    else:
                        ready = self._attempts.prepare(held)
                    backoff.reset()
                except Exception:
                    self._leave_to_sweeper(held, backoff)
                finally:
                    if ready:
                        self._ready.put(held)
                    else:
                        self._ledger.forget(held)
        finally:
            with self._lock:
                self._preparers_left -= 1
                last = self._preparers_left == 0
            if last:  # nothing more can reach the ready queue: let the slots end after it
                for _ in self._slots:
                    self._ready.put(None)

    def _reporter_loop(self) -> None:
        """Report finished attempts while the slots' children already run the next tasks: every
        report queued by then at once, so that the successes share one commit (group commit: the
        longer a commit takes, the more the next one carries)."""
        backoff = Backoff()
        ended = False
        while not ended and (item := self._reports.get()) is not None:
            batch = [item]
            while len(batch) < REPORTS_PER_COMMIT:
                try:
                    more = self._reports.get_nowait()
                except queue.Empty:
                    break
                if more is None:  # this reporter's end: after this batch
                    ended = True
                    break
                batch.append(more)
            try:
                self._attempts.report_many(batch)
                backoff.reset()
            except Exception:
                delay = backoff.next()  # as in a slot: the lease sweeper takes over these tasks
                logger.exception(f"tasks {', '.join(t.task_id for _, t, _, _ in batch)}: report failed, left to "
                                 f"the lease sweeper; pausing {delay:.1f} s")
                self._stop.stop.wait(delay)
            finally:
                for held, _, _, _ in batch:
                    self._ledger.reporting_done()
                    self._ledger.forget(held)

    def _warm_up(self, child: ChildProcess) -> None:
        """Start the slot's child before its first task, and from this thread: the child's
        death-with-parent signal is tied to the thread that started it, and slots live longest."""
        try:
            child.start()
        except Exception:
            logger.exception("could not start a child process ahead of work; trying again on the first task")

    def _work(self, held: Held, child: ChildProcess, finished: _FinishedAttempt) -> bool:
        """One message: claim -> load inputs -> execute with heartbeat -> report -> delete.

        Returns True if the report was handed to a reporter thread (which then forgets ``held``).
        """
        started = time.monotonic()
        if held.prepared is None:
            finished.hand_over()  # the last attempt's report does not wait for this claim and download
            if not self._attempts.prepare(held):
                return False
        task, prepared = held.task, held.prepared
        assert task is not None and prepared is not None
        inp, metrics = prepared
        slot = threading.get_ident()
        self._busy.start(slot)
        try:
            with self._attempts.task_context(task):
                if isinstance(inp, TaskInput):
                    ran = self._attempts.execute(held, child, inp, metrics, sent=finished.hand_over)
                else:
                    ran = inp
                finished.hand_over()  # done at the child's start; here if the task never reached it
                self._ledger.observe(time.monotonic() - started)
                v = verdict(ran, lease_lost=held.lost.is_set())
                if self._reporters and v.action in (Action.COMPLETE, Action.FAIL) and not self._stop.force.is_set():
                    self._ledger.reporting_started()
                    finished.hold((held, task, v, metrics))
                    return True
                self._attempts.report(held, task, v, metrics)
                return False
        finally:
            self._busy.stop(slot)


class _Source(Protocol):
    def get(self) -> Held | None: ...
    def get_nowait(self) -> Held | None: ...


class _FinishedAttempt:
    """A slot's last finished attempt, handed to the reporters once the slot's child has its next task.

    Handing it over at once wakes a reporter (a commit's CPU: serialising, signing, parsing the
    answer) at the moment the child must wake for the next task: on a busy host one start in five
    then waited 1-4 ms for a CPU, and utilisation lost about a point. The report waits for nothing
    else: it is handed over as the next input reaches the child, before the slot waits for a message
    or works on one that needs a claim, and when the slot ends.
    """

    def __init__(self, reports: queue.Queue[Report | None]) -> None:
        self._reports = reports
        self._report: Report | None = None

    def hold(self, report: Report) -> None:
        self.hand_over()
        self._report = report

    def hand_over(self) -> None:
        report, self._report = self._report, None
        if report is not None:
            self._reports.put(report)

    def next_from(self, source: _Source) -> Held | None:
        """The slot's next message; the held report goes first if the slot would wait for one."""
        try:
            return source.get_nowait()
        except queue.Empty:
            self.hand_over()
            return source.get()


class _Inbox:
    """A FIFO per priority, highest first; the ``None`` sentinels come after every message."""

    def __init__(self) -> None:
        self._q: queue.PriorityQueue[tuple[float, int, Held | None]] = queue.PriorityQueue()
        self._seq = itertools.count()

    def put(self, held: Held | None) -> None:
        rank = float("inf") if held is None else -float(held.message.priority)
        self._q.put((rank, next(self._seq), held))

    def get(self) -> Held | None:
        return self._q.get()[2]

    def get_nowait(self) -> Held | None:
        return self._q.get_nowait()[2]


def _thread(target: Callable[..., None], name: str, *args: object) -> threading.Thread:
    t = threading.Thread(target=target, args=args, name=name, daemon=True)
    t.start()
    return t

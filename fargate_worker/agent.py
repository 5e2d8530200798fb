"""The worker agent: poll the partition's queues, claim, run each task in a child process while
heartbeating, report, delete the message; until told to stop.

The loop is a checklist (rq's worker, htc-grid's agent); each step lives in the module named
after it::

    main       Agent.run(): signals -> [wait for a free slot -> poll -> hand messages over]* -> drain
               (:mod:`.shutdown` stop flags and signals, :mod:`.ledger` counters, :mod:`.messages` SQS)
    slot x N   each with its own ChildProcess: claim -> load inputs -> execute -> report -> delete
               (:mod:`.slots` threads, :mod:`.attempt` the steps; preparers prefetch, reporters
               report while the slot runs its next task)
    heartbeat  one for all: extends every held message's visibility and every claimed task's lease;
               a lost lease kills that slot's child (:mod:`.heartbeat`)

Crash safety comes from the order of writes, not from this process surviving: DynamoDB is the
truth and every write is conditional, and a message is deleted only once DynamoDB says what became
of its task. SIGKILL at any instant therefore loses nothing: the lease expires and the sweeper
re-queues the task; the message reappears after its visibility timeout and claim() discards it if
it is a duplicate. SIGTERM (Spot interruption) drains: see :meth:`Agent.request_stop`.

Detection delay: a dead agent's task is re-queued once its lease (``SKYLOOM_LEASE_SECONDS``) has
run out and the sweeper has run: at worst lease + sweep interval. Production uses 60 s and a
one-minute sweep: the heartbeat beats every lease/3, so a lease is lost only after three missed
beats in a row, and a lost task waits at most ~2 minutes, the same order as Spot's interruption
notice. Tests use 3-5 s with a 1 s sweep.

Telemetry (:mod:`fargate_worker.telemetry`): per attempt, queue wait, input fetch, compute and
upload times, bytes in/out and the child's memory peak go on the task item (via ``complete()``)
and out as EMF metrics (dimensions partition and handler only), with counts of attempts started,
completed, retried and failed; each attempt is an X-Ray trace with fetch/compute/upload
subsegments; the slots' busy fraction is reported every ``busy_report_seconds``; a child nearing
80% of its memory limit is logged with its task id.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from skyloom.core import execution
from skyloom.core.aws import client
from skyloom.core.config import Settings
from skyloom.core.dispatching import queue_urls_by_priority
from skyloom_server.fargate_worker.attempt import Attempts, ExecutionOps
from skyloom_server.fargate_worker.child import ChildProcess
from skyloom_server.fargate_worker.durations import DurationBook
from skyloom_server.fargate_worker.heartbeat import Heartbeat
from skyloom_server.fargate_worker.ledger import Ledger
from skyloom_server.fargate_worker.messages import Held, Mailbox
from skyloom_server.fargate_worker.policy import Backoff, new_worker_id, poll_plan
from skyloom_server.fargate_worker.settings import WorkerConfigError, WorkerSettings
from skyloom_server.fargate_worker.shutdown import ForcedShutdown, StopControl
from skyloom_server.fargate_worker.slots import SlotPool
from skyloom_server.fargate_worker.telemetry import BusyMeter, logger, memory_limit_bytes

#: Seconds a stopping agent waits for its upper-level polls beyond their own wait (a slow answer).
JOIN_SLACK_SECONDS = 5.0


class Agent:
    """One worker agent process: ``Agent(settings, config).run()`` returns the exit code.

    Args:
        settings: the stack's settings (models must already be bound to them).
        config: this agent's settings.
        ops: the attempt operations; :mod:`skyloom.core.execution` unless testing.
        sqs: an SQS client; the process's shared one by default.
        child_factory: makes one ChildProcess per slot; by default one that runs the SDK's
            executor and enforces ``config.max_output_bytes``.
        worker_id: defaults to :func:`new_worker_id`.
    """

    def __init__(
        self,
        settings: Settings,
        config: WorkerSettings,
        *,
        ops: ExecutionOps = execution,
        sqs: Any = None,
        child_factory: Callable[[], ChildProcess] | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.worker_id = worker_id or new_worker_id()
        self._stop = StopControl(config.grace_seconds)
        self._ledger = Ledger(config)
        beat_every = min(settings.lease_seconds, float(settings.visibility_timeout)) / 3
        self._mailbox = Mailbox(sqs if sqs is not None else client("sqs", settings),
                                visibility_timeout=settings.visibility_timeout, beat_every=beat_every,
                                count=self._ledger.count)
        busy = BusyMeter(config.slots)
        # Run-time history goes where the real operations write; an agent on stand-in operations
        # (tests) keeps none rather than reach for a table nobody provisioned.
        self._durations = (DurationBook(settings, worker_id=self.worker_id, partition=config.partition)
                           if ops is execution else None)
        self._attempts = attempts = Attempts(settings, partition=config.partition, worker_id=self.worker_id, ops=ops,
                            mailbox=self._mailbox, ledger=self._ledger, stop=self._stop,
                            durations=self._durations)
        if child_factory is None:
            child_factory = functools.partial(ChildProcess, max_output_bytes=config.max_output_bytes)
        self._pool = SlotPool(config, attempts=attempts, ledger=self._ledger, stop=self._stop, busy=busy,
                              child_factory=child_factory)
        self._stop.on_drain(self._pool.preempt)
        self._heart = Heartbeat(settings, partition=config.partition, worker_id=self.worker_id, ops=ops,
                                ledger=self._ledger, mailbox=self._mailbox, busy=busy,
                                busy_report_seconds=config.busy_report_seconds,
                                memory_limit=memory_limit_bytes(slots=config.slots), starts=attempts.starts)
        self._urls: list[str] = []
        self._upper_pollers: list[threading.Thread] = []
        self._poll_backoff = Backoff()

    @property
    def stats(self) -> Counter[str]:
        """What happened to the messages this agent received, by outcome."""
        return self._ledger.stats

    # ------------------------------------------------------------------------------ the loop
    def run(self) -> int:
        """Work until stopped; 0 after an orderly or signalled stop, 1 if broken, 2 if misconfigured."""
        self._stop.install_signal_handlers()
        try:
            self._startup()
            while not self._stop.stopping:
                budget = self._ledger.wait_for_budget(self._stop)
                if budget:
                    self._poll_and_hand_over(budget)
            self._pool.drain()
        except ForcedShutdown as exc:
            logger.warning(f"forced shutdown ({exc}): giving every task back now")
        except WorkerConfigError as exc:
            logger.error(f"invalid configuration: {exc}")
            self._stop.exit_code = 2
        except Exception:
            logger.exception("the agent crashed; giving every task back")
            self._stop.exit_code = 1
        finally:
            self._teardown()
        return self._stop.exit_code

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop as for SIGTERM: the first call stops polling at once and lets running tasks finish
        within the grace period, then gives back whatever is left; a second call gives it all back
        now. Called from the signal handler (main thread) or by tests."""
        self._stop.request(reason)

    # ----------------------------------------------------------------------------- the steps
    def _startup(self) -> None:
        if self.settings.partition(self.config.partition) is None:
            known = ", ".join(p.name for p in self.settings.partitions)
            raise WorkerConfigError(f"partition {self.config.partition!r} is not in SKYLOOM_PARTITIONS ({known})")
        logger.append_keys(worker_id=self.worker_id, partition=self.config.partition)
        logger.info("agent starting", extra={"slots": self.config.slots, "prefetch": self.config.prefetch,
                                             "poll_wait": self.config.poll_wait, "burst": self.config.burst,
                                             "max_tasks": self.config.max_tasks})
        self._urls = self._resolve_queues()
        self._mailbox.start()
        self._heart.start()
        if self._durations is not None:
            self._durations.start()
        self._pool.start()
        for url in self._urls[:-1]:
            t = threading.Thread(target=self._upper_loop, args=(url,), name="poll-upper", daemon=True)
            t.start()
            self._upper_pollers.append(t)

    def _resolve_queues(self) -> list[str]:
        backoff = Backoff()
        while not self._stop.stopping:
            try:
                urls: list[str] = queue_urls_by_priority(self.settings, self.config.partition)
                return urls
            except Exception:
                delay = backoff.next()
                logger.exception(f"could not resolve the queue URLs; retrying in {delay:.1f} s")
                self._stop.stop.wait(delay)
        return []

    def _poll_and_hand_over(self, budget: int) -> None:
        """The bottom level (where the default priority lands) with a short long poll; the levels
        above too, but only when idle: while the agent works, each upper level has a long poll of
        its own (:meth:`_upper_loop`), so that no round pays for empty checks of them."""
        # Unsettled messages count as busy: a message given back is not visible to this poll yet.
        idle_before = self._ledger.in_flight == 0 and self._mailbox.pending() == 0
        try:
            received = self._mailbox.receive(poll_plan(self._urls, self.config.poll_wait, upper=idle_before),
                                             budget, self._stop.stop)
        except Exception:
            delay = self._poll_backoff.next()
            logger.exception(f"polling SQS failed; retrying in {delay:.1f} s")
            self._stop.stop.wait(delay)
            return
        self._poll_backoff.reset()
        if received:
            self._admit(received)
        elif received is None and self.config.burst and idle_before and not self._stop.stopping:
            # Every level was empty and nothing was running during the poll, so nothing of ours can
            # have enqueued work since.
            self._stop.finish("burst mode: the queues are empty")

    def _upper_loop(self, url: str) -> None:
        """Long-poll one upper priority level for as long as the agent runs: its work is received
        the moment it is sent, and jumps the local backlog (highest priority first), at the cost of
        one call per ``upper_poll_wait`` seconds while the level is empty."""
        backoff = Backoff()
        while not self._stop.stopping:
            budget = self._ledger.wait_for_budget(self._stop, ahead=True)
            if not budget:
                continue
            try:
                received = self._mailbox.receive([(url, self.config.upper_poll_wait)], budget,
                                               self._stop.stop)
            except Exception:
                delay = backoff.next()
                logger.exception(f"polling an upper priority level failed; retrying in {delay:.1f} s")
                self._stop.stop.wait(delay)
                continue
            backoff.reset()
            if received:
                self._admit(received)

    def _admit(self, received: list[Held]) -> None:
        self._ledger.admit(received)  # held from now on: the heartbeat keeps them invisible
        self._attempts.read(received)
        self._pool.hand(received)  # after a stop, the slots give them back at once

    def _join_upper_pollers(self) -> None:
        """Wait for the upper levels' long polls to return. SQS (and moto, and LocalStack) ends a
        long poll when its wait is over, not when the caller goes away: a poll abandoned in flight
        still takes the next message sent to its level, and that message then stays invisible for a
        visibility timeout (a task of the next client waits two minutes). What a poll returns after
        the stop is admitted as usual, and the slots, stopping, give it back."""
        deadline = time.monotonic() + self.config.upper_poll_wait + JOIN_SLACK_SECONDS
        for t in self._upper_pollers:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                logger.warning("an upper-level poll did not return in time; a message it takes stays "
                               "invisible until its visibility timeout")

    def _teardown(self) -> None:
        """Leave nothing held: finish or give back every task and message, then stop the threads."""
        self._stop.stop.set()
        self._join_upper_pollers()
        self._pool.close()
        self._mailbox.close()  # every delete and give-back sent before the heartbeat stops
        self._heart.stop()
        self._attempts.starts.flush()  # after the pool: no attempt starts any more
        if self._durations is not None:
            self._durations.stop()  # the minutes of run times still held
        self._pool.close_children()
        self._stop.restore_signal_handlers()
        logger.info("agent stopped", extra={"stats": dict(self.stats), "exit_code": self._stop.exit_code})

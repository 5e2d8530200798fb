"""The worker agent: poll the partition's queues, claim, run each task in a child process while
heartbeating, report, delete the message; until told to stop.

Threads (rq's checklist loop, htc-grid's DynamoDB-first claims)::

    main       run(): signals -> [wait for a free slot -> poll -> hand messages to slots]* -> drain
    slot x N   each with its own ChildProcess: claim -> load inputs -> execute -> report -> delete
    heartbeat  one for all: extends every held message's visibility and every claimed task's lease;
               a lost lease kills that slot's child

Crash safety comes from the order of writes, not from this process surviving: DynamoDB is the
truth and every write is conditional, and a message is deleted only once DynamoDB says what became
of its task. SIGKILL at any instant therefore loses nothing: the lease expires and the sweeper
re-queues the task; the message reappears after its visibility timeout and claim() discards it if
it is a duplicate. SIGTERM (Spot interruption) drains: see :meth:`Agent.request_stop`.

Detection delay: a dead agent's task is re-queued once its lease (``SKYLOOM_LEASE_SECONDS``) has
run out and the sweeper has run: at worst lease + sweep interval. Production uses 60 s and a
one-minute sweep: the heartbeat beats every lease/3, so a lease is lost only after three missed
beats in a row (a GC pause, a throttled call or a slow network must not let two agents run one
task), and a lost task waits at most ~2 minutes, the same order as Spot's interruption notice.
Tests use 3-5 s with a 1 s sweep.

Telemetry (:mod:`fargate_worker.telemetry`): per attempt, queue wait, input fetch, compute and
upload times and bytes in/out go on the task item (via ``complete()``) and out as EMF metrics
(dimensions partition and handler only); the slots' busy fraction is reported every
``busy_report_seconds``; a child nearing 80% of its memory limit is logged with its task id.

Later prefetching fits in without reshaping this: the poller's budget (:func:`receive_budget`)
grows by a window, and the heartbeat already keeps received-but-unstarted messages invisible.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from aws_lambda_powertools import Logger

from fargate_worker.child import ChildProcess, ChildResult, Ending
from fargate_worker.policy import (
    MAX_RECEIVE,
    Action,
    Backoff,
    Verdict,
    bytes_in,
    bytes_out,
    max_duration,
    new_worker_id,
    poll_plan,
    receive_budget,
    verdict,
)
from fargate_worker.settings import WorkerConfigError, WorkerSettings
from fargate_worker.telemetry import (
    MEMORY_WARN_FRACTION,
    BusyMeter,
    emit_busy_fraction,
    emit_memory_warning,
    emit_task_metrics,
    memory_limit_bytes,
    rss_bytes,
)
from skyloom.core import clock, execution
from skyloom.core.aws import client
from skyloom.core.config import Settings
from skyloom.core.dispatching import TaskMessage, UndecodableMessage, queue_urls_by_priority
from skyloom.core.models import TaskModel
from skyloom.errors import SkyloomError
from skyloom.runtime.outcome import RemoteError, TaskInput, TaskOutcome

logger = Logger(service="skyloom-worker")

#: After a forced stop, how long slots get to give their tasks back before the process exits anyway.
FORCED_EXIT_SECONDS = 15.0
#: Error type of an attempt whose inputs could not be loaded.
INPUT_ERROR = "InputFetchFailed"


class ForcedShutdown(BaseException):
    """Stop now and give every task back. A BaseException on purpose: no ``except Exception`` on the
    way (around AWS calls) may swallow it."""


class ExecutionOps(Protocol):
    """The attempt operations of :mod:`skyloom.core.execution`; tests pass fakes."""

    def claim(self, settings: Settings, message: TaskMessage, worker_id: str) -> TaskModel | None: ...
    def heartbeat(self, settings: Settings, task: TaskModel, worker_id: str) -> bool: ...
    def load_inputs(self, settings: Settings, task: TaskModel) -> TaskInput: ...
    def complete(
        self, settings: Settings, task: TaskModel, worker_id: str, outcome: TaskOutcome, metrics: dict[str, float]
    ) -> bool: ...
    def fail(
        self, settings: Settings, task: TaskModel, worker_id: str, error: RemoteError, *, timed_out: bool = False
    ) -> str: ...
    def release(self, settings: Settings, task: TaskModel, worker_id: str) -> bool: ...


# --------------------------------------------------------------------------------------- agent
@dataclass(eq=False)
class Held:
    """One received message from receipt to deletion; the heartbeat keeps it (and its task) alive."""

    queue_url: str
    receipt: str
    message: TaskMessage
    next_beat: float
    #: Set once claimed: from then on the heartbeat extends the lease too.
    task: TaskModel | None = None
    #: Set while the task's code runs: what a lost lease kills.
    child: ChildProcess | None = None
    #: complete/fail/release under way: a refused heartbeat then means "done", not "stolen".
    reporting: bool = False
    lost: threading.Event = field(default_factory=threading.Event)
    #: The memory warning was given for this attempt (once is enough).
    memory_warned: bool = False
    #: Set by a preparer (prefetch): the claimed task's inputs, or why they could not be loaded,
    #: and the metrics gathered so far.
    prepared: tuple[TaskInput | RemoteError, dict[str, float]] | None = None


class Agent:
    """One worker agent process: ``Agent(settings, config).run()`` returns the exit code.

    Args:
        settings: the stack's settings (models must already be bound to them).
        config: this agent's settings.
        ops: the attempt operations; :mod:`skyloom.core.execution` unless testing.
        sqs: an SQS client; the process's shared one by default.
        child_factory: makes one ChildProcess per slot.
        worker_id: defaults to :func:`new_worker_id`.
    """

    def __init__(
        self,
        settings: Settings,
        config: WorkerSettings,
        *,
        ops: ExecutionOps = execution,
        sqs: Any = None,
        child_factory: Callable[[], ChildProcess] = ChildProcess,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.worker_id = worker_id or new_worker_id()
        self.stats: Counter[str] = Counter()
        self._ops = ops
        self._sqs = sqs if sqs is not None else client("sqs", settings)
        self._children = [child_factory() for _ in range(config.slots)]
        self._beat_every = min(settings.lease_seconds, float(settings.visibility_timeout)) / 3
        self._plan: list[tuple[str, int]] = []
        self._inbox: queue.Queue[Held | None] = queue.Queue()
        self._stop = threading.Event()  # take no new work (first signal, max_tasks, burst)
        self._force = threading.Event()  # give everything back now (second signal, grace over)
        self._beating = threading.Event()  # cleared to stop the heartbeat thread
        self._deadline: float | None = None  # monotonic end of the grace period, once signalled
        self._signals = 0
        self._exit_code = 0
        self._poll_backoff = Backoff()
        #: Guards the counters and the held set; notified whenever a slot frees up.
        self._lock = threading.Condition()
        self._held: set[Held] = set()
        self._in_flight = 0  # messages handed to slots and not finished with
        self._finished = 0  # claimed tasks finished with, whatever the outcome (max_tasks)
        self._slots: list[threading.Thread] = []
        self._heart: threading.Thread | None = None
        self._sentinels_sent = False
        self._previous_handlers: dict[int, Any] = {}
        self._busy = BusyMeter(config.slots)
        #: Finished attempts waiting to be reported by the reporter threads (overlap_reports).
        self._reports: queue.Queue[tuple[Held, TaskModel, Verdict, dict[str, float]] | None] = queue.Queue()
        self._reporters: list[threading.Thread] = []
        self._reporting = 0  # attempts handed to reporters and not yet reported
        self._reporter_sentinels_sent = False
        #: Prefetch: preparers claim and load inputs ahead of the slots, which take from _ready.
        self._ready: queue.Queue[Held | None] = queue.Queue()
        self._preparers: list[threading.Thread] = []
        self._preparers_left = 0
        self._memory_limit = memory_limit_bytes(slots=config.slots)

    # ------------------------------------------------------------------------------ the loop
    def run(self) -> int:
        """Work until stopped; 0 after an orderly or signalled stop, 1 if broken, 2 if misconfigured."""
        self._install_signal_handlers()
        try:
            self._startup()
            while not self._stop.is_set():
                budget = self._wait_for_free_slot()
                if budget:
                    self._poll_and_dispatch(budget)
            self._drain()
        except ForcedShutdown as exc:
            logger.warning(f"forced shutdown ({exc}): giving every task back now")
        except WorkerConfigError as exc:
            logger.error(f"invalid configuration: {exc}")
            self._exit_code = 2
        except Exception:
            logger.exception("the agent crashed; giving every task back")
            self._exit_code = 1
        finally:
            self._teardown()
        return self._exit_code

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop as for SIGTERM: the first call stops polling at once and lets running tasks finish
        within the grace period, then gives back whatever is left; a second call gives it all back
        now. Called from the signal handler (main thread) or by tests."""
        self._signals += 1
        if self._signals == 1:
            self._deadline = time.monotonic() + self.config.grace_seconds
            self._stop.set()
            logger.warning(f"{reason}: draining, running tasks have {self.config.grace_seconds:g} s to finish")
        else:
            self._force.set()
            logger.warning(f"{reason} again: giving every task back now")

    def _startup(self) -> None:
        if self.settings.partition(self.config.partition) is None:
            known = ", ".join(p.name for p in self.settings.partitions)
            raise WorkerConfigError(f"partition {self.config.partition!r} is not in SKYLOOM_PARTITIONS ({known})")
        logger.append_keys(worker_id=self.worker_id, partition=self.config.partition)
        logger.info("agent starting", extra={"slots": self.config.slots, "poll_wait": self.config.poll_wait,
                                             "burst": self.config.burst, "max_tasks": self.config.max_tasks})
        self._plan = poll_plan(self._resolve_queues(), self.config.poll_wait)
        self._beating.set()
        self._heart = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._heart.start()
        # Before the slots: a slot reads from the ready queue if there are preparers.
        self._preparers_left = self.config.prefetch
        for i in range(self.config.prefetch):
            preparer = threading.Thread(target=self._preparer_loop, name=f"prefetch-{i}", daemon=True)
            preparer.start()
            self._preparers.append(preparer)
        for i, child in enumerate(self._children):
            # Daemon: a slot stuck in an AWS call must not keep a stopping agent alive; what it
            # held is left to the lease sweeper and the visibility timeout.
            slot = threading.Thread(target=self._slot_loop, args=(child,), name=f"slot-{i}", daemon=True)
            slot.start()
            self._slots.append(slot)
        for i in range(self.config.slots if self.config.overlap_reports else 0):
            reporter = threading.Thread(target=self._reporter_loop, name=f"reporter-{i}", daemon=True)
            reporter.start()
            self._reporters.append(reporter)

    def _resolve_queues(self) -> list[str]:
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                urls: list[str] = queue_urls_by_priority(self.settings, self.config.partition)
                return urls
            except Exception:
                delay = backoff.next()
                logger.exception(f"could not resolve the queue URLs; retrying in {delay:.1f} s")
                self._stop.wait(delay)
        return []

    def _wait_for_free_slot(self) -> int:
        """Block until a slot is free; returns how many messages to ask for (0 once stopping)."""
        with self._lock:
            while not self._stop.is_set():
                if self.config.max_tasks is not None and self._finished >= self.config.max_tasks:
                    self._finish(f"max_tasks={self.config.max_tasks} reached")
                    break
                # Attempts being reported no longer occupy a slot's child: up to one per slot may
                # be reported behind while the slots start their next tasks.
                busy = self._in_flight - min(self._reporting, self.config.slots)
                budget = receive_budget(self.config.slots + self.config.prefetch, busy)
                if self.config.max_tasks is not None:  # counts every task not finished with
                    budget = min(budget, receive_budget(self.config.max_tasks, self._in_flight, self.config.max_tasks,
                                                        self._finished))
                if budget:
                    return budget
                self._lock.wait(0.5)
        return 0

    def _poll_and_dispatch(self, budget: int) -> None:
        with self._lock:
            busy_before = self._in_flight
        try:
            url, messages = self._poll(budget)
        except Exception:
            delay = self._poll_backoff.next()
            logger.exception(f"polling SQS failed; retrying in {delay:.1f} s")
            self._stop.wait(delay)
            return
        self._poll_backoff.reset()
        if messages:
            self._dispatch([h for h in (self._decode(url, m) for m in messages) if h is not None])
        elif self.config.burst and busy_before == 0 and not self._stop.is_set():
            # Nothing was running during the poll, so nothing of ours can have enqueued work since.
            self._finish("burst mode: the queues are empty")

    def _poll(self, budget: int) -> tuple[str, list[dict[str, Any]]]:
        """One round of :func:`poll_plan`: the first non-empty batch and its queue, or no messages."""
        for url, wait in self._plan:
            if self._stop.is_set():
                break
            resp = self._sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=min(budget, MAX_RECEIVE), WaitTimeSeconds=wait,
                VisibilityTimeout=self.settings.visibility_timeout,
            )
            messages: list[dict[str, Any]] = resp.get("Messages", [])
            if messages:
                return url, messages
        return "", []

    def _decode(self, url: str, m: Mapping[str, Any]) -> Held | None:
        try:
            message = TaskMessage.parse(m["Body"])
        except UndecodableMessage as exc:
            # Left alone: after maxReceiveCount deliveries the redrive policy moves it to the DLQ.
            self._count("undecodable")
            logger.warning("leaving an undecodable message to the dead-letter queue",
                           extra={"message_id": m.get("MessageId"), "error": str(exc)})
            return None
        return Held(url, m["ReceiptHandle"], message, next_beat=time.monotonic() + self._beat_every)

    def _dispatch(self, received: list[Held]) -> None:
        if not received:
            return
        with self._lock:
            self._held.update(received)
            self._in_flight += len(received)
        for held in received:
            self._inbox.put(held)

    # ------------------------------------------------------------------------------ a slot
    def _slot_loop(self, child: ChildProcess) -> None:
        """A slot takes one message at a time until it receives the None sentinel: from the
        preparers' ready queue with prefetch, straight from the poller without."""
        self._warm_up(child)
        backoff = Backoff()
        source = self._ready if self._preparers else self._inbox
        while (held := source.get()) is not None:
            handed_off = False
            try:
                if self._stop.is_set():
                    self._give_back(held)  # not started: another agent may run it
                else:
                    handed_off = self._work(held, child)
                backoff.reset()
            except Exception:
                # An AWS call failed past boto3's retries, or a bug. What DynamoDB holds is unknown,
                # so touch nothing more: the lease expires and the sweeper re-queues; the message
                # reappears after its visibility timeout. Pause (keeping the slot busy) so that an
                # outage does not churn through the queue.
                delay = backoff.next()
                logger.exception(f"task {held.message.task_id}: left to the lease sweeper; pausing {delay:.1f} s")
                self._stop.wait(delay)
            finally:
                if not handed_off:
                    self._forget(held)

    def _preparer_loop(self) -> None:
        """Prefetch: claim the next message's task and download its inputs while the slots'
        children compute, so that a slot starts its next task the moment it is free. The lease
        starts at the claim; the heartbeat keeps it (and the message) alive while it waits."""
        backoff = Backoff()
        try:
            while (held := self._inbox.get()) is not None:
                ready = False
                try:
                    if self._stop.is_set():
                        self._give_back(held)
                    else:
                        ready = self._prepare(held)
                    backoff.reset()
                except Exception:
                    delay = backoff.next()
                    logger.exception(f"task {held.message.task_id}: left to the lease sweeper; pausing {delay:.1f} s")
                    self._stop.wait(delay)
                finally:
                    if ready:
                        self._ready.put(held)
                    else:
                        self._forget(held)
        finally:
            with self._lock:
                self._preparers_left -= 1
                last = self._preparers_left == 0
            if last:  # nothing more can reach the ready queue: let the slots end after it
                for _ in self._slots:
                    self._ready.put(None)

    def _prepare(self, held: Held) -> bool:
        """Claim and load inputs; False if there is nothing to run (the message is deleted)."""
        task = self._claim(held)
        if task is None:
            self._delete(held)  # duplicate, finished, cancelled or not ready: nothing to run
            return False
        with self._task_context(task):
            metrics = self._start_metrics(task)
            held.prepared = (self._load_inputs(task, metrics), metrics)
        return True

    def _reporter_loop(self) -> None:
        """Report finished attempts (upload outputs, commit, delete the message) while the slots'
        children already run the next tasks: communication overlaps computation."""
        backoff = Backoff()
        while (item := self._reports.get()) is not None:
            held, task, v, metrics = item
            try:
                with self._task_context(task):
                    self._report(held, task, v, metrics)
                backoff.reset()
            except Exception:
                delay = backoff.next()  # as in a slot: the lease sweeper takes over this task
                logger.exception(f"task {task.task_id}: report failed, left to the lease sweeper; "
                                 f"pausing {delay:.1f} s")
                self._stop.wait(delay)
            finally:
                with self._lock:
                    self._reporting -= 1
                self._forget(held)

    def _warm_up(self, child: ChildProcess) -> None:
        """Start the slot's child before its first task, and from this thread: the child's
        death-with-parent signal is tied to the thread that started it, and slots live longest."""
        try:
            child.start()
        except Exception:
            logger.exception("could not start a child process ahead of work; trying again on the first task")

    def _work(self, held: Held, child: ChildProcess) -> bool:
        """One message: claim -> load inputs -> execute with heartbeat -> report -> delete.

        Returns True if the report was handed to a reporter thread (which then forgets ``held``).
        """
        if held.prepared is None and not self._prepare(held):
            return False
        task, prepared = held.task, held.prepared
        assert task is not None and prepared is not None
        inp, metrics = prepared
        slot = threading.get_ident()
        self._busy.start(slot)
        try:
            with self._task_context(task):
                ran = self._execute(held, child, inp, metrics) if isinstance(inp, TaskInput) else inp
                v = verdict(ran, lease_lost=held.lost.is_set())
                if self._reporters and v.action in (Action.COMPLETE, Action.FAIL) and not self._force.is_set():
                    with self._lock:
                        self._reporting += 1
                    self._reports.put((held, task, v, metrics))
                    return True
                self._report(held, task, v, metrics)
                return False
        finally:
            self._busy.stop(slot)

    def _claim(self, held: Held) -> TaskModel | None:
        task = self._ops.claim(self.settings, held.message, self.worker_id)
        if task is None:
            self._count("unclaimable")
            logger.info("message not claimable (duplicate, finished or cancelled task); deleting it",
                        extra={"task_id": held.message.task_id})
        held.task = task
        return task

    def _start_metrics(self, task: TaskModel) -> dict[str, float]:
        submitted = task.submitted_at
        return {"queue_wait": max(0.0, clock.now() - float(submitted))} if submitted is not None else {}

    def _load_inputs(self, task: TaskModel, metrics: dict[str, float]) -> TaskInput | RemoteError:
        """The task's payload and dependency values. A failure counts as a failed attempt, so that a
        missing input ends in Error after max_retries instead of bouncing between workers forever."""
        start = time.monotonic()
        try:
            inp = self._ops.load_inputs(self.settings, task)
        except Exception as exc:
            logger.exception("could not load the task's inputs")
            return RemoteError(
                type=INPUT_ERROR, message=f"the worker could not load the task's inputs: {exc}",
                traceback=traceback.format_exc(), retryable=not isinstance(exc, SkyloomError),
            )
        finally:
            metrics["fetch"] = time.monotonic() - start
        metrics["bytes_in"] = float(bytes_in(inp))
        return inp

    def _execute(self, held: Held, child: ChildProcess, inp: TaskInput, metrics: dict[str, float]) -> ChildResult:
        """Run the task in this slot's child; the heartbeat keeps the lease and may kill it."""
        not_run = ChildResult(TaskOutcome(error=RemoteError("TaskNotStarted", "stopped before it ran", "")),
                              Ending.KILLED, 0.0)
        if held.lost.is_set() or self._force.is_set():
            return not_run
        held.child = child
        if held.lost.is_set():  # lost between the check and publishing the child: it was not killed
            held.child = None
            return not_run
        try:
            result = child.execute(inp, max_duration(inp.options))
        except Exception:
            # The child cannot even start: this agent is broken, not the task. Give the task back
            # and stop, so that the orchestrator replaces this agent.
            logger.exception("could not start a child process; stopping this agent")
            self._exit_code = 1
            self._finish("child processes cannot start")
            return not_run
        finally:
            held.child = None
        metrics["compute"] = result.seconds
        metrics["bytes_out"] = float(bytes_out(result.outcome))
        return result

    def _report(self, held: Held, task: TaskModel, v: Verdict, metrics: dict[str, float]) -> None:
        """Tell DynamoDB how the attempt ended, then delete the message: only then, so that a crash
        before this point leaves the message to come back and the lease to expire."""
        held.reporting = True
        if v.action is Action.DROP:
            self._count("dropped")
            logger.warning("lease lost: another worker may own the task now; dropping this attempt")
            self._make_visible(held)  # the next claim() decides with DynamoDB's current state
            return
        if v.action is Action.RELEASE:
            self._release(held, task)
            return
        if v.action is Action.COMPLETE and v.outcome is not None:
            start = time.monotonic()
            committed = self._ops.complete(self.settings, task, self.worker_id, v.outcome, metrics)
            metrics["upload"] = time.monotonic() - start
            self._count("completed" if committed else "lost")
            if committed:
                logger.info("task completed", extra={"metrics": metrics})
                self._emit(task, metrics, "completed")
            else:
                logger.warning("lease lost before the commit: this attempt's outputs were discarded")
        elif v.error is not None:
            status = self._ops.fail(self.settings, task, self.worker_id, v.error, timed_out=v.timed_out)
            self._count("failed")
            self._emit(task, metrics, "failed")
            logger.warning("attempt failed", extra={"status": status, "error_type": v.error.type,
                                                    "error": v.error.message[:1000], "timed_out": v.timed_out})
        self._delete(held)

    def _emit(self, task: TaskModel, metrics: dict[str, float], outcome: str) -> None:
        try:
            emit_task_metrics(self.config.partition, str(task.handler), metrics, outcome)
        except Exception:  # metrics must never fail a task
            logger.exception("could not emit the task's metrics")

    def _release(self, held: Held, task: TaskModel) -> None:
        """Give a claimed task back without counting the attempt; its message is visible at once."""
        try:
            released = self._ops.release(self.settings, task, self.worker_id)
        except Exception:
            logger.exception("could not release the task: its lease will expire and the sweeper re-queues it")
            return
        self._count("released")
        logger.info("task given back", extra={"released": released})
        self._make_visible(held)

    def _give_back(self, held: Held) -> None:
        """Received but not started: release the task if a preparer claimed it, and make the
        message visible at once, so that another agent may run it."""
        if held.task is not None:
            self._release(held, held.task)
            return
        self._count("returned")
        self._make_visible(held)

    def _delete(self, held: Held) -> None:
        try:
            self._sqs.delete_message(QueueUrl=held.queue_url, ReceiptHandle=held.receipt)
        except Exception:  # it comes back later and the next claim() discards it
            logger.exception("could not delete a finished message", extra={"task_id": held.message.task_id})

    def _make_visible(self, held: Held) -> None:
        try:
            self._sqs.change_message_visibility(QueueUrl=held.queue_url, ReceiptHandle=held.receipt,
                                                VisibilityTimeout=0)
        except Exception:  # it comes back at the end of its visibility timeout instead
            logger.exception("could not make a message visible again", extra={"task_id": held.message.task_id})

    def _forget(self, held: Held) -> None:
        held.reporting = True
        with self._lock:
            self._held.discard(held)
            self._in_flight -= 1
            if held.task is not None:
                self._finished += 1
            self._lock.notify_all()

    @contextlib.contextmanager
    def _task_context(self, task: TaskModel) -> Iterator[None]:
        logger.thread_safe_append_keys(task_id=task.task_id, session_id=task.session_id, handler=task.handler,
                                       attempt=int(task.attempt or 0))
        try:
            yield
        finally:
            logger.thread_safe_clear_keys()

    # --------------------------------------------------------------------------- heartbeat
    def _heartbeat_loop(self) -> None:
        """Extend what we hold every lease/3 (and visibility/3), well before either lapses."""
        tick = min(1.0, self._beat_every / 4)
        next_report = time.monotonic() + self.config.busy_report_seconds
        while self._beating.is_set():
            time.sleep(tick)
            now = time.monotonic()
            self._watch_memory()
            if now >= next_report:
                next_report = now + self.config.busy_report_seconds
                self._report_busy()
            with self._lock:
                due = [h for h in self._held if h.next_beat <= now]
            extend = []
            for held in due:
                held.next_beat = now + self._beat_every
                if self._beat(held):
                    extend.append(held)
            self._extend_visibility(extend)

    def _report_busy(self) -> None:
        """The fraction of slot time spent holding a task since the last report (log + metric)."""
        try:
            fraction = self._busy.take()
            logger.info("busy fraction", extra={"busy_fraction": round(fraction, 4), "slots": self.config.slots})
            emit_busy_fraction(self.config.partition, fraction)
        except Exception:
            logger.exception("could not report the busy fraction")

    def _watch_memory(self) -> None:
        """Warn (once per attempt) when a task's child reaches 80% of its memory limit: the next
        step is the OOM killer, and the log says which task it was (never a metric dimension)."""
        if self._memory_limit is None:
            return
        with self._lock:
            running = [h for h in self._held if h.child is not None and not h.memory_warned]
        for held in running:
            child = held.child
            pid = child.pid if child is not None else None
            rss = rss_bytes(pid) if pid is not None else None
            if rss is None or rss < MEMORY_WARN_FRACTION * self._memory_limit:
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
                emit_memory_warning(self.config.partition, handler)
            except Exception:
                logger.exception("could not emit the memory warning metric")

    def _beat(self, held: Held) -> bool:
        """Extend the task's lease, if claimed; True if its message's visibility is to be extended."""
        if held.lost.is_set():
            return False  # the slot is about to make the message visible again
        task = held.task
        if task is not None:
            try:
                alive = self._ops.heartbeat(self.settings, task, self.worker_id)
            except Exception:
                logger.exception(f"heartbeat of task {task.task_id} failed; retrying soon")
                held.next_beat = time.monotonic() + min(self._beat_every, 5.0)
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

    def _extend_visibility(self, helds: list[Held]) -> None:
        """ChangeMessageVisibilityBatch, 10 messages per call per queue: one call per beat for a
        busy multi-slot agent instead of one per held message."""
        by_queue: dict[str, list[Held]] = {}
        for held in helds:
            by_queue.setdefault(held.queue_url, []).append(held)
        for url, group in by_queue.items():
            for start in range(0, len(group), MAX_RECEIVE):
                chunk = group[start:start + MAX_RECEIVE]
                timeout = self.settings.visibility_timeout
                entries = [{"Id": str(i), "ReceiptHandle": h.receipt, "VisibilityTimeout": timeout}
                           for i, h in enumerate(chunk)]
                try:
                    resp = self._sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)
                    failed = [(chunk[int(f["Id"])], f.get("Message", f.get("Code", "")))
                              for f in resp.get("Failed", [])]
                except Exception as exc:
                    failed = [(h, str(exc)) for h in chunk]
                for held, why in failed:
                    if not held.reporting:  # a message being deleted may already be gone: no news
                        logger.warning(f"could not extend a message's visibility: {why}",
                                       extra={"task_id": held.message.task_id})

    # ---------------------------------------------------------------------------- stopping
    def _finish(self, reason: str) -> None:
        """Stop taking work without a deadline (max_tasks, burst): running tasks finish normally."""
        if not self._stop.is_set():
            logger.info(f"stopping: {reason}")
            self._stop.set()

    def _drain(self) -> None:
        """Let running tasks finish; past the grace deadline (or on a second signal), force."""
        self._give_back_unstarted()
        self._send_sentinels()
        self._wait_for(self._slots)
        self._send_reporter_sentinels()  # after the slots: every hand-off is queued before it
        self._wait_for(self._reporters)

    def _wait_for(self, threads: list[threading.Thread]) -> None:
        while any(t.is_alive() for t in threads):
            if self._force.is_set():
                raise ForcedShutdown("second signal")
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._force.set()
                raise ForcedShutdown(f"grace period of {self.config.grace_seconds:g} s is over")
            self._force.wait(0.2)

    def _send_reporter_sentinels(self) -> None:
        if not self._reporter_sentinels_sent:
            self._reporter_sentinels_sent = True
            for _ in self._reporters:
                self._reports.put(None)

    def _teardown(self) -> None:
        """Leave nothing held: finish or give back every task and message, then stop the threads."""
        self._stop.set()
        self._give_back_unstarted()
        self._send_sentinels()
        if any(s.is_alive() for s in self._slots):
            self._force.set()
            self._kill_running()
        # Reports are finished work (and quick): let them land, within a bound.
        self._send_reporter_sentinels()
        deadline = time.monotonic() + FORCED_EXIT_SECONDS
        for reporter in self._reporters:
            reporter.join(max(0.0, deadline - time.monotonic()))
        self._beating.clear()
        if self._heart is not None:
            self._heart.join(5.0)
        for child in self._children:
            try:
                child.close()
            except Exception:
                logger.exception("could not close a child process")
        self._restore_signal_handlers()
        logger.info("agent stopped", extra={"stats": dict(self.stats), "exit_code": self._exit_code})

    def _kill_running(self) -> None:
        """Kill every child; each slot then gives its task back (verdict RELEASE) and exits."""
        deadline = time.monotonic() + FORCED_EXIT_SECONDS
        while any(s.is_alive() for s in self._slots) and time.monotonic() < deadline:
            for child in self._children:  # repeated: a slot may have been just about to start one
                child.kill()
            for s in self._slots:
                s.join(0.1)
        if any(s.is_alive() for s in self._slots):
            logger.error("some slots did not stop in time; their tasks are left to the lease sweeper")

    def _give_back_unstarted(self) -> None:
        for q in (self._inbox, self._ready):
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
                    self._give_back(held)
                finally:
                    self._forget(held)
            for _ in range(sentinels):
                q.put(None)

    def _send_sentinels(self) -> None:
        """End the inbox's readers: the preparers (the last one then ends the slots) or the slots."""
        if not self._sentinels_sent:
            self._sentinels_sent = True
            for _ in self._preparers or self._slots:
                self._inbox.put(None)

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    # ----------------------------------------------------------------------------- signals
    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may handle signals (tests run agents in threads)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only sets flags: the loops notice within a poll (<= poll_wait s) or 0.2 s while draining.
        self.request_stop(signal.Signals(signum).name)

    def _restore_signal_handlers(self) -> None:
        for sig, previous in self._previous_handlers.items():
            signal.signal(sig, previous)
        self._previous_handlers.clear()

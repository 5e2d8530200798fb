"""The steps of one attempt, whichever thread runs them: claim -> load inputs (a preparer or the
slot) -> execute in the slot's child -> report (a reporter or the slot) -> settle the message.

Crash safety comes from the order of the writes: a message is settled only once DynamoDB says
what became of its task, so a crash before that leaves the message to come back and the lease to
expire (see :mod:`fargate_worker.agent`).

AWS's own failures are not the task's: a claim, an input fetch, a commit, a failure record or a
give-back that fails because AWS is unreachable or busy past botocore's retries (a network blackout
of a few seconds, a run of 5xx, throttling) is tried again with backoff for up to
:data:`AWS_RETRY_SECONDS`, while the heartbeat keeps the message and the lease alive; inputs that
stay unreachable give the task back uncounted. Only then is the task left to the lease sweeper,
which charges it a lost worker: an agent cut off longer than that looks dead, and may be.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from skyloom.core import checkpoints, clock
from skyloom.core.aws import transient_error
from skyloom.core.commits import Commit
from skyloom.core.config import Settings
from skyloom.core.dispatching import TaskMessage
from skyloom.core.models import TaskModel
from skyloom.core.states import AttemptFate
from skyloom.errors import SkyloomError
from skyloom.runtime.outcome import RemoteError, TaskInput, TaskLog, TaskOutcome
from skyloom_server.fargate_worker.child import ChildProcess, ChildResult, Ending
from skyloom_server.fargate_worker.durations import DurationBook
from skyloom_server.fargate_worker.ledger import Ledger
from skyloom_server.fargate_worker.messages import Held, Mailbox
from skyloom_server.fargate_worker.policy import (
    AWS_UNAVAILABLE,
    Action,
    Backoff,
    Verdict,
    bytes_in,
    bytes_out,
    max_duration,
)
from skyloom_server.fargate_worker.shutdown import StopControl
from skyloom_server.fargate_worker.telemetry import (
    AttemptTrace,
    StartCounts,
    TaskEnding,
    emit_task_metrics,
    logger,
)

#: Error type of an attempt whose inputs could not be loaded.
INPUT_ERROR = "InputFetchFailed"
#: How long a step of an attempt keeps trying an AWS call that fails for AWS's reasons: a blackout
#: of seconds is outlasted. Retrying cannot harm a task that changed hands meanwhile: every write is
#: conditional on the lease, so the next try is refused, and that answer ends the tries.
AWS_RETRY_SECONDS = 30.0
#: First and largest pause between two of those tries.
AWS_RETRY_BACKOFF = (0.25, 5.0)

_T = TypeVar("_T")


class ExecutionOps(Protocol):
    """The attempt operations of :mod:`skyloom.core.execution`; tests pass fakes."""

    def claim(self, settings: Settings, message: TaskMessage, worker_id: str) -> TaskModel | None: ...
    def read_tasks(self, task_ids: Sequence[str]) -> dict[str, TaskModel]: ...
    def take(self, settings: Settings, message: TaskMessage, task: TaskModel | None) -> TaskModel | None: ...
    def heartbeat(self, settings: Settings, task: TaskModel, worker_id: str) -> bool: ...
    def load_inputs(self, settings: Settings, task: TaskModel) -> TaskInput: ...
    def commit(
        self, settings: Settings, task: TaskModel, worker_id: str, outcome: TaskOutcome, metrics: dict[str, float],
        log: TaskLog | None = None,
    ) -> bool: ...
    def commit_many(self, settings: Settings, commits: Sequence[Commit]) -> list[bool]: ...
    def fail(
        self, settings: Settings, task: TaskModel, worker_id: str, error: RemoteError, *, timed_out: bool = False,
        log: TaskLog | None = None,
    ) -> AttemptFate: ...
    def give_back(self, settings: Settings, task: TaskModel, worker_id: str) -> bool: ...


class Attempts:
    """Runs the steps of attempts for one agent; stateless between calls, shared by its threads."""

    def __init__(self, settings: Settings, *, partition: str, worker_id: str, ops: ExecutionOps,
                 mailbox: Mailbox, ledger: Ledger, stop: StopControl, durations: DurationBook | None = None) -> None:
        self.settings = settings
        #: Run times of completed attempts, per handler or function, for the cross-session history.
        self._durations = durations
        self.worker_id = worker_id
        self._partition = partition
        self._ops = ops
        self._mailbox = mailbox
        self._ledger = ledger
        self._stop = stop
        #: The attempts this agent started, told a second at a time (by the heartbeat and at exit).
        self.starts = StartCounts(partition)

    # -------------------------------------------------------------------------- preparing
    def read(self, helds: Sequence[Held]) -> None:
        """Read the tasks of a received batch in one call, for :meth:`prepare` to take them without
        a claim each. A failed read is only logged: each message is then claimed on its own. A message
        that carried its task's item (:meth:`Mailbox.receive`) needs no read."""
        helds = [h for h in helds if not h.read]
        if not helds:
            return
        try:
            found = self._ops.read_tasks([h.message.task_id for h in helds])
        except Exception:
            logger.exception("could not read the received tasks in one batch; claiming them one by one")
            return
        for h in helds:
            h.snapshot, h.read = found.get(h.message.task_id), True

    def prepare(self, held: Held) -> bool:
        """Claim and load inputs; False if there is nothing to run (the message is deleted)."""
        task = self._claim(held)
        if task is None:
            self._mailbox.delete(held)  # duplicate, finished, cancelled or not ready: nothing to run
            return False
        with self.task_context(task):
            metrics = self._start_metrics(task)
            with _phase(held, "fetch"):
                inp = self._load_inputs(task, metrics)
            held.prepared = (inp, metrics)
        return True

    def _claim(self, held: Held) -> TaskModel | None:
        if held.read:
            task = self._outlast("taking the task",
                                 lambda: self._ops.take(self.settings, held.message, held.snapshot))
        else:
            task = self._outlast("claiming the task",
                                 lambda: self._ops.claim(self.settings, held.message, self.worker_id))
        if task is None:
            self._ledger.count("unclaimable")
            logger.info("message not claimable (duplicate, finished or cancelled task); deleting it",
                        extra={"task_id": held.message.task_id})
        else:
            held.trace = AttemptTrace(task.task_id, str(task.handler))
            self._emit_started(task)
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
            inp = self._outlast("loading the task's inputs", lambda: self._ops.load_inputs(self.settings, task))
        except Exception as exc:
            logger.exception("could not load the task's inputs")
            if transient_error(exc):  # AWS's doing: the task is given back uncounted
                return RemoteError(type=AWS_UNAVAILABLE, message=f"AWS stayed unavailable: {exc}", traceback="")
            return RemoteError(
                type=INPUT_ERROR, message=f"the worker could not load the task's inputs: {exc}",
                traceback=traceback.format_exc(), retryable=not isinstance(exc, SkyloomError),
            )
        finally:
            metrics["fetch"] = time.monotonic() - start
        metrics["bytes_in"] = float(bytes_in(inp))
        return inp

    # -------------------------------------------------------------------------- executing
    def execute(self, held: Held, child: ChildProcess, inp: TaskInput, metrics: dict[str, float], *,
                sent: Callable[[], None] | None = None) -> ChildResult:
        """Run the task in this slot's child; the heartbeat keeps the lease and may kill it.
        ``sent``: see :meth:`ChildProcess.execute` (not called if the task does not reach the child)."""
        not_run = ChildResult(TaskOutcome(error=RemoteError("TaskNotStarted", "stopped before it ran", "")),
                              Ending.KILLED, 0.0)
        if held.lost.is_set() or self._stop.force.is_set():
            return not_run
        held.running_since = time.monotonic()
        held.child = child
        if held.lost.is_set():  # lost between the check and publishing the child: it was not killed
            held.child = None
            return not_run
        try:
            with _phase(held, "compute"):
                result = child.execute(inp, max_duration(inp.options), sent=sent)
        except Exception:
            # The child cannot even start: this agent is broken, not the task. Give the task back
            # and stop, so that the orchestrator replaces this agent.
            logger.exception("could not start a child process; stopping this agent")
            self._stop.broken("child processes cannot start")
            return not_run
        finally:
            held.child = None
        metrics["compute"] = result.seconds
        metrics["bytes_out"] = float(bytes_out(result.outcome))
        if result.outcome.lazy_fetches:  # lazy inputs the task fetched itself count as input transfers
            metrics["fetch"] = metrics.get("fetch", 0.0) + result.outcome.lazy_seconds
            metrics["bytes_in"] = metrics.get("bytes_in", 0.0) + result.outcome.lazy_bytes
            metrics["lazy_fetches"] = float(result.outcome.lazy_fetches)
        # The child's own high-water mark when it returned; the heartbeat's samples if it died.
        peak = max(result.memory_peak or 0, held.memory_peak)
        if peak:
            metrics["memory_peak"] = float(peak)
        return result

    # -------------------------------------------------------------------------- reporting
    def report(self, held: Held, task: TaskModel, v: Verdict, metrics: dict[str, float]) -> None:
        """Tell DynamoDB how the attempt ended, then delete the message: only then, so that a crash
        before this point leaves the message to come back and the lease to expire."""
        with held.claim_lock:
            held.reporting = True
        if v.action is Action.DROP:
            self._ledger.count("dropped")
            logger.warning("lease lost: another worker may own the task now; dropping this attempt")
            self._mailbox.make_visible(held)  # the next claim() decides with DynamoDB's current state
            return
        if v.action is Action.RELEASE:
            self.release(held, task)
            return
        if v.action is Action.COMPLETE and v.outcome is not None:
            start = time.monotonic()
            outcome = v.outcome
            with _phase(held, "upload"):
                committed = self._outlast("committing the outcome", lambda: self._ops.commit(
                    self.settings, task, self.worker_id, outcome, metrics, v.log))
            metrics["upload"] = time.monotonic() - start
            self._emit([self._after_commit(task, metrics, committed)])
            if committed:
                self._drop_checkpoint(task, outcome)
        elif v.error is not None:
            error = v.error
            status = self._outlast("recording the failed attempt", lambda: self._ops.fail(
                self.settings, task, self.worker_id, error, timed_out=v.timed_out, log=v.log))
            self._ledger.count("failed")
            # fail() says what became of the task: queued again (retried), ended, or not ours any more.
            outcome = {AttemptFate.LOST: None, AttemptFate.RETRIED: "retried"}.get(status, "failed")
            self._emit([(str(task.handler), metrics, outcome)])
            logger.warning("attempt failed", extra={"status": status, "error_type": v.error.type,
                                                    "error": v.error.message[:1000], "timed_out": v.timed_out,
                                                    "metrics": metrics})
        self._mailbox.delete(held)

    def report_many(self, reports: Sequence[tuple[Held, TaskModel, Verdict, dict[str, float]]]) -> None:
        """Report several finished attempts: the successes in one grouped commit (one write call for
        all of them, see ``commits.commit_many``), the rest one by one, as :meth:`report`."""
        group = [r for r in reports if r[2].action is Action.COMPLETE and r[2].outcome is not None]
        for held, task, v, metrics in reports:
            if not (v.action is Action.COMPLETE and v.outcome is not None):
                with self.task_context(task):
                    self.report(held, task, v, metrics)
        if not group:
            return
        for held, _, _, _ in group:
            with held.claim_lock:
                held.reporting = True
        start = time.monotonic()
        with contextlib.ExitStack() as phases:
            for held, _, _, _ in group:
                phases.enter_context(_phase(held, "upload"))
            commits = [Commit(task, self.worker_id, v.outcome, metrics, v.log)
                       for _, task, v, metrics in group if v.outcome is not None]
            committed = self._outlast("committing the outcomes",
                                      lambda: self._ops.commit_many(self.settings, commits))
        spent = time.monotonic() - start
        endings: list[TaskEnding] = []
        for (held, task, v, metrics), ok in zip(group, committed, strict=True):
            metrics["upload"] = spent
            with self.task_context(task):
                endings.append(self._after_commit(task, metrics, ok))
                if ok and v.outcome is not None:
                    self._drop_checkpoint(task, v.outcome)
            self._mailbox.delete(held)
        self._emit(endings)  # one line for the group

    def _after_commit(self, task: TaskModel, metrics: dict[str, float], committed: bool) -> TaskEnding:
        """Count and log a commit's outcome; returns what its metrics are to say."""
        self._ledger.count("completed" if committed else "lost")
        if committed:
            logger.info("task completed", extra={"metrics": metrics})
            if self._durations is not None and "compute" in metrics:
                # Per handler, and per function for the @skyloom.task ones (they share skyloom.call).
                for label in dict.fromkeys((str(task.handler), str(task.label or task.handler))):
                    self._durations.add(task.owner, label, metrics["compute"])
            return str(task.handler), metrics, "completed"
        logger.warning("lease lost before the commit: this attempt's outputs were discarded")
        return str(task.handler), metrics, None

    def _drop_checkpoint(self, task: TaskModel, outcome: TaskOutcome) -> None:
        """The task completed: drop its checkpoint value, if this attempt or an earlier one may have
        left one (no call for the tasks that never checkpoint). A failure is only logged: the value
        then goes with the session's purge, and no attempt can use it any more."""
        if not (outcome.checkpointed or checkpoints.may_hold(task)):
            return
        try:
            self._outlast("dropping the task's checkpoint", lambda: checkpoints.drop(self.settings, task.task_id))
        except Exception:
            logger.exception("could not drop the completed task's checkpoint")

    def _emit(self, endings: Sequence[TaskEnding]) -> None:
        try:
            emit_task_metrics(self._partition, endings)
        except Exception:  # metrics must never fail a task
            logger.exception("could not emit the tasks' metrics")

    def _emit_started(self, task: TaskModel) -> None:
        try:
            self.starts.add(str(task.handler))
        except Exception:  # metrics must never fail a task
            logger.exception("could not emit the task's metrics")

    def release(self, held: Held, task: TaskModel) -> None:
        """Give a claimed task back without counting the attempt; its message is visible at once."""
        try:
            released = self._outlast("giving the task back",
                                     lambda: self._ops.give_back(self.settings, task, self.worker_id))
        except Exception:
            logger.exception("could not release the task: its lease will expire and the sweeper re-queues it")
            return
        self._ledger.count("released")
        logger.info("task given back", extra={"released": released})
        self._mailbox.make_visible(held)

    def give_back(self, held: Held) -> None:
        """Received but not started: release the task if a preparer claimed it, and make the
        message visible at once, so that another agent may run it."""
        if held.task is not None:
            self.release(held, held.task)
            return
        self._ledger.count("returned")
        self._mailbox.make_visible(held)

    def _outlast(self, what: str, call: Callable[[], _T]) -> _T:
        """``call()``, tried again with backoff while it fails for AWS's reasons (see the module
        docstring), for up to :data:`AWS_RETRY_SECONDS`; a forced stop ends the tries. Every call
        retried here is a conditional write or a read: trying again changes nothing twice."""
        backoff = Backoff(*AWS_RETRY_BACKOFF)
        deadline = time.monotonic() + AWS_RETRY_SECONDS
        while True:
            try:
                return call()
            except Exception as exc:
                if not transient_error(exc) or time.monotonic() >= deadline or self._stop.force.is_set():
                    raise
                delay = backoff.next()
                logger.warning(f"{what} failed for AWS's reasons; trying again in {delay:.2f} s",
                               extra={"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            self._stop.force.wait(delay)

    @contextlib.contextmanager
    def task_context(self, task: TaskModel) -> Iterator[None]:
        """The task's ids on every log line of this thread meanwhile."""
        logger.thread_safe_append_keys(task_id=task.task_id, session_id=task.session_id, handler=task.handler,
                                       attempt=int(task.attempt or 0))
        try:
            yield
        finally:
            logger.thread_safe_clear_keys()


def _phase(held: Held, name: str) -> contextlib.AbstractContextManager[None]:
    """The attempt's ``name`` phase in its trace (nothing before the claim)."""
    trace = held.trace
    return trace.phase(name) if trace is not None else contextlib.nullcontext()


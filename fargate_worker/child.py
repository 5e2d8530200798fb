"""A reusable child process that runs user code, so that user code cannot take the agent down.

User code may raise, hang, call ``os._exit``, segfault or be OOM-killed. The agent must survive all
of that: it holds the lease, the heartbeat and the queue message, and it is the one that reports
the failure. So every task runs in a child process, reached over a pipe:

- the parent sends a pickled :class:`TaskInput`; the child runs the target and sends back a pickled
  :class:`TaskOutcome` (a failure to pickle the outcome becomes a ``RemoteError`` in the child, so
  a bad return value is a failed task, never a dead pipe; so does an outcome larger than the
  worker's ``max_output_bytes``, checked before it is pickled, so that it never crosses the pipe);
- what the task prints on stdout and stderr goes to a third pipe, which the agent reads while the
  task runs into a bounded ring (:mod:`fargate_worker.capture`); each run's :class:`ChildResult`
  carries its tail, also when the task timed out, died or was killed;
- one child serves many tasks (starting an interpreter and importing user modules costs 0.1-1 s);
  after it dies, times out or is killed it is discarded, and the next task spawns a fresh one.

Why ``spawn``: the agent is multi-threaded (poller, slots, heartbeat, boto3's pools); ``fork`` from
a threaded parent copies locks other threads hold and can deadlock the child.

This module is imported inside the child too, so it imports nothing heavy (no boto3, no
Powertools): it logs through the stdlib logger ``skyloom-worker.child``, which propagates to the
agent's Powertools handler in the parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from skyloom.core.limits import TASK_LOG_BYTES
from skyloom.runtime import preemption
from skyloom.runtime.outcome import RemoteError, TaskInput, TaskLog, TaskOutcome, portable_args
from skyloom_server.fargate_worker.capture import OutputPipe, flush_child_output, redirect_child_output, wait_reading

log = logging.getLogger("skyloom-worker.child")

#: What a child runs for each task: never raises by contract, but a target that does is handled.
TaskTarget = Callable[[TaskInput], TaskOutcome]

#: ``RemoteError.type`` values this module produces (user code never chooses them).
TIMEOUT_ERROR = "TaskTimeout"
DIED_ERROR = "WorkerChildDied"
KILLED_ERROR = "TaskKilled"
UNPICKLABLE_ERROR = "OutcomeNotPicklable"
UNDECODABLE_ERROR = "OutcomeNotDecodable"
UNDECODABLE_INPUT_ERROR = "InputNotDecodable"
INVALID_OUTCOME_ERROR = "InvalidOutcome"
SETUP_ERROR = "WorkerSetupError"
OUTPUT_TOO_LARGE_ERROR = "OutputTooLarge"

#: How long a new child may take to import its target and say it is ready.
START_TIMEOUT_SECONDS = 120.0
#: How long a child gets to exit by itself once its pipe is closed, before it is killed.
_CLOSE_GRACE_SECONDS = 2.0
_PR_SET_PDEATHSIG = 1
#: The child's first message. Outcomes are pickles (they start with 0x80), so it cannot clash.
_READY = b"ready"
#: How much of what a child printed while failing to start is quoted in the error.
_START_OUTPUT_CHARS = 2000
#: A task's memory peak may be reported this much above the truth rather than clear the last one.
PEAK_SLACK_BYTES = 1 << 20


class ChildStartError(RuntimeError):
    """A child died or hung while starting: the agent's environment is broken, not the task."""


class Ending(StrEnum):
    """How a run ended; the agent's report depends on it, not on ``RemoteError.type`` strings."""

    RETURNED = "returned"  # the target returned; its outcome may still carry the task's error
    TIMEOUT = "timeout"  # max_duration elapsed: the child was killed
    DIED = "died"  # the child exited or was killed by someone else (OOM killer, segfault, os._exit)
    KILLED = "killed"  # kill() was called: the agent lost the lease or is shutting down


@dataclass(frozen=True)
class ChildResult:
    outcome: TaskOutcome
    ending: Ending
    #: Wall time from sending the input to receiving the outcome: the task's compute time, not
    #: counting the start of a fresh child.
    seconds: float
    #: The child's peak resident memory during this run in bytes (Linux ``VmHWM``, reset before
    #: the run); None if unknown (not Linux, or the child did not return).
    memory_peak: int | None = None
    #: What the task printed during this run (its tail); None if it never reached a child.
    log: TaskLog | None = None


class ChildProcess:
    """Parent-side handle of one child; one per slot, used by one thread, ``kill()`` from any.

    As with any ``spawn`` child, a script that creates one must guard its entry point with
    ``if __name__ == "__main__":`` (the child imports the parent's main module);
    ``python -m skyloom_server.fargate_worker`` and pytest need nothing.

    Example:
        >>> child = ChildProcess(target=my_module.run)   # default: skyloom.runtime.executor.run_task
        >>> outcome = child.run(task_input, timeout=30.0)
        >>> child.close()
    """

    def __init__(self, target: TaskTarget | None = None, *, name: str = "skyloom-child",
                 max_output_bytes: int | None = None, max_log_bytes: int = TASK_LOG_BYTES.value) -> None:
        self._target = target
        self._name = name
        #: Largest outcome (:func:`outcome_bytes`) a task may return; None: no limit.
        self._max_output_bytes = max_output_bytes
        #: How much of what a task prints is kept: the last bytes of each run.
        self._max_log_bytes = max_log_bytes
        self._ctx = multiprocessing.get_context("spawn")
        #: Guards _proc/_conn/_kill_requested against kill() from another thread.
        self._lock = threading.Lock()
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._output: OutputPipe | None = None
        self._kill_requested = False
        #: The child's peak resident memory is above what it holds now: a task's peak must be reset
        #: before the next one (see :func:`_reset_peak_rss`); until measured, it may be.
        self._peak_above: int | None = None
        #: How many processes this handle started (observability; tests check respawns with it).
        self.spawned = 0

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def start(self) -> None:
        """Start the child now, rather than on the first run, and wait until it is ready.

        Raises:
            ChildStartError: the child died or hung while starting, or was killed meanwhile.
        """
        with self._lock:
            self._kill_requested = False
        if self._ready_child() is None:
            raise ChildStartError("the child process was killed while starting")

    def run(self, inp: TaskInput, timeout: float | None = None) -> TaskOutcome:
        """Run one task in the child; never raises for anything the task or the child does."""
        return self.execute(inp, timeout).outcome

    def execute(self, inp: TaskInput, timeout: float | None = None, *,
                sent: Callable[[], None] | None = None) -> ChildResult:
        """Like :meth:`run`, and says how the run ended and how long it took.

        Args:
            inp: the task's inputs, already downloaded.
            timeout: seconds the task may run (its ``max_duration``); None waits forever.
            sent: called once the input is in the child's pipe (or cannot get there): work that the
                caller held back, so as not to compete with the child's start for a CPU, goes on
                then rather than after the run.

        Raises:
            ChildStartError: no child could be started (never because of the task itself).
        """
        data = pickle.dumps(inp, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._kill_requested = False
        told = sent or _nothing
        try:
            child = self._ready_child()  # the start of a fresh child is neither compute nor timeout
        except BaseException:
            told()
            raise
        if child is None:
            told()
            return self._killed(0.0)
        proc, conn, out = child
        out.drain()
        out.take()  # printed between runs (a leftover thread of the last task): no attempt's own
        # The child serves many tasks: its peak must be this run's, not the largest so far. Clearing
        # it costs Linux a walk of the child's page tables (0.4-0.8 ms a task): done only when an
        # earlier task left the peak above what the child holds (its memory is never below that).
        settled = self._peak_above is not None and self._peak_above <= PEAK_SLACK_BYTES
        peak_known = settled or _reset_peak_rss(proc.pid)
        start = time.monotonic()
        try:
            conn.send_bytes(data)
        except OSError:  # the child died between tasks or while reading a large input
            told()
            return self._ended(proc, out, start)
        told()
        ready = wait_reading(out, [conn, proc.sentinel], None if timeout is None else start + timeout)
        if conn in ready:
            try:
                reply = conn.recv_bytes()
            except (EOFError, OSError):  # the pipe closed: the child is gone
                return self._ended(proc, out, start)
            seconds = time.monotonic() - start
            peak, resident = _memory(proc.pid) if peak_known else (None, None)
            self._peak_above = None if peak is None or resident is None else peak - resident
            out.drain()  # the child flushed before it answered: the run's every byte is in the pipe
            return ChildResult(_decode(reply), Ending.RETURNED, seconds, peak, out.take())
        if proc.sentinel in ready:
            return self._ended(proc, out, start)
        self._discard(kill=True)  # reads what the task printed until it was killed
        err = RemoteError(
            type=TIMEOUT_ERROR,
            message=f"the task ran longer than its max_duration of {timeout:g} s and was killed",
            traceback="",
        )
        return ChildResult(TaskOutcome(error=err), Ending.TIMEOUT, time.monotonic() - start, log=out.take())

    def kill(self) -> None:
        """Kill the running task now (lease lost, shutdown). Safe from any thread; the thread in
        :meth:`execute` returns a ``KILLED`` result and the next run starts a fresh child."""
        with self._lock:
            self._kill_requested = True
            if self._proc is not None:
                _kill(self._proc)

    def preempt(self) -> None:
        """Tell the running task its worker is being reclaimed: the child runs the task's
        ``skyloom.on_preempt`` hooks (a last checkpoint) and the task goes on. Safe from any thread;
        a child between tasks ignores it."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.pid is None or preemption.PREEMPT_SIGNAL is None:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, preemption.PREEMPT_SIGNAL)

    def close(self) -> None:
        """Stop the child: it exits by itself when its pipe closes; killed if it does not."""
        self._discard(kill=False)

    # ---------------------------------------------------------------------------- internals
    def _ready_child(self) -> tuple[BaseProcess, Connection, OutputPipe] | None:
        """The live child, starting one if there is none or the last one died idle.

        Returns None if kill() stopped it while starting. Spawning holds the lock (so kill() sees
        the new process) but waiting for the ready message does not. What the child prints while
        it imports is read meanwhile (a full pipe would block its start), and said if it fails.
        """
        with self._lock:
            if (self._proc is not None and self._conn is not None and self._output is not None
                    and self._proc.exitcode is None):
                return self._proc, self._conn, self._output
            if self._proc is not None:
                self._reap_locked()
            proc, conn, out = self._spawn_locked()
        ready = wait_reading(out, [conn, proc.sentinel], time.monotonic() + START_TIMEOUT_SECONDS)
        reply = b""
        if conn in ready:
            with contextlib.suppress(EOFError, OSError):
                reply = conn.recv_bytes()
        if reply == _READY:
            return proc, conn, out
        with self._lock:
            killed = self._kill_requested
        hung = not ready
        code = self._discard(kill=True)
        if killed:
            return None
        why = f"no answer within {START_TIMEOUT_SECONDS:g} s" if hung else death_message(code)
        printed = out.take().text()[-_START_OUTPUT_CHARS:].strip()
        said = f"; it printed:\n{printed}" if printed else ""
        raise ChildStartError(f"could not start a child process: {why}{said}")

    def _spawn_locked(self) -> tuple[BaseProcess, Connection, OutputPipe]:
        self._peak_above = None  # a new process: its start's peak is not the first task's
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        out = OutputPipe(self._ctx, self._max_log_bytes)
        proc = self._ctx.Process(
            target=_child_main, args=(child_conn, self._target, os.getpid(), self._max_output_bytes, out.writer),
            name=self._name,
            # Not daemonic: a daemonic process may not start processes, and user code may use
            # multiprocessing. close() makes sure it exits with the agent.
            daemon=False,
        )
        proc.start()
        child_conn.close()
        out.close_writer()
        self._proc, self._conn, self._output = proc, parent_conn, out
        self.spawned += 1
        log.debug("started child process %s (pid %s)", self._name, proc.pid)
        return proc, parent_conn, out

    def _killed(self, seconds: float, log: TaskLog | None = None) -> ChildResult:
        err = RemoteError(type=KILLED_ERROR, message="the task was stopped by the agent", traceback="")
        return ChildResult(TaskOutcome(error=err), Ending.KILLED, seconds, log=log)

    def _ended(self, proc: BaseProcess, out: OutputPipe, start: float) -> ChildResult:
        """The child exited during a run: killed by us, or died on its own. What it printed until
        then is kept: the pipe is read to its end before it is closed."""
        with self._lock:
            killed = self._kill_requested
        pid = proc.pid
        code = self._discard(kill=True)
        seconds = time.monotonic() - start
        if killed:
            return self._killed(seconds, out.take())
        err = RemoteError(type=DIED_ERROR, message=death_message(code), traceback="")
        log.warning("child process %s died: %s", pid, err.message)
        return ChildResult(TaskOutcome(error=err), Ending.DIED, seconds, log=out.take())

    def _discard(self, *, kill: bool) -> int | None:
        """Forget the current child and wait for it to be gone; returns its exit code. Its output
        pipe is read (what is left of it) and closed; its ring stays with whoever holds it."""
        with self._lock:
            proc, conn, out = self._proc, self._conn, self._output
            self._proc = self._conn = self._output = None
        if conn is not None:
            conn.close()  # an idle child reads EOF and exits
        if proc is None:
            if out is not None:
                out.close()
            return None
        if kill:
            _kill(proc)
        proc.join(_CLOSE_GRACE_SECONDS)
        if proc.exitcode is None:
            _kill(proc)
            proc.join()
        code = proc.exitcode
        proc.close()
        if out is not None:
            out.close()
        return code

    def _reap_locked(self) -> None:
        proc, conn, out = self._proc, self._conn, self._output
        self._proc = self._conn = self._output = None
        if conn is not None:
            conn.close()
        if out is not None:
            out.close()
        if proc is not None:
            proc.join(_CLOSE_GRACE_SECONDS)
            if proc.exitcode is not None:
                proc.close()


def death_message(code: int | None) -> str:
    """Why a child is gone, in words an operator can act on."""
    if code is None:
        return "the task's child process vanished"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the kernel's OOM killer sends SIGKILL when memory runs out)" if -code == signal.SIGKILL else ""
        return f"the task's child process was killed by {name}{hint}"
    return f"the task's child process exited with code {code} before returning"


def _reset_peak_rss(pid: int | None) -> bool:
    """Reset a process's peak resident memory (``VmHWM``; Linux >= 4.0); False if that failed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return pid is not None


def _memory(pid: int | None) -> tuple[int | None, int | None]:
    """A process's peak resident memory since its last reset and its resident memory now, in bytes
    (``VmHWM``, ``VmRSS``); None for what is unreadable."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    found[line[:5]] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None, None
    return found.get("VmHWM"), found.get("VmRSS")


def _kill(proc: BaseProcess) -> None:
    """SIGKILL the child (a no-op once it has exited and been reaped)."""
    proc.kill()


def _decode(reply: bytes) -> TaskOutcome:
    try:
        outcome = pickle.loads(reply)
    except Exception as exc:  # a class the agent cannot import, a broken __setstate__, ...
        return TaskOutcome(error=RemoteError(
            type=UNDECODABLE_ERROR, message=f"the agent cannot read the task's outcome: {exc!r}",
            traceback=traceback.format_exc(), retryable=False,
        ))
    if not isinstance(outcome, TaskOutcome):
        return _invalid(outcome)
    return outcome


def _invalid(value: object) -> TaskOutcome:
    return TaskOutcome(error=RemoteError(
        type=INVALID_OUTCOME_ERROR,
        message=f"the task runner returned {type(value).__name__}, not a TaskOutcome",
        traceback="", retryable=False,
    ))


def outcome_bytes(outcome: TaskOutcome) -> int:
    """Bytes the attempt hands to storage: outputs, data of staged results, payloads of subtasks."""
    return (
        sum(len(v) for v in outcome.outputs.values())
        + sum(len(r.data) for r in outcome.staged_results if r.data is not None)
        + sum(len(t.payload) for t in outcome.staged_tasks)
    )


def check_output_size(outcome: TaskOutcome, limit: int | None) -> TaskOutcome:
    """``outcome``, or a non-retryable ``OutputTooLarge`` failure if it holds more than ``limit``
    bytes: the same code would produce the same bytes on a retry."""
    if limit is None or outcome.error is not None:
        return outcome
    size = outcome_bytes(outcome)
    if size <= limit:
        return outcome
    return TaskOutcome(error=RemoteError(
        type=OUTPUT_TOO_LARGE_ERROR,
        message=(f"the task produced {size} bytes of outputs (results, staged results and subtask payloads), "
                 f"more than this worker's limit of {limit} bytes (SKYLOOM_WORKER_MAX_OUTPUT_BYTES); "
                 "write large data in several results, or raise the limit"),
        traceback="", retryable=False,
    ))


def _nothing() -> None:
    pass


# ------------------------------------------------------------------------------- child side
def _child_main(conn: Connection, target: TaskTarget | None, parent_pid: int,
                max_output_bytes: int | None, output: Connection) -> None:
    """The child's loop: get ready, then receive an input, run it, send the outcome; exit when
    the pipe closes. Everything it prints goes to ``output``, flushed before each answer."""
    _detach_from_agent(parent_pid)
    redirect_child_output(output)
    stdout, stderr = sys.stdout, sys.stderr
    run, setup_error = _resolve(target)
    flush_child_output(stdout, stderr)
    conn.send_bytes(_READY)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the agent closed the pipe (or died): nothing left to do
        outcome = TaskOutcome(error=setup_error) if run is None else _call(run, data)
        reply = _dump(check_output_size(outcome, max_output_bytes))
        flush_child_output(stdout, stderr)
        conn.send_bytes(reply)


def _resolve(target: TaskTarget | None) -> tuple[TaskTarget | None, RemoteError | None]:
    """The function to run, imported before saying ready so that tasks do not pay for it.

    An import failure is reported for every task rather than killing the child: a broken
    deployment then shows up in each task's error, instead of as an agent that cannot start.
    """
    if target is not None:
        return target, None
    try:
        return _default_target(), None
    except BaseException as exc:  # an ImportError, or anything a module body raises
        return None, _remote_error(exc, type_name=SETUP_ERROR)


def _detach_from_agent(parent_pid: int) -> None:
    """Make the child obey the agent only.

    - SIGINT/SIGTERM ignored: Ctrl-C on a terminal and a SIGTERM sent to the agent's whole process
      group (``docker stop`` with an init, the local stack's supervisor) must not interrupt a task
      the agent is draining; the agent decides when a task stops (SIGKILL or closing the pipe).
    - Stays in the agent's process group, so that a supervisor's SIGKILL of the group (a Spot
      reclaim, ``skyloom local`` stopping) takes it down on every OS.
    - Dies with the agent (Linux ``PR_SET_PDEATHSIG``) even when only the agent is SIGKILLed: no
      orphan computing for nobody. The signal is tied to the thread that started the child, so the
      agent starts a slot's children from that slot's long-lived thread.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    preemption.install()  # the agent's drain notice: the task's hooks run, the child lives on
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the agent died before prctl took effect
        os._exit(0)


def _default_target() -> TaskTarget:
    """The SDK's executor, imported in the child only: it may import user code."""
    from skyloom.runtime.executor import run_task

    target: TaskTarget = run_task
    return target


def _call(run: TaskTarget, data: bytes) -> TaskOutcome:
    try:
        inp = pickle.loads(data)
    except BaseException as exc:  # the agent sent what it could not have: say so, keep serving
        return TaskOutcome(error=_remote_error(exc, type_name=UNDECODABLE_INPUT_ERROR, retryable=False,
                                               prefix="the child cannot read the task's input: "))
    try:
        outcome = run(inp)
    except BaseException as exc:  # user code may raise anything, even SystemExit
        return TaskOutcome(error=_remote_error(exc))
    if not isinstance(outcome, TaskOutcome):
        return _invalid(outcome)
    return outcome


def _dump(outcome: TaskOutcome) -> bytes:
    """Pickle the outcome; if user values refuse to be pickled, pickle that failure instead."""
    try:
        return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:  # __reduce__ of user objects can raise anything
        err = _remote_error(exc, type_name=UNPICKLABLE_ERROR, retryable=False,
                            prefix="the task's outcome cannot be sent to the agent: ")
        return pickle.dumps(TaskOutcome(error=err), protocol=pickle.HIGHEST_PROTOCOL)


def _remote_error(
    exc: BaseException, *, type_name: str | None = None, retryable: bool = True, prefix: str = ""
) -> RemoteError:
    kind = type(exc)
    qualified = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return RemoteError(
        type=type_name or qualified,
        message=f"{prefix}{qualified}: {exc}" if type_name else str(exc),
        traceback="".join(traceback.format_exception(exc)),
        retryable=retryable,
        args=None if type_name else portable_args(exc),
    )

"""The worker's child process, with real processes: whatever user code does, the parent survives,
reports it as a RemoteError, and the next task runs in a healthy child.

The target is one module-level function that picks a behaviour by handler name, so one child can
be taken through a sequence of good and bad tasks. Spawned children import this module by name.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skyloom.runtime.outcome import TaskInput, TaskOutcome
from skyloom_server.fargate_worker.child import (
    DIED_ERROR,
    INVALID_OUTCOME_ERROR,
    KILLED_ERROR,
    OUTPUT_TOO_LARGE_ERROR,
    TIMEOUT_ERROR,
    UNPICKLABLE_ERROR,
    ChildProcess,
    ChildStartError,
    Ending,
)

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


class Unpicklable:
    def __reduce__(self) -> str:
        raise TypeError("this object refuses to be pickled")


def behave(inp: TaskInput) -> TaskOutcome:
    """The child's target: do what the handler name says."""
    h = inp.handler
    if h == "echo":
        return TaskOutcome(outputs={out: inp.payload for out in inp.expected_outputs})
    if h == "pid":
        return TaskOutcome(outputs={"pid": str(os.getpid()).encode(), "pgid": str(os.getpgid(0)).encode()})
    if h == "raise":
        raise ValueError("user code failed")
    if h == "exit":
        os._exit(3)
    if h == "sys_exit":
        sys.exit(4)
    if h == "segfault":
        ctypes.string_at(0)
    if h == "sleep":
        time.sleep(float(inp.payload.decode()))
        return TaskOutcome(outputs={"slept": inp.payload})
    if h == "unpicklable":
        return TaskOutcome(outputs={"x": Unpicklable()})  # type: ignore[dict-item]
    if h == "alloc":  # hold some megabytes for a moment, then free them
        block = bytearray(int(inp.payload.decode()) << 20)
        time.sleep(0.05)
        del block
        return TaskOutcome(outputs={"out": b""})
    if h == "not_an_outcome":
        return 42  # type: ignore[return-value]
    raise LookupError(f"unknown test handler {h}")


def task(handler: str, payload: bytes = b"", outputs: tuple[str, ...] = ("out",)) -> TaskInput:
    return TaskInput(task_id=f"t-{handler}", session_id="s", handler=handler, payload=payload,
                     dependencies={}, expected_outputs=list(outputs), options={})


@pytest.fixture
def child() -> Iterator[ChildProcess]:
    c = ChildProcess(target=behave)
    yield c
    c.close()


def child_pid(c: ChildProcess) -> int:
    return int(c.run(task("pid")).outputs["pid"])


def test_returns_the_outcome_and_reuses_the_child(child: ChildProcess) -> None:
    # WHEN two tasks run one after the other
    first = child.execute(task("echo", b"hello"))
    pid = child_pid(child)
    second = child.run(task("echo", b"again"))
    # THEN both outcomes come back, from one and the same process
    assert first.ending is Ending.RETURNED and first.outcome.outputs == {"out": b"hello"}
    assert first.seconds >= 0
    assert second.outputs == {"out": b"again"}
    assert child_pid(child) == pid
    assert child.spawned == 1


@pytest.mark.parametrize("handler", ["sleep", "exit"])
def test_sent_is_told_once_as_the_input_reaches_the_child(child: ChildProcess, handler: str) -> None:
    # GIVEN a run that lasts 0.3 s (or whose child dies), and a caller waiting to do other work
    told: list[float] = []
    # WHEN it runs
    result = child.execute(task(handler, b"0.3" if handler == "sleep" else b""),
                           sent=lambda: told.append(time.monotonic()))
    ended = time.monotonic()
    # THEN the caller was told once; for the sleep, before the child's 0.3 s of work (not after it)
    assert len(told) == 1
    if handler == "sleep":
        assert result.ending is Ending.RETURNED and ended - told[0] >= 0.3
    else:
        assert result.ending is Ending.DIED


def test_an_exception_is_a_remote_error_and_the_child_lives_on(child: ChildProcess) -> None:
    pid = child_pid(child)
    result = child.execute(task("raise"))
    assert result.ending is Ending.RETURNED
    err = result.outcome.error
    assert err is not None and err.type == "ValueError" and err.message == "user code failed"
    assert "user code failed" in err.traceback and err.retryable
    assert child_pid(child) == pid  # no respawn for an ordinary exception


def test_sys_exit_in_user_code_is_an_error_not_an_exit(child: ChildProcess) -> None:
    err = child.run(task("sys_exit")).error
    assert err is not None and err.type == "SystemExit"
    assert child.run(task("echo", b"ok")).outputs == {"out": b"ok"}
    assert child.spawned == 1


@pytest.mark.parametrize(("handler", "words"), [("exit", "exited with code 3"), ("segfault", "SIGSEGV")])
def test_a_dying_child_is_reported_and_replaced(child: ChildProcess, handler: str, words: str) -> None:
    before = child_pid(child)
    # WHEN user code takes its process down
    result = child.execute(task(handler))
    # THEN the parent reports it and the next task runs in a fresh child
    assert result.ending is Ending.DIED
    err = result.outcome.error
    assert err is not None and err.type == DIED_ERROR and words in err.message
    assert child.run(task("echo", b"next")).outputs == {"out": b"next"}
    assert child_pid(child) != before
    assert child.spawned == 2


def test_a_child_killed_from_outside_names_the_signal(child: ChildProcess) -> None:
    pid = child_pid(child)
    threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()  # what the OOM killer does
    result = child.execute(task("sleep", b"30"))
    assert result.ending is Ending.DIED
    assert result.outcome.error is not None and "SIGKILL" in result.outcome.error.message
    assert "OOM" in result.outcome.error.message


def test_a_task_past_its_timeout_is_killed(child: ChildProcess) -> None:
    start = time.monotonic()
    result = child.execute(task("sleep", b"30"), timeout=0.5)
    assert time.monotonic() - start < 10
    assert result.ending is Ending.TIMEOUT
    err = result.outcome.error
    assert err is not None and err.type == TIMEOUT_ERROR and "0.5 s" in err.message
    # AND the next task gets a healthy child, and a task within its limit is not affected
    assert child.run(task("sleep", b"0.1"), timeout=20).outputs == {"slept": b"0.1"}
    assert child.spawned == 2


def test_kill_from_another_thread_stops_the_running_task(child: ChildProcess) -> None:
    child.start()
    threading.Timer(0.5, child.kill).start()  # the heartbeat thread on a lost lease
    start = time.monotonic()
    result = child.execute(task("sleep", b"30"))
    assert time.monotonic() - start < 10
    assert result.ending is Ending.KILLED
    assert result.outcome.error is not None and result.outcome.error.type == KILLED_ERROR
    assert child.run(task("echo", b"after")).outputs == {"out": b"after"}


def test_a_kill_between_tasks_does_not_affect_the_next_one(child: ChildProcess) -> None:
    child_pid(child)
    child.kill()  # idle child killed: the next run must not inherit the kill
    time.sleep(0.2)
    result = child.execute(task("echo", b"fine"))
    assert result.ending is Ending.RETURNED and result.outcome.outputs == {"out": b"fine"}


def test_an_unpicklable_outcome_is_a_non_retryable_error(child: ChildProcess) -> None:
    pid = child_pid(child)
    result = child.execute(task("unpicklable"))
    assert result.ending is Ending.RETURNED
    err = result.outcome.error
    assert err is not None and err.type == UNPICKLABLE_ERROR and not err.retryable
    assert "refuses to be pickled" in err.message
    assert child_pid(child) == pid  # the pipe is still in sync: same child serves the next task


def test_an_outcome_over_the_output_limit_fails_the_task_before_it_crosses_the_pipe() -> None:
    c = ChildProcess(target=behave, max_output_bytes=100)
    try:
        pid = child_pid(c)
        # WHEN a task returns more than the limit
        result = c.execute(task("echo", b"x" * 101))
        # THEN it fails, not retryably, with a message naming its size and the limit
        assert result.ending is Ending.RETURNED
        err = result.outcome.error
        assert err is not None and err.type == OUTPUT_TOO_LARGE_ERROR and not err.retryable
        assert "101 bytes" in err.message and "limit of 100 bytes" in err.message
        assert "SKYLOOM_WORKER_MAX_OUTPUT_BYTES" in err.message
        # AND the same child runs the next task, which fits
        assert c.run(task("echo", b"x" * 100)).outputs == {"out": b"x" * 100}
        assert child_pid(c) == pid
    finally:
        c.close()


def test_each_run_reports_its_own_memory_peak(child: ChildProcess) -> None:
    big = child.execute(task("alloc", b"200"))
    small = child.execute(task("alloc", b"1"))
    assert big.memory_peak is not None and big.memory_peak >= 200 << 20
    # the same child, but its peak was reset: the second run does not inherit the first one's
    assert small.memory_peak is not None and small.memory_peak < 150 << 20
    assert child.spawned == 1


def test_the_peak_is_cleared_only_after_a_run_that_left_it_above_what_the_child_holds(
        child: ChildProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    import skyloom_server.fargate_worker.child as child_module

    cleared: list[int | None] = []
    real = child_module._reset_peak_rss
    monkeypatch.setattr(child_module, "_reset_peak_rss", lambda pid: cleared.append(pid) or real(pid))
    # GIVEN runs that take no memory: the first after the start clears its peak, the others need not
    for _ in range(3):
        assert child.execute(task("echo", b"x")).memory_peak is not None
    assert len(cleared) == 1
    # WHEN a run leaves the peak far above what the child holds after it
    assert (child.execute(task("alloc", b"200")).memory_peak or 0) >= 200 << 20
    small = child.execute(task("alloc", b"1"))
    # THEN the next run clears it first, and reports its own
    assert len(cleared) == 2
    assert small.memory_peak is not None and small.memory_peak < 150 << 20


def test_a_target_returning_something_else_is_an_error(child: ChildProcess) -> None:
    err = child.run(task("not_an_outcome")).error
    assert err is not None and err.type == INVALID_OUTCOME_ERROR and "int" in err.message


def test_the_child_shares_the_agents_process_group_but_ignores_its_stop_signals(child: ChildProcess) -> None:
    out = child.run(task("pid")).outputs
    # a supervisor's SIGKILL of the agent's group reaches the child...
    assert int(out["pgid"]) == os.getpgid(0)
    # ...but SIGTERM/SIGINT do not stop the task the agent is draining
    pid = int(out["pid"])
    threading.Timer(0.3, os.kill, (pid, signal.SIGTERM)).start()
    threading.Timer(0.4, os.kill, (pid, signal.SIGINT)).start()
    result = child.execute(task("sleep", b"1"))
    assert result.ending is Ending.RETURNED and result.outcome.outputs == {"slept": b"1"}


def test_the_child_dies_with_a_sigkilled_agent(tmp_path: Path) -> None:
    # GIVEN an agent-like process whose child is busy with a long task
    script = textwrap.dedent(
        """
        import os, sys, threading
        from skyloom_server.fargate_worker.child import ChildProcess
        from tests.functional.test_worker_child import behave, task
        c = ChildProcess(target=behave)
        print(c.run(task("pid")).outputs["pid"].decode(), flush=True)
        threading.Thread(target=c.run, args=(task("sleep", b"60"),), daemon=True).start()
        sys.stdin.read()
        """
    )
    agent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert agent.stdout is not None
    pid = int(agent.stdout.readline())
    time.sleep(0.5)
    # WHEN the agent is SIGKILLed (no cleanup can run)
    agent.kill()
    agent.wait()
    # THEN its child does not go on computing for nobody
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its reaper counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_close_stops_an_idle_child() -> None:
    c = ChildProcess(target=behave)
    pid = child_pid(c)
    c.close()
    assert not _alive(pid)
    assert c.pid is None


def test_start_waits_until_the_child_is_ready(child: ChildProcess) -> None:
    # WHEN the child is started ahead of work
    child.start()
    pid = child.pid
    # THEN the first task runs in it and its time does not include the interpreter's start
    result = child.execute(task("echo", b"x"))
    assert child.pid == pid and child.spawned == 1
    assert result.seconds < 1.0  # a fresh start takes seconds on a busy machine


def test_a_child_that_cannot_start_raises_instead_of_failing_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a child that dies while starting (a broken install: not the task's fault)
    monkeypatch.setenv("TEST_AGENT_PID", str(os.getpid()))
    c = ChildProcess(target=DiesWhileStarting())  # type: ignore[arg-type]
    try:
        # THEN the caller is told so, rather than handed a failed task
        with pytest.raises(ChildStartError, match="exited with code 5"):
            c.run(task("echo"))
    finally:
        c.close()


def _exit_in_child() -> Callable[[TaskInput], TaskOutcome]:
    if os.environ.get("TEST_AGENT_PID") not in (None, str(os.getpid())):  # in the child
        os._exit(5)
    return behave


class DiesWhileStarting:
    """Unpickled in the child's bootstrap, where it exits before the child says ready."""

    def __reduce__(self) -> tuple[Callable[[], Callable[[TaskInput], TaskOutcome]], tuple[()]]:
        return (_exit_in_child, ())

"""What a task prints, captured by the worker's child with real processes: every way of printing
lands in the attempt's log, the log is bounded, a killed or dying task keeps what it printed, and
prints never disturb the child's protocol with the agent.

The target picks a behaviour by handler name; spawned children import this module by name.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyloom.runtime.outcome import TaskInput, TaskLog, TaskOutcome, render_log
from skyloom_server.fargate_worker.child import ChildProcess, Ending

pytestmark = pytest.mark.timeout(120)

#: The ring of the children under test: small, so that bounding shows with little printing.
LIMIT = 1000


def chatter(inp: TaskInput) -> TaskOutcome:
    """The child's target: print the way the handler name says."""
    h = inp.handler
    if h == "everywhere":
        print("on stdout")
        print("on stderr", file=sys.stderr)
        t = threading.Thread(target=print, args=("from a thread of the task",))
        t.start()
        t.join()
        subprocess.run([sys.executable, "-c", "print('from a subprocess')"], check=True)
        os.write(1, b"straight to fd 1\n")
        return TaskOutcome(outputs={"out": b"ok"})
    if h == "say":
        print(inp.payload.decode())
        return TaskOutcome(outputs={"out": b""})
    if h == "flood":  # megabytes of prints, then a last line: only the tail is kept
        line = "x" * 99
        for _ in range(int(inp.payload.decode()) * 10_000):
            print(line)
        print("the last line")
        return TaskOutcome(outputs={"out": b""})
    if h == "say_then_sleep":  # with a payload: a file to create once printed (the test then kills)
        print("before the timeout")
        if inp.payload:
            Path(inp.payload.decode()).touch()
        time.sleep(60)
    if h == "say_then_die":
        print("before dying")
        os._exit(3)
    if h == "say_then_raise":
        print("before raising")
        raise ValueError("it went wrong")
    if h == "protocol_lookalike":  # what the agent's pipe carries, printed: it must stay a print
        sys.stdout.buffer.write(b"ready\x80\x05\x95 not an outcome\n")
        return TaskOutcome(outputs={"out": b"fine"})
    if h == "swap_stdout":  # the task replaces sys.stdout and never gives it back
        sys.stdout = io.StringIO()
        print("swallowed")
        return TaskOutcome(outputs={"out": b""})
    raise LookupError(f"unknown test handler {h}")


def task(handler: str, payload: bytes = b"") -> TaskInput:
    return TaskInput(task_id=f"t-{handler}", session_id="s", handler=handler, payload=payload,
                     dependencies={}, expected_outputs=["out"], options={})


@pytest.fixture
def child() -> Iterator[ChildProcess]:
    c = ChildProcess(target=chatter, max_log_bytes=LIMIT)
    yield c
    c.close()


def text(log: TaskLog | None) -> str:
    assert log is not None
    return log.text()


def test_every_way_of_printing_is_captured_with_the_attempt(child: ChildProcess) -> None:
    # WHEN a task prints on stdout and stderr, from a thread, a subprocess and straight to fd 1
    result = child.execute(task("everywhere"))
    # THEN its outcome is intact and its log holds all of it, in order
    assert result.ending is Ending.RETURNED and result.outcome.outputs == {"out": b"ok"}
    assert result.log is not None and result.log.cut == 0
    assert text(result.log).splitlines() == [
        "on stdout", "on stderr", "from a thread of the task", "from a subprocess", "straight to fd 1",
    ]


def test_each_run_has_its_own_log(child: ChildProcess) -> None:
    first = child.execute(task("say", b"one"))
    second = child.execute(task("say", b"two"))
    assert text(first.log) == "one\n"
    assert text(second.log) == "two\n"
    assert child.spawned == 1


def test_a_task_that_prints_a_lot_keeps_only_the_tail_and_says_so(child: ChildProcess) -> None:
    # WHEN a task prints 5 MB (the ring keeps 1000 bytes)
    result = child.execute(task("flood", b"5"))
    # THEN the log is the tail, starting at a line, and the cut is counted
    log = result.log
    assert result.ending is Ending.RETURNED and log is not None
    assert len(log.tail) <= LIMIT
    assert log.size == 5 * 10_000 * 100 + len("the last line\n")
    assert log.text().endswith("the last line\n") and log.text().startswith("x")
    assert render_log(log.text(), log.cut).startswith(f"... {log.cut} bytes cut ...\n")


def test_a_timed_out_task_keeps_what_it_printed(child: ChildProcess) -> None:
    result = child.execute(task("say_then_sleep"), timeout=5.0)
    assert result.ending is Ending.TIMEOUT
    assert text(result.log) == "before the timeout\n"


def test_a_dying_task_keeps_what_it_printed(child: ChildProcess) -> None:
    result = child.execute(task("say_then_die"))
    assert result.ending is Ending.DIED
    assert text(result.log) == "before dying\n"


def test_a_killed_task_keeps_what_it_printed(child: ChildProcess, tmp_path: Path) -> None:
    marker = tmp_path / "printed"

    def kill_once_printed() -> None:  # what the agent does when the lease is lost
        while not marker.exists():
            time.sleep(0.01)
        child.kill()

    killer = threading.Thread(target=kill_once_printed)
    killer.start()
    result = child.execute(task("say_then_sleep", str(marker).encode()))
    killer.join()
    assert result.ending is Ending.KILLED
    assert text(result.log) == "before the timeout\n"


def test_a_failing_task_keeps_what_it_printed(child: ChildProcess) -> None:
    result = child.execute(task("say_then_raise"))
    assert result.outcome.error is not None and result.outcome.error.message == "it went wrong"
    assert text(result.log) == "before raising\n"


def test_prints_never_reach_the_protocol(child: ChildProcess) -> None:
    result = child.execute(task("protocol_lookalike"))
    assert result.outcome.outputs == {"out": b"fine"}
    assert result.log is not None and b"not an outcome" in result.log.tail


def test_a_replaced_stdout_is_given_back_after_the_task(child: ChildProcess) -> None:
    child.execute(task("swap_stdout"))
    assert text(child.execute(task("say", b"heard again")).log) == "heard again\n"

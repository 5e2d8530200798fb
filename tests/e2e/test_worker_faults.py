"""Worker faults with real agent processes: SIGKILL mid-task, SIGTERM drain, a child that dies.

A dedicated local stack with a 3 s lease and a 1 s sweep, so that a dead agent is detected in
seconds (production uses 60 s: see ``Settings.lease_seconds``), and a 4 s grace period, so that the
drain test sees both outcomes of SIGTERM: a short task finishes, a long one is given back.

The tasks record where they ran in marker files (``<dir>/<tag>-<agent pid>-<n>``): the child's
parent is its agent, which tells the test which worker process to signal.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import skyloom
from skyloom.core.config import Settings
from skyloom.core.protocol import TaskInfo
from skyloom.local import LocalStack
from tests.e2e.stacks import connect, restart_and_wait, wait_until

pytestmark = pytest.mark.slow

TIMEOUT = 120.0
FAULT_SETTINGS = Settings(lease_seconds=3, redispatch_after_seconds=3, finalize_after_seconds=2, visibility_timeout=30)
GRACE_SECONDS = 4.0


# ------------------------------------------------------------------------------ task functions
@skyloom.task(max_retries=3)
def marked_sleep(x: int, marks: str, tag: str, seconds: float) -> int:
    import os as _os
    import time as _time

    Path(marks, f"{tag}-{_os.getppid()}-{_time.time_ns()}").touch()
    _time.sleep(seconds)
    return x + 1


@skyloom.task(max_retries=2)
def dies_once(x: int, marks: str) -> int:
    import os as _os

    first = Path(marks, "died")
    if not first.exists():
        first.touch()
        _os._exit(3)  # no exception, no cleanup: the child is simply gone
    return x * 10


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = LocalStack(
        workers=2,
        settings=FAULT_SETTINGS,
        sweep_interval=1.0,
        run_dir=tmp_path_factory.mktemp("faults-stack"),
        # One slot and no prefetch: each agent holds exactly one task, so the test knows which to signal.
        worker_env={"SKYLOOM_WORKER_GRACE_SECONDS": str(GRACE_SECONDS), "SKYLOOM_WORKER_SLOTS": "1",
                    "SKYLOOM_WORKER_PREFETCH": "0"},
    )
    with s:
        yield s


@pytest.fixture
def client(stack: LocalStack) -> Iterator[skyloom.Client]:
    c = connect(stack)
    try:
        yield c
    finally:
        c.close()
        restart_and_wait(stack)  # whatever a test killed, the next one starts with every worker up


def _wait_for_mark(marks: Path, tag: str, timeout: float = TIMEOUT) -> int:
    """The PID of the agent that started the task tagged ``tag``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(marks.glob(f"{tag}-*"))
        if found:
            return int(found[0].name.split("-")[1])
        time.sleep(0.05)
    raise AssertionError(f"task {tag} never started")


def _index_of(stack: LocalStack, pid: int) -> int:
    return stack.workers.pids.index(pid)


def _task_of(session: skyloom.Session, future: skyloom.Future[int]) -> TaskInfo:
    (res,) = session.get_results([future.id])
    assert res.owner_task_id is not None
    (task,) = session.get_tasks([res.owner_task_id])
    return task


def _pid_of(worker_id: str | None) -> int:
    assert worker_id is not None
    return int(worker_id.split("-")[-2])  # <hostname>-<pid>-<hex>


# -------------------------------------------------------------------------------------- tests
def test_sigkill_mid_task_the_task_completes_once_on_another_agent(
    stack: LocalStack, client: skyloom.Client, tmp_path: Path
) -> None:
    # GIVEN a task that has run long enough on some agent to be claimed (Processing, with a lease)
    with client.session() as s:
        f = marked_sleep.submit(41, str(tmp_path), "k", 5.0)
    victim = _wait_for_mark(tmp_path, "k")
    wait_until(lambda: _task_of(s, f).status == "Processing")

    # WHEN that agent is SIGKILLed (with its child: the whole process group)
    stack.workers.kill(_index_of(stack, victim))

    # THEN the lease expires, the sweeper re-queues it, another agent completes it, once
    assert f.result(timeout=TIMEOUT) == 42
    task = _task_of(s, f)
    assert task.status == "Completed"
    assert [a.outcome for a in task.attempts].count("completed") == 1
    lost = [a for a in task.attempts if a.error_type == "WorkerLost"]
    assert lost and _pid_of(lost[0].worker) == victim
    assert _pid_of(task.attempts[-1].worker) != victim


def test_sigterm_drains_finishes_what_fits_gives_back_the_rest_and_exits_0(
    stack: LocalStack, client: skyloom.Client, tmp_path: Path
) -> None:
    # GIVEN one agent running a task that fits in the grace period, the other one that does not
    with client.session() as s:
        short = marked_sleep.submit(1, str(tmp_path), "short", 1.0)
        long = marked_sleep.submit(2, str(tmp_path), "long", GRACE_SECONDS + 6.0)
    short_pid, long_pid = _wait_for_mark(tmp_path, "short"), _wait_for_mark(tmp_path, "long")
    assert short_pid != long_pid  # one slot each: both agents are busy

    # WHEN both get the Spot interruption notice
    started = time.monotonic()
    for pid in (short_pid, long_pid):
        stack.workers.terminate(_index_of(stack, pid))
    codes = [stack.workers.wait(_index_of(stack, pid), 60.0) for pid in (short_pid, long_pid)]

    # THEN both exit 0, the long one no later than its grace period allows (with a margin for a
    # loaded machine: the point is that it did not wait for its task)
    assert codes == [0, 0]
    assert time.monotonic() - started < GRACE_SECONDS + 6.0 + 30.0
    stack.workers.start()
    # the short task finished on its agent; the long one was released (no attempt counted) and
    # completes on a fresh agent
    assert short.result(timeout=TIMEOUT) == 2
    assert long.result(timeout=TIMEOUT) == 3
    short_task, long_task = _task_of(s, short), _task_of(s, long)
    assert [_pid_of(a.worker) for a in short_task.attempts] == [short_pid]
    assert [a.outcome for a in long_task.attempts] == ["completed"]
    assert _pid_of(long_task.attempts[0].worker) != long_pid
    assert "drain" in stack.workers.log_path(_index_of_log(stack, long_pid)).read_text()


def _index_of_log(stack: LocalStack, pid: int) -> int:
    """The worker slot whose log mentions ``pid`` (a restarted worker appends to the same log)."""
    for i in range(len(stack.workers)):
        if f"-{pid}-" in stack.workers.log_path(i).read_text():
            return i
    raise AssertionError(f"no worker log mentions pid {pid}")


def test_child_os_exit_is_a_failed_attempt_the_agent_lives_and_the_retry_succeeds(
    stack: LocalStack, client: skyloom.Client, tmp_path: Path
) -> None:
    pids_before = stack.workers.pids
    with client.session() as s:
        f = dies_once.submit(7, str(tmp_path))

    assert f.result(timeout=TIMEOUT) == 70
    task = _task_of(s, f)
    assert [a.outcome for a in task.attempts] == ["error", "completed"]
    died = task.attempts[0]
    assert died.error_type == "WorkerChildDied"
    assert "exited with code 3" in (died.message or "")
    assert stack.workers.pids == pids_before  # no agent died or was replaced


def test_sigkill_before_a_short_task_is_claimed_runs_it_again_without_charging_an_attempt(
    stack: LocalStack, client: skyloom.Client, tmp_path: Path
) -> None:
    # GIVEN a task that has just started on some agent, on its message's receipt (not claimed yet)
    with client.session() as s:
        f = marked_sleep.submit(41, str(tmp_path), "u", 2.0)
    victim = _wait_for_mark(tmp_path, "u")

    # WHEN that agent is SIGKILLed at once
    stack.workers.kill(_index_of(stack, victim))

    # THEN the task runs again elsewhere (its message comes back, or the sweeper re-sends it) and
    # completes once; if the kill came after a claim, the lost attempt names the victim
    assert f.result(timeout=TIMEOUT) == 42
    task = _task_of(s, f)
    assert task.status == "Completed"
    assert [a.outcome for a in task.attempts].count("completed") == 1
    assert _pid_of(task.attempts[-1].worker) != victim
    assert all(_pid_of(a.worker) == victim for a in task.attempts if a.error_type == "WorkerLost")

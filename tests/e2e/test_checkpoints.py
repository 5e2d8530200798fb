"""Task checkpoints with real agent processes: a long task checkpoints every step; its worker is
SIGKILLed, or drained on SIGTERM, mid-way; the next attempt resumes from the last step.

The proof is in side effects: each step appends its number to a file, so a step done twice shows
twice. Each run of the task writes a marker naming its agent (the child's parent) and the step it
started from. A dedicated stack with a 3 s lease, a 1 s sweep and a 4 s grace period, as in
``test_worker_faults``: one slot and no prefetch, so that each agent holds exactly one task.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import skyloom
from skyloom.cli import app
from skyloom.core.config import Settings
from skyloom.local import LocalStack
from tests.e2e.stacks import connect, restart_and_wait, wait_until

pytestmark = pytest.mark.slow

TIMEOUT = 120.0
SETTINGS = Settings(lease_seconds=3, redispatch_after_seconds=3, finalize_after_seconds=2, visibility_timeout=30)
GRACE_SECONDS = 4.0
STEPS = 8
#: Seconds between two steps: the kill lands in this pause, right after a checkpoint.
PAUSE = 2.0


# ------------------------------------------------------------------------------ task functions
@skyloom.task(max_retries=3)
def stepper(steps: int, marks: str, pause: float) -> int:
    """Sums 0..steps-1, one step at a time, checkpointing after each; on a reclaim notice it takes a
    last checkpoint and does no more steps (it waits to be given back)."""
    import os as _os
    import time as _time
    from pathlib import Path as _Path

    state: dict[str, int] = skyloom.restore(default={"next": 0, "total": 0})
    _Path(marks, f"run-{_os.getppid()}-{_time.time_ns()}").write_text(str(state["next"]))
    preempted: list[bool] = []

    def last_checkpoint() -> None:
        skyloom.checkpoint(state)
        _Path(marks, "preempted").touch()
        preempted.append(True)

    skyloom.on_preempt(last_checkpoint)
    for i in range(state["next"], steps):
        while preempted:  # reclaimed: no new step, the grace period ends this attempt
            _time.sleep(0.1)
        with _Path(marks, "steps").open("a") as f:
            f.write(f"{i}\n")
        state = {"next": i + 1, "total": state["total"] + i}
        skyloom.checkpoint(state)
        _Path(marks, f"saved-{i}").touch()
        _time.sleep(pause)
    return state["total"]


@skyloom.task(max_retries=2)
def fails_after_checkpoint(marks: str) -> str:
    """The first attempt checkpoints a large state (it goes to S3) and fails; the retry gets it back."""
    from pathlib import Path as _Path

    found = skyloom.restore()
    if found is None:
        skyloom.checkpoint({"blob": b"x" * 200_000, "by": "first"})
        raise RuntimeError("failing after a checkpoint")
    _Path(marks, "restored").write_text(found["by"])
    return f"{found['by']}:{len(found['blob'])}"


@skyloom.task
def never_checkpoints() -> Any:
    return skyloom.restore(default="nothing")


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = LocalStack(
        workers=2,
        settings=SETTINGS,
        sweep_interval=1.0,
        run_dir=tmp_path_factory.mktemp("checkpoints-stack"),
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
        restart_and_wait(stack)


def _runs(marks: Path) -> list[tuple[int, int]]:
    """(agent pid, step it started from) of each run of the task, in the order they started."""
    found = sorted(marks.glob("run-*"), key=lambda p: int(p.name.split("-")[2]))
    return [(int(p.name.split("-")[1]), int(p.read_text())) for p in found]


def _dropped(client: skyloom.Client, session: skyloom.Session, task_id: str) -> Any:
    """The task's checkpoints once the value is dropped: the agent drops it after the commit that
    made the result visible, so a client may read the result first."""
    wait_until(lambda: client.task_checkpoints(session.session_id, task_id).dropped)
    return client.task_checkpoints(session.session_id, task_id)


def _steps(marks: Path) -> list[int]:
    return [int(line) for line in (marks / "steps").read_text().split()]


def _task_id(session: skyloom.Session, future: skyloom.Future[Any]) -> str:
    (res,) = session.get_results([future.id])
    assert res.owner_task_id is not None
    return res.owner_task_id


# -------------------------------------------------------------------------------------- tests
def test_sigkilled_worker_the_next_attempt_resumes_from_the_last_step(
    stack: LocalStack, client: skyloom.Client, tmp_path: Path
) -> None:
    # GIVEN a long task that has checkpointed three steps on some agent, and holds its lease
    with client.session() as s:
        f = stepper.submit(STEPS, str(tmp_path), PAUSE)
    wait_until(lambda: (tmp_path / "saved-2").exists())
    (victim, start), = _runs(tmp_path)
    assert start == 0
    tid = _task_id(s, f)
    wait_until(lambda: s.get_tasks([tid])[0].status == "Processing")

    # WHEN that agent is SIGKILLed with its child, in the pause after a checkpoint
    stack.workers.kill(stack.workers.pids.index(victim))
    done_before = len(_steps(tmp_path))

    # THEN another agent runs the task again, from the step after the last checkpoint
    assert f.result(timeout=TIMEOUT) == sum(range(STEPS))
    runs = _runs(tmp_path)
    assert len(runs) == 2 and runs[1][0] != victim
    assert runs[1][1] == done_before >= 3
    # no step was done twice, none was skipped
    assert _steps(tmp_path) == list(range(STEPS))
    # and the task's view counts the checkpoints and says who resumed from which
    saved = _dropped(client, s, tid)
    assert saved.taken == STEPS
    assert saved.latest_seq == STEPS
    (resume,) = saved.resumes
    assert (resume.attempt, resume.from_attempt, resume.seq) == (2, 1, done_before)
    (task,) = s.get_tasks([tid])
    assert [a.error_type for a in task.attempts] == ["WorkerLost", None]
    shown = CliRunner().invoke(app, ["tasks", "show", tid, "--session", s.session_id],
                               env={"SKYLOOM_ENDPOINT": stack.endpoint, "COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert f"checkpoints: {STEPS} taken" in shown.stdout
    assert f"attempt 2 resumed from checkpoint #{done_before} of attempt 1" in shown.stdout


def test_sigterm_drain_takes_a_last_checkpoint_and_the_next_run_resumes_from_it(
    stack: LocalStack, client: skyloom.Client, tmp_path: Path
) -> None:
    # GIVEN a long task that has checkpointed three steps on some agent
    with client.session() as s:
        f = stepper.submit(STEPS, str(tmp_path), PAUSE)
    wait_until(lambda: (tmp_path / "saved-2").exists())
    (victim, _), = _runs(tmp_path)
    tid = _task_id(s, f)

    # WHEN its agent gets the Spot interruption notice (SIGTERM, then the grace period)
    index = stack.workers.pids.index(victim)
    stack.workers.terminate(index)

    # THEN the task's hook takes a last checkpoint, the drained agent gives the task back and exits 0
    wait_until(lambda: (tmp_path / "preempted").exists())
    assert stack.workers.wait(index, 60.0) == 0
    # and the other agent resumes it from there: no step done twice, none skipped
    assert f.result(timeout=TIMEOUT) == sum(range(STEPS))
    runs = _runs(tmp_path)
    assert len(runs) == 2 and runs[1][0] != victim
    assert runs[1][1] >= 3
    assert _steps(tmp_path) == list(range(STEPS))
    saved = _dropped(client, s, tid)
    assert saved.taken == STEPS + 1  # one a step, and the hook's
    (resume,) = saved.resumes
    # a drained attempt is given back uncounted: the next run carries the same number
    assert (resume.attempt, resume.from_attempt) == (1, 1)
    (task,) = s.get_tasks([tid])
    assert [a.outcome for a in task.attempts] == ["completed"]


def test_a_retried_attempt_restores_a_large_checkpoint_and_a_task_without_one_gets_the_default(
    client: skyloom.Client, tmp_path: Path
) -> None:
    # GIVEN a task whose first attempt checkpoints 200 kB (more than rides inline) and then fails
    with client.session() as s:
        f = fails_after_checkpoint.submit(str(tmp_path))
        plain = never_checkpoints.submit()
    # THEN the retry gets the state back and the task completes; a task that never checkpointed
    # gets the default
    assert f.result(timeout=TIMEOUT) == "first:200000"
    assert plain.result(timeout=TIMEOUT) == "nothing"
    saved = _dropped(client, s, _task_id(s, f))
    assert saved.taken == 1 and saved.latest_size is not None and saved.latest_size > 200_000
    assert not saved.in_s3
    assert [(r.attempt, r.from_attempt, r.seq) for r in saved.resumes] == [(2, 1, 1)]
    assert client.task_checkpoints(s.session_id, _task_id(s, plain)).taken == 0

"""Chaos: a graph with dependencies runs while agents are SIGKILLed at random and restarted, and one
is SIGTERMed (drained); every task still ends Completed, every result is written by exactly one
attempt, and the answer is right.

599 tasks (300 leaves and a pairwise reduction tree), every inner task waiting on two others: about
40 s on the local stack with 2 cores (moto serves every AWS call in one process); more with
SKYLOOM_CHAOS_LEAVES (500 leaves: ~70 s). Kills land every 3 s, so a dozen agents die mid-run with
tasks in flight.

A dedicated stack with a 4 s lease and a 1 s sweep: a killed agent's task is re-queued within
about 5 s. The shared session stack is left alone, as kills would slow the other tests.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator

import pytest

import skyloom
from skyloom.core.config import Settings
from skyloom.local import LocalStack
from tests.e2e.stacks import connect

pytestmark = pytest.mark.slow

#: 300 leaves + 299 pairwise sums = 599 tasks; SKYLOOM_CHAOS_LEAVES=50 for a quick local run.
LEAVES = int(os.environ.get("SKYLOOM_CHAOS_LEAVES", "300"))
KILL_EVERY_SECONDS = 3.0
TIMEOUT = 900.0  # ~40 s on a quiet 2-core machine; slack for a busy one
CHAOS_SETTINGS = Settings(lease_seconds=4, redispatch_after_seconds=3, finalize_after_seconds=2, visibility_timeout=20)


@skyloom.task(max_retries=10)
def leaf(i: int) -> int:
    import time as _time

    _time.sleep(0.05)  # long enough for kills to land mid-task now and then
    return i


@skyloom.task(max_retries=10)
def plus(a: int, b: int) -> int:
    return a + b


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = LocalStack(
        workers=3,
        settings=CHAOS_SETTINGS,
        sweep_interval=1.0,
        run_dir=tmp_path_factory.mktemp("chaos-stack"),
        worker_env={"SKYLOOM_WORKER_GRACE_SECONDS": "5", "SKYLOOM_WORKER_SLOTS": "2", "SKYLOOM_WORKER_PREFETCH": "1"},
    )
    with s:
        yield s


class Killer:
    """Every few seconds SIGKILLs a random agent and starts a new one; the second time, SIGTERMs
    instead and checks that the agent drains and exits 0."""

    def __init__(self, stack: LocalStack, seed: int = 4) -> None:
        self.stack = stack
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.kills = 0
        self.term_codes: list[int | None] = []
        self.thread = threading.Thread(target=self._run, name="killer", daemon=True)

    def _run(self) -> None:
        rounds = 0
        while not self.stop.wait(KILL_EVERY_SECONDS):
            rounds += 1
            index = self.rng.randrange(len(self.stack.workers))
            if rounds == 2:
                self.stack.workers.terminate(index)
                self.term_codes.append(self.stack.workers.wait(index, 30.0))
                self.stack.workers.start()
            else:
                self.stack.workers.restart(index)  # SIGKILL, then a fresh agent
                self.kills += 1

    def __enter__(self) -> Killer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60.0)
        self.stack.workers.start()


@pytest.mark.timeout(1200)
def test_graph_completes_exactly_once_while_agents_are_killed(stack: LocalStack) -> None:
    from skyloom.core.models import TaskModel

    client = connect(stack)
    try:
        with Killer(stack) as killer, client.session(name="chaos") as session:
            level = [leaf.submit(i) for i in range(LEAVES)]
            while len(level) > 1:  # a pairwise reduction tree: every inner task waits on two others
                pairs = [plus.submit(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
                level = pairs + ([level[-1]] if len(level) % 2 else [])
            session.flush()
            answer = level[0].result(timeout=TIMEOUT)
        session_id = session.session_id
    finally:
        client.close()

    assert answer == sum(range(LEAVES))
    assert killer.kills >= 3
    assert killer.term_codes == [0]  # the drained agent exited 0 within its grace period
    items = list(TaskModel.by_session.query(session_id))
    assert len(items) == 2 * LEAVES - 1
    assert {t.status for t in items} == {"Completed"}
    # Each task's outputs were committed by exactly one attempt (the commit is conditional on the
    # lease, so a presumed-dead agent cannot commit a second time).
    assert all([a["outcome"] for a in (t.attempts or [])].count("completed") == 1 for t in items)
